"""The paper's preprocessing on the real 3D-IRCADb 1.1 CT: liver volume kept, crop keeps the liver
and the abdomen, and the mask comes back onto the original grid (DSC >= 0.98)."""

from __future__ import annotations

import numpy as np
import pytest

from livseg_pipeline.experiment_planning.plans import load_preset
from livseg_pipeline.io.image_io import same_grid
from livseg_pipeline.preprocessing.preprocessor import original_image, preprocess_case


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def ircad_1(ircad_dir):
    from livseg_pipeline.io.archives import read_dicom_zip

    case = ircad_dir / "3Dircadb1.1"
    ct = read_dicom_zip(case / "PATIENT_DICOM.zip")
    liver = read_dicom_zip(case / "MASKS_DICOM.zip", "liver")
    arrays, props = preprocess_case(ct, liver, load_preset("paper"))
    return ct, liver, arrays, props


def test_ircad_liver_volume_kept(ircad_1):
    ct, liver, arrays, props = ircad_1
    assert props["liver_volume_ml_original"] == pytest.approx(1489.4, abs=0.5)    # data/README.md
    v1 = arrays["label"].sum() * 1.4 ** 3 / 1000.0
    assert abs(v1 - 1489.4) / 1489.4 < 0.02
    assert abs(props["liver_volume_change_pct"]) < 2.0


def test_ircad_preprocessed_grid_and_intensities(ircad_1):
    ct, liver, arrays, props = ircad_1
    img = arrays["image"]
    assert props["preprocessed"]["spacing"] == [1.4, 1.4, 1.4]
    # full z extent: 129 slices x 1.6 mm = 206.4 mm -> 147 voxels of 1.4 mm
    assert img.shape[0] == 147 and props["crop_box_zyx"][0] == [0, 129]
    assert img.dtype == np.float32 and img.min() == np.float32(-0.2) and img.max() == np.float32(0.2)
    # contrast-enhanced liver (mean ~110 HU) -> ~0.11 after mapping
    assert 0.08 < float(np.median(img[arrays["label"] > 0])) < 0.14
    # the liver lies on the patient's right = low x in LPS
    xs = np.nonzero(arrays["label"].any(axis=(0, 1)))[0]
    assert xs.mean() < img.shape[2] / 2


def test_ircad_crop_keeps_abdomen_and_liver(ircad_1):
    ct, liver, arrays, props = ircad_1
    box = props["crop_box_zyx"]
    body = props["body_box_zyx_reoriented"]
    for axis in (1, 2):
        assert box[axis][0] <= body[axis][0] and box[axis][1] >= body[axis][1]
    zz, yy, xx = np.nonzero(liver.array)
    for axis, idx in ((1, yy), (2, xx)):
        assert box[axis][0] <= idx.min() and idx.max() < box[axis][1]
    # the table (below the patient) is cut away: fewer rows than the 512 of the scan
    assert box[1][1] - box[1][0] < 480


def test_ircad_mask_restored_to_original_grid(ircad_1):
    ct, liver, arrays, props = ircad_1
    back = original_image(arrays["label"].astype(np.float32), props)
    assert same_grid(back, liver, tol=1e-6)
    assert dice(back.array >= 0.5, liver.array) >= 0.98
