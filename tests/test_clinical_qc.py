"""QC flags on analytic abdomens (one planted problem each) and on the phantom cohort."""

from __future__ import annotations

import numpy as np
import pytest

from livseg_pipeline.clinical.qc import QCConfig, run_qc
from livseg_pipeline.io.image_io import Geometry, Image, reorient

SPACING = 5.0  # mm, isotropic: small arrays, realistic sizes in mm


def abdomen(*, liver_hu: float = 110.0, muscle_hu: float = 50.0, noise: float = 8.0, side: str = "right",
            radii_mm=(70.0, 80.0, 60.0), centre_z_mm: float = 100.0, lesion_hu: float | None = None,
            seed: int = 0) -> tuple[Image, Image]:
    """Axial ellipse body (fat rim, muscle) in air with an ellipsoid liver; LPS, so the patient's
    right is low x. Shape (z, y, x) = (40, 64, 64) at 5 mm."""
    rng = np.random.default_rng(seed)
    z, y, x = (np.indices((40, 64, 64)) + 0.5) * SPACING
    cx, cy = 160.0, 160.0
    body = ((x - cx) / 150) ** 2 + ((y - cy) / 110) ** 2 < 1
    inner = ((x - cx) / 135) ** 2 + ((y - cy) / 95) ** 2 < 1
    lx = cx - 60 if side == "right" else cx + 60
    rx, ry, rz = radii_mm
    liver = ((x - lx) / rx) ** 2 + ((y - cy + 10) / ry) ** 2 + ((z - centre_z_mm) / rz) ** 2 < 1
    ct = np.full(body.shape, -1000.0)
    ct[body] = -100
    ct[inner] = muscle_hu
    ct[liver] = liver_hu
    if lesion_hu is not None:
        ct[((x - lx) ** 2 + (y - cy + 10) ** 2 + (z - centre_z_mm) ** 2) < 15 ** 2] = lesion_hu
    ct += rng.normal(0, noise, ct.shape)
    img = Image(ct.round().astype(np.int16), Geometry((SPACING,) * 3))
    return img, img.with_array(liver.astype(np.uint8))


def flagged(ct: Image, mask: Image, **kw) -> list[str]:
    return run_qc(ct, mask, **kw)["flagged"]


def test_normal_case_has_no_flags_and_reasons_are_given():
    ct, mask = abdomen()
    q = run_qc(ct, mask)
    assert q["flagged"] == [], [f["reason"] for f in q["flags"] if f["flagged"]]
    assert all(f["reason"] for f in q["flags"])
    evaluated = {f["name"]: f["evaluated"] for f in q["flags"]}
    assert evaluated["ensemble_disagreement"] is False and evaluated["volume"] is True


def test_volume_and_border_flags():
    ct, mask = abdomen(radii_mm=(40.0, 42.0, 42.0))  # 4/3 pi 40 42 42 = 296 mL
    q = run_qc(ct, mask)
    assert q["flagged"] == ["volume"]
    assert "outside [500, 4500] mL" in q["flags"][1]["reason"]
    ct, mask = abdomen(centre_z_mm=185.0)  # the dome leaves the scan at the top
    q = run_qc(ct, mask)
    assert "fov_cut" in q["flagged"]
    assert "superior" in next(f for f in q["flags"] if f["name"] == "fov_cut")["reason"]


def test_ensemble_and_uncertainty_flags():
    ct, mask = abdomen()
    m = mask.array.astype(np.float32)
    same = [m, m, m]
    assert "ensemble_disagreement" not in flagged(ct, mask, member_probabilities=same)
    shifted = np.roll(m, 6, axis=2)  # 30 mm lateral shift
    q = run_qc(ct, mask, member_probabilities=[m, m, shifted])
    assert "ensemble_disagreement" in q["flagged"]
    assert "members 0 and 2" in next(f for f in q["flags"] if f["name"] == "ensemble_disagreement")["reason"]
    crisp = m * 0.98 + 0.01
    assert "uncertain_band" not in flagged(ct, mask, probabilities=crisp)
    vague = crisp.copy()
    vague[:, :, 20:32] = np.where(vague[:, :, 20:32] > 0.5, 0.6, vague[:, :, 20:32])
    assert "uncertain_band" in flagged(ct, mask, probabilities=vague)
    with pytest.raises(ValueError, match="probabilities have shape"):
        run_qc(ct, mask, probabilities=crisp[:-1])


def test_removed_components_flag():
    ct, mask = abdomen()
    assert "removed_components" not in flagged(ct, mask, removed_components_ml=[2.0, 12.0])
    assert "removed_components" in flagged(ct, mask, removed_components_ml=[2.0, 85.0])


def test_intensity_flags():
    assert "hu_implausible" in flagged(*abdomen(liver_hu=-30.0))
    assert flagged(*abdomen(lesion_hu=450.0)) == ["hu_outliers"]
    assert "high_noise" in flagged(*abdomen(noise=45.0))
    q = run_qc(*abdomen(liver_hu=52.0, muscle_hu=48.0, noise=15.0))
    assert "low_contrast" in q["flagged"]
    # A non-contrast scan with clear contrast to its surroundings is fine.
    assert "low_contrast" not in flagged(*abdomen(liver_hu=60.0, muscle_hu=20.0, noise=10.0))


def test_position_flag_and_orientation_invariance():
    assert "position" in flagged(*abdomen(side="left"))
    ct, mask = abdomen(side="left")
    ras_ct, ras_mask = reorient(ct, "RAS"), reorient(mask, "RAS")
    assert ras_ct.geometry.orientation_code == "RAS"
    assert flagged(ras_ct, ras_mask) == flagged(ct, mask)


def test_config_thresholds_are_used():
    ct, mask = abdomen()
    assert flagged(ct, mask, config=QCConfig(min_volume_ml=2000.0)) == ["volume"]


def test_phantom_cohort_flags():
    """The reference label of each phantom as the mask: planted hard cases are flagged with the right
    flag, most normal cases are not (counts are in documentation/clinical_workflow.md)."""
    phantom = pytest.importorskip("livseg_pipeline.phantom")
    expected = {"low_contrast": {"low_contrast", "high_noise"}, "dense_lesion": {"hu_outliers"},
                "abnormal_position": {"position", "shape"}}
    normal_flagged = []
    for seed in range(12):
        case = phantom.generate_phantom(seed, size_scale=0.5)
        normal_flagged.append(run_qc(case.ct, case.label)["flagged"])
    for hard, wanted in expected.items():
        for seed in (200, 201):
            case = phantom.generate_phantom(seed, hard=hard, size_scale=0.5)
            got = set(run_qc(case.ct, case.label)["flagged"])
            assert got & wanted, f"{hard} seed {seed}: flags {sorted(got)}"
    clean = sum(not f for f in normal_flagged)
    assert clean >= 10, normal_flagged
