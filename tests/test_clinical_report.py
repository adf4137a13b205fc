"""SIRT activity formulas against hand-computed values, input validation, and the liver report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from livseg_pipeline.clinical.activity import (
    ActivityInputError,
    SirtConstants,
    bsa_activity,
    bsa_dubois_m2,
    lung_dose_gy,
    lung_shunt_reduction,
    mird_activity_gbq,
)
from livseg_pipeline.clinical.report import ReportOptions, build_report, format_report_text, write_report
from livseg_pipeline.io.image_io import Geometry, Image

# Hand-computed: 120 Gy x 1.5 kg = 180 Gy kg.
#   180 / 49.67 = 3.623917858      180 / (49.67 x 0.8) = 4.529897322
#   180 / 50    = 3.6              180 / (50 x 0.8)    = 4.5


@pytest.mark.parametrize("lsf, constant, expected", [(0.0, 49.67, 3.623917858), (0.2, 49.67, 4.529897322),
                                                     (0.0, 50.0, 3.6), (0.2, 50.0, 4.5)])
def test_mird_activity_hand_computed(lsf, constant, expected):
    assert mird_activity_gbq(120.0, 1.5, lsf, constant) == pytest.approx(expected, abs=1e-8)


def test_lung_dose():
    # 4.5 GBq with 20 % shunt to 1 kg of lung: 49.67 x 4.5 x 0.2 = 44.703 Gy
    assert lung_dose_gy(4.5, 0.2) == pytest.approx(44.703, abs=1e-9)


def test_bsa_method_hand_computed():
    # DuBois for 1.75 m, 70 kg: 0.20247 x 1.75^0.725 x 70^0.425
    #   1.75^0.725 = exp(0.725 ln 1.75) = exp(0.405721) = 1.500385
    #   70^0.425   = exp(0.425 ln 70)   = exp(1.805611) = 6.083684
    #   BSA = 0.20247 x 1.500385 x 6.083684 = 1.848119 m^2
    assert bsa_dubois_m2(1.75, 70.0) == pytest.approx(1.848119, abs=2e-6)
    r = bsa_activity(1.75, 70.0, lsf=0.05, tumour_involvement=0.0)
    assert r["activity_gbq"] == pytest.approx(1.648119, abs=2e-6) and r["lung_shunt_reduction"] == 0.0
    r = bsa_activity(1.75, 70.0, lsf=0.12, tumour_involvement=0.3)
    assert r["activity_before_reduction_gbq"] == pytest.approx(1.948119, abs=2e-6)
    assert r["activity_gbq"] == pytest.approx(1.948119 * 0.8, abs=2e-6)
    r = bsa_activity(1.75, 70.0, lsf=0.18)
    assert r["activity_gbq"] == pytest.approx(1.648119 * 0.6, abs=2e-6)
    r = bsa_activity(1.75, 70.0, lsf=0.25)
    assert r["do_not_treat"] and r["activity_gbq"] is None


def test_lung_shunt_table_edges_and_custom_constants():
    assert [lung_shunt_reduction(x) for x in (0.0, 0.0999, 0.10, 0.1499, 0.15, 0.20)] == [0, 0, .2, .2, .4, .4]
    assert lung_shunt_reduction(0.2001) is None
    strict = SirtConstants(lsf_do_not_treat=0.15, mird_constant=50.0)
    assert lung_shunt_reduction(0.16, strict) is None
    assert mird_activity_gbq(120, 1.5, 0.2, strict.mird_constant) == pytest.approx(4.5)


@pytest.mark.parametrize("kwargs, match", [
    ({"dose_gy": 0.0}, "target dose must be > 0"),
    ({"dose_gy": -5.0}, "target dose must be > 0"),
    ({"lsf": 1.0}, r"lung shunt fraction must be in \[0, 1\)"),
    ({"lsf": -0.01}, r"lung shunt fraction must be in \[0, 1\)"),
    ({"lsf": 8.0}, "give a fraction"),
    ({"liver_mass_kg": 0.0}, "liver mass must be > 0"),
])
def test_mird_input_validation(kwargs, match):
    args = {"dose_gy": 120.0, "liver_mass_kg": 1.5, "lsf": 0.1} | kwargs
    with pytest.raises(ActivityInputError, match=match):
        mird_activity_gbq(**args)


def test_bsa_input_validation():
    with pytest.raises(ActivityInputError, match="give metres"):
        bsa_dubois_m2(175.0, 70.0)
    with pytest.raises(ActivityInputError, match="weight must be in kg"):
        bsa_dubois_m2(1.75, 7.0)
    with pytest.raises(ActivityInputError, match="tumour involvement"):
        bsa_activity(1.75, 70.0, 0.0, tumour_involvement=1.5)
    with pytest.raises(ActivityInputError, match="needs both height_m and weight_kg"):
        ReportOptions(height_m=1.75, lung_shunt_fraction=0.0)
    with pytest.raises(ActivityInputError, match="needs the lung shunt fraction"):
        ReportOptions(target_dose_gy=120.0)
    with pytest.raises(ActivityInputError, match="density"):
        ReportOptions(density_g_per_ml=1050)


@pytest.fixture()
def analytic_case() -> tuple[Image, Image]:
    """1000 voxels of 1 mL (10 mm isotropic) = 1000 mL: HU 100 in 900 voxels, 40 in 100 (a lesion)."""
    ct = Image(np.full((10, 20, 20), -100, np.int16), Geometry((10.0, 10.0, 10.0)))
    m = np.zeros(ct.array.shape, np.uint8)
    m[:, :10, :10] = 1
    ct.array[:, :10, :10] = 100
    ct.array[0, :10, :10] = 40
    return ct, ct.with_array(m)


def test_report_numbers_and_files(analytic_case, tmp_path):
    ct, mask = analytic_case
    opts = ReportOptions(density_g_per_ml=1.05, target_dose_gy=120.0, lung_shunt_fraction=0.2, height_m=1.75,
                         weight_kg=70.0)
    rep = build_report("case_1", ct, mask, opts)
    lv = rep["liver"]
    assert lv["volume_ml"] == pytest.approx(1000.0) and lv["mass_g"] == pytest.approx(1050.0)
    assert lv["mean_hu"] == pytest.approx(94.0) and lv["median_hu"] == pytest.approx(100.0)
    mird = rep["activity"]["mird"]
    assert mird["activity_gbq"] == pytest.approx(120 * 1.05 / (49.67 * 0.8), abs=1e-4)
    assert mird["lung_dose_gy"] == pytest.approx(49.67 * mird["activity_gbq"] * 0.2, abs=0.01)
    assert rep["activity"]["bsa"]["activity_gbq"] == pytest.approx(1.648119 * 0.6, abs=1e-4)
    js, txt = write_report(rep, tmp_path, "case_1")
    assert json.loads(js.read_text())["liver"]["volume_ml"] == pytest.approx(1000.0)
    text = txt.read_text()
    assert "A [GBq] = D [Gy] x M [kg] / (49.67 x (1 - LSF))" in text
    assert "D = 120.0 Gy, M = 1.05 kg, LSF = 0.2" in text
    assert "Liver volume: 1000.0 mL" in text and "BSA = 1.848 m^2" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_1_report.json", "case_1_report.txt"]


def test_report_without_activity_and_empty_mask(analytic_case):
    ct, mask = analytic_case
    rep = build_report("c", ct, mask)
    assert "activity" not in rep and "SIRT" not in format_report_text(rep)
    empty = ct.with_array(np.zeros_like(mask.array))
    assert build_report("c", ct, empty)["liver"]["mean_hu"] is None
    with pytest.raises(ActivityInputError, match="mask is empty"):
        build_report("c", ct, empty, ReportOptions(target_dose_gy=100.0, lung_shunt_fraction=0.0))
