"""Real CT stored RAS (TotalSegmentator example, 3 mm): reoriented to LPS with the liver on the
patient's right, and mapped back exactly onto the RAS grid. (Its label is a model's, used here
for geometry only, never as accuracy ground truth.)"""

from __future__ import annotations

import numpy as np

from livseg_pipeline.experiment_planning.plans import load_preset
from livseg_pipeline.io.image_io import read_image, same_grid
from livseg_pipeline.preprocessing.preprocessor import original_image, preprocess_case


def test_ras_ct_round_trip(totalseg_dir):
    ct = read_image(totalseg_dir / "example_ct_sm.nii.gz")
    seg = read_image(totalseg_dir / "example_seg.nii.gz")
    liver = seg.with_array((seg.array == 5).astype(np.uint8))
    assert ct.geometry.orientation_code == "RAS"
    arrays, props = preprocess_case(ct, liver, load_preset("paper"))
    assert props["orientation_changed"] and props["preprocessed"]["orientation"] == "LPS"
    assert abs(props["liver_volume_change_pct"]) < 2.0
    assert abs(props["liver_volume_ml_original"] - 1043.1) < 0.5              # data/README.md
    # LPS: x grows towards the patient's left, so the liver sits in the low-x half of the body
    xs = np.nonzero(arrays["label"].any(axis=(0, 1)))[0]
    body = props["body_box_zyx"][2]
    assert xs.mean() < (body[0] + body[1]) / 2
    back = original_image(arrays["label"].astype(np.float32), props)
    assert same_grid(back, liver, tol=1e-6)
    a, b = back.array >= 0.5, liver.array > 0
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.97
