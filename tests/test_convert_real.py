"""Real data: the two 3D-IRCADb-01 cases (zip layout) convert with correct volumes and orientation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from livseg_pipeline.io.image_io import Geometry, read_image, reorient_to_canonical, same_grid

# From ../shared/data/README.md (liver voxels x voxel volume).
REFERENCE_ML = {"ircadb_1_01": 1489.4, "ircadb_1_07": 1430.4}


def test_ircad_converts_with_reference_volumes(ircad_raw) -> None:
    report = ircad_raw.reports["ircadb"]
    assert report["n_failed"] == 0 and report["n_converted"] == 2
    ds = json.loads((ircad_raw.path / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "CT"} and ds["labels"] == {"background": 0, "liver": 1}
    assert ds["numTraining"] == 2 and ds["file_ending"] == ".nii.gz"
    for case, ml in REFERENCE_ML.items():
        rec = ds["cases"][case]
        assert rec["source"] == "ircadb" and rec["original_paths"][0].endswith("PATIENT_DICOM.zip")
        header = sitk.ImageFileReader()  # the image's header only: its voxels are checked by the fingerprint
        header.SetFileName(str(ircad_raw.path / "imagesTr" / f"{case}_0000.nii.gz"))
        header.ReadImageInformation()
        img = Geometry(header.GetSpacing(), header.GetOrigin(), header.GetDirection())
        lab = read_image(ircad_raw.path / "labelsTr" / f"{case}.nii.gz")
        assert header.GetPixelID() == sitk.sitkInt16 and lab.array.dtype == np.uint8
        assert same_grid(img, lab.geometry, tuple(reversed(header.GetSize())), lab.array.shape)
        assert set(np.unique(lab.array).tolist()) == {0, 1}
        volume = float(lab.array.sum()) * lab.voxel_volume_ml
        assert volume == pytest.approx(ml, rel=0.005)
        # The liver lies on the patient's right: low x in LPS.
        lps = reorient_to_canonical(lab)
        xs = np.nonzero(lps.array)[2]
        assert xs.mean() < 0.45 * lps.array.shape[2]
        # image_0 is the most caudal slice: z grows cranially, the liver top is nearer the top slice.
        assert img.direction[8] > 0


def test_ircad_fingerprint(ircad_raw) -> None:
    fp = json.loads((ircad_raw.path / "fingerprint.json").read_text())
    for case, ml in REFERENCE_ML.items():
        rec = fp["cases"][case]
        assert rec["liver_volume_ml"] == pytest.approx(ml, rel=0.005)
        assert rec["liver_side"] == "right" and rec["orientation"] == "LPS"
        assert rec["verdicts"] == {}, rec["verdicts"]
        assert 60 < rec["hu_liver"]["p50"] < 180  # portal-venous liver
        assert rec["hu"]["min"] >= -1100 and rec["shape"][1:] == [512, 512]
    assert fp["summary"]["n_cases"] == 2
    # Different patients: never grouped, one per fold.
    dup = json.loads((ircad_raw.path / "duplicates.json").read_text())
    assert dup["groups"] == []
    splits = json.loads((ircad_raw.path / "splits_final.json").read_text())
    assert sorted(c for f in splits for c in f["val"]) == sorted(REFERENCE_ML)


def test_ircad_rerun_converts_nothing(ircad_raw, ircad_dir, use_raw_root) -> None:
    from dataset_conversion import CONVERTERS, run_conversion

    use_raw_root(ircad_raw)
    stamp = {p.name: p.stat().st_mtime_ns for p in (ircad_raw.path / "imagesTr").iterdir()}
    report = run_conversion(CONVERTERS["ircadb"](), ircad_dir, 101, num_processes=1, verbose=False)
    assert report["n_converted"] == 0 and report["n_unchanged"] == 2 and report["n_failed"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in (ircad_raw.path / "imagesTr").iterdir()} == stamp
