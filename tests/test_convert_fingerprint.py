"""Fingerprint verdicts: each broken header or label is named; a clean case has none."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from livseg_pipeline.experiment_planning.fingerprint import extract_fingerprint, fingerprint_case
from livseg_pipeline.io.image_io import Geometry, Image, write_image
from livseg_pipeline.phantom.generator import generate_phantom


@pytest.fixture(scope="module")
def case():
    return generate_phantom(31, size_scale=0.35, spacing=(1.6, 1.6, 4.0))


def _verdicts(ct: Image, lab: Image | None) -> set[str]:
    return set(fingerprint_case(ct, lab)["verdicts"])


def test_clean_case_has_no_verdict(case) -> None:
    rec = fingerprint_case(case.ct, case.label)
    assert rec["verdicts"] == {}
    assert rec["liver_side"] == "right" and rec["orientation"] == "LPS"
    assert rec["liver_volume_ml"] == pytest.approx(case.meta["liver_volume_ml"], abs=0.01)
    assert rec["hu"]["p0_5"] < -500 and 0 < rec["hu_liver"]["p50"] < 200
    assert rec["shape"] == list(case.ct.array.shape) and rec["spacing"] == pytest.approx(list(case.ct.spacing))


@pytest.mark.parametrize("what, code", [
    ("zero_spacing", "spacing_nonpositive"),
    ("huge_spacing", "spacing_implausible"),
    ("default_header", "spacing_default"),
    ("skewed_direction", "direction_not_orthonormal"),
    ("label_grid", "grid_mismatch"),
    ("label_values", "label_values"),
    ("empty_label", "liver_empty"),
    ("unrescaled", "not_hu"),
    ("nan", "nan"),
    ("mirrored", "liver_on_left"),
])
def test_each_problem_is_named(case, what: str, code: str) -> None:
    ct, lab = case.ct, case.label
    g = ct.geometry
    if what == "zero_spacing":
        ct = Image(ct.array, Geometry((0.0, g.spacing[1], g.spacing[2]), g.origin))
        lab = ct.with_array(lab.array)
    elif what == "huge_spacing":
        ct = Image(ct.array, Geometry((g.spacing[0], g.spacing[1], 40.0), g.origin))
        lab = ct.with_array(lab.array)
    elif what == "default_header":
        ct = Image(ct.array, Geometry((1.0, 1.0, 1.0)))
        lab = ct.with_array(lab.array)
    elif what == "skewed_direction":
        ct = Image(ct.array, Geometry(g.spacing, g.origin, (1, 0.3, 0, 0, 1, 0, 0, 0, 1)))
        lab = ct.with_array(lab.array)
    elif what == "label_grid":
        lab = Image(lab.array, Geometry(g.spacing, (g.origin[0] + 5.0, g.origin[1], g.origin[2])))
    elif what == "label_values":
        lab = lab.with_array(lab.array * 3)
    elif what == "empty_label":
        lab = lab.with_array(np.zeros_like(lab.array))
    elif what == "unrescaled":
        ct = ct.with_array((ct.array.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16))
    elif what == "nan":
        a = ct.array.astype(np.float32)
        a[0, 0, :5] = np.nan
        ct = ct.with_array(a)
    elif what == "mirrored":  # array flipped left-right, header unchanged
        ct, lab = ct.with_array(ct.array[:, :, ::-1].copy()), lab.with_array(lab.array[:, :, ::-1].copy())
    verdicts = _verdicts(ct, lab)
    assert code in verdicts, verdicts
    others = verdicts - {code, "liver_hu_implausible", "liver_volume_implausible"}
    assert not others, others  # only the problem made here


def test_extract_fingerprint_on_a_plain_nnunet_folder(case, tmp_path: Path) -> None:
    """No dataset.json: cases are listed from imagesTr; unreadable files are a verdict, not a crash."""
    write_image(case.ct, tmp_path / "imagesTr" / "a_0000.nii.gz")
    write_image(case.label, tmp_path / "labelsTr" / "a.nii.gz")
    (tmp_path / "imagesTr" / "b_0000.nii.gz").write_bytes(b"not an image")
    fp = extract_fingerprint(tmp_path, num_processes=1, verbose=False)
    assert set(fp["cases"]) == {"a", "b"}
    assert fp["cases"]["a"]["verdicts"] == {}
    assert "unreadable" in fp["cases"]["b"]["verdicts"]
    assert fp["summary"]["verdict_counts"] == {"unreadable": 1}
    saved = json.loads((tmp_path / "fingerprint.json").read_text())
    assert saved["summary"]["n_cases"] == 2
    # a rerun reuses the record of the unchanged case
    again = extract_fingerprint(tmp_path, num_processes=1, verbose=False)
    assert again["cases"]["a"] == fp["cases"]["a"]
