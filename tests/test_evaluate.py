"""lvs_evaluate end to end on small files, plus the real IRCAD / TotalSegmentator masks."""

from __future__ import annotations

import json
import math
import os
import zipfile

import numpy as np
import pandas as pd
import pytest

from livseg_pipeline.cli.evaluate import main
from livseg_pipeline.evaluation.cases import find_cases
from livseg_pipeline.evaluation.metrics import compute_metrics
from livseg_pipeline.io.image_io import Geometry, Image, read_image, reorient, write_image

GEOM = Geometry((0.8, 0.8, 2.0), (-10.0, 5.0, 30.0))
SHAPE = (14, 24, 22)
CASES = ("case_a", "case_b", "case_c")


def _mask(shift: int, grow: int = 0) -> np.ndarray:
    m = np.zeros(SHAPE, np.uint8)
    m[3:10, 5 - grow:17 + grow, 4:16] = 1
    return np.roll(m, shift, axis=0)


@pytest.fixture(scope="session")
def sets(tmp_path_factory):
    """Four sets of masks as an inter-observer study would have them."""
    root = tmp_path_factory.mktemp("eval_sets")
    truth = {"ref": {c: _mask(0) for c in CASES},
             "pred": {c: _mask(i) for i, c in enumerate(CASES)},
             "obs2": {c: _mask(0, grow=i) * 255 for i, c in enumerate(CASES)},
             "cnn": {c: _mask(1, grow=1) for c in CASES[:2]}}  # one case fewer
    for name, masks in truth.items():
        (root / name).mkdir()
        for c, m in masks.items():
            suffix = ".mha" if name == "obs2" else ".nii.gz"
            write_image(Image(m, GEOM), root / name / f"{c}{suffix}")
    return root, truth


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _error(err: str) -> str:
    """The one error line (tqdm's progress bar shares stderr)."""
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("lvs_evaluate: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_folder_evaluation_end_to_end(sets, tmp_path, capsys):
    root, truth = sets
    rc, out, _ = _run(capsys, "-r", root / "ref", "-p", root / "pred", "-o", tmp_path / "ev", "-np", "1")
    assert rc == 0, out
    df = pd.read_csv(tmp_path / "ev" / "metrics.csv")
    for col in ("case", "dsc", "rv", "msd_mm", "hd_mm", "hd95_mm", "vol_ref_ml", "vol_pred_ml"):
        assert col in df.columns
    assert list(df["case"]) == list(CASES)
    for _, row in df.iterrows():
        want = compute_metrics(truth["ref"][row["case"]], truth["pred"][row["case"]], (2.0, 0.8, 0.8))
        for k in ("dsc", "rv", "msd_mm", "hd_mm", "hd95_mm", "vol_ref_ml"):
            assert row[k] == pytest.approx(want[k], rel=1e-6)
    assert df["hd_mm"].tolist() == pytest.approx([0.0, 2.0, 4.0])  # shifts of 0, 1, 2 slices of 2 mm
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    dsc = summary["metrics"]["dsc"]
    assert dsc["median"] == pytest.approx(df["dsc"].median()) and dsc["max"] == 1.0
    assert set(dsc) >= {"median", "q1", "q3", "iqr", "mean", "min", "max"}
    assert summary["rv_outside_0.9_1.1"]["count"] == 0
    png = (tmp_path / "ev" / "boxplots.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "ev").rglob("*") if ".tmp" in p.name]
    assert "DSC" in out and "RV outside [0.9, 1.1]: 0/3" in out


def test_rerun_reuses_unchanged_cases(sets, tmp_path, capsys):
    root, _ = sets
    pred = tmp_path / "pred"
    pred.mkdir()
    for c in CASES:
        (pred / f"{c}.nii.gz").write_bytes((root / "pred" / f"{c}.nii.gz").read_bytes())
    args = ("-r", root / "ref", "-p", pred, "-o", tmp_path / "ev", "-np", "1", "--no-plot")
    assert _run(capsys, *args)[0] == 0
    rc, out, _ = _run(capsys, *args)
    assert rc == 0 and "(3 reused" in out
    write_image(Image(_mask(0), GEOM), pred / "case_c.nii.gz")   # a corrected prediction
    os.utime(pred / "case_c.nii.gz", ns=(1, 1))                  # even with an old mtime, size differs
    rc, out, _ = _run(capsys, *args)
    assert "(2 reused" in out
    df = pd.read_csv(tmp_path / "ev" / "metrics.csv")
    assert df.set_index("case").loc["case_c", "dsc"] == 1.0


def test_missing_prediction_is_a_clear_error(sets, tmp_path, capsys):
    root, _ = sets
    rc, _, err = _run(capsys, "-r", root / "ref", "-p", root / "cnn", "-o", tmp_path / "ev", "-np", "1")
    assert rc == 2
    assert "no prediction for 1 of 3 reference cases: case_c" in _error(err)
    assert str(root / "cnn") in _error(err) and not (tmp_path / "ev" / "metrics.csv").exists()
    rc, out, err = _run(capsys, "-r", root / "ref", "-p", root / "cnn", "-o", tmp_path / "ev", "-np", "1",
                        "--allow-missing", "--no-plot")
    assert rc == 0 and "1 reference case(s) without prediction left out: case_c" in err
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["missing_predictions"] == ["case_c"] and summary["n_cases"] == 2


def test_grid_mismatch_names_both_files(sets, tmp_path, capsys):
    root, _ = sets
    bad = tmp_path / "case_a.nii.gz"
    write_image(Image(_mask(0), Geometry((0.8, 0.8, 2.5), GEOM.origin)), bad)
    rc, _, err = _run(capsys, "-r", root / "ref" / "case_a.nii.gz", "-p", bad, "-o", tmp_path / "ev")
    line = _error(err)
    assert rc == 2 and "grids differ" in line and str(bad) in line and str(root / "ref" / "case_a.nii.gz") in line


def test_same_voxels_stored_in_another_orientation_are_accepted(sets, tmp_path, capsys):
    root, truth = sets
    ras = reorient(Image(truth["pred"]["case_b"], GEOM), "RAS")
    assert ras.geometry.orientation_code == "RAS"
    write_image(ras, tmp_path / "case_b.nii.gz")
    rc, out, _ = _run(capsys, "-r", root / "ref" / "case_b.nii.gz", "-p", tmp_path / "case_b.nii.gz",
                      "-o", tmp_path / "ev", "--no-plot")
    assert rc == 0
    row = pd.read_csv(tmp_path / "ev" / "metrics.csv").iloc[0]
    assert row["hd_mm"] == pytest.approx(2.0) and row["rv"] == 1.0


def test_label_images_need_a_label(tmp_path, capsys):
    seg = _mask(0) * 5
    seg[0, 0, :3] = 2  # another organ
    write_image(Image(seg, GEOM), tmp_path / "seg.nii.gz")
    write_image(Image(_mask(0), GEOM), tmp_path / "ref.nii.gz")
    argv = ("-r", tmp_path / "ref.nii.gz", "-p", tmp_path / "seg.nii.gz", "-o", tmp_path / "ev", "--no-plot")
    rc, _, err = _run(capsys, *argv)
    assert rc == 2 and "seg.nii.gz: holds several labels (2, 5); choose one with --label" in _error(err)
    rc, _, _ = _run(capsys, *argv, "--pred-label", "5")
    assert rc == 0 and pd.read_csv(tmp_path / "ev" / "metrics.csv")["dsc"].iloc[0] == 1.0


def test_empty_prediction_is_reported_not_zero(sets, tmp_path, capsys):
    root, _ = sets
    write_image(Image(np.zeros(SHAPE, np.uint8), GEOM), tmp_path / "case_a.nii.gz")
    rc, out, _ = _run(capsys, "-r", root / "ref" / "case_a.nii.gz", "-p", tmp_path / "case_a.nii.gz",
                      "-o", tmp_path / "ev", "--no-plot")
    assert rc == 0 and "empty prediction mask(s): 1 (case_a)" in out
    row = pd.read_csv(tmp_path / "ev" / "metrics.csv").iloc[0]
    assert row["empty"] == "prediction" and math.isinf(row["hd_mm"]) and row["dsc"] == 0.0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["metrics"]["hd_mm"]["median"] == "inf" and summary["metrics"]["hd_mm"]["n_inf"] == 1


def test_nnunet_channel_tags_are_dropped(tmp_path):
    for n in ("liver_001_0000.nii.gz", "liver_002_0000.nii.gz"):
        write_image(Image(_mask(0), GEOM), tmp_path / n)
    assert sorted(find_cases(tmp_path)) == ["liver_001", "liver_002"]


def test_compare_mode_three_sets(sets, tmp_path, capsys):
    root, truth = sets
    out_dir = tmp_path / "cmp"
    rc, out, _ = _run(capsys, "--compare", f"cnn={root / 'cnn'}", f"manual_e1={root / 'ref'}",
                      f"manual_e2={root / 'obs2'}", "-o", out_dir, "-np", "2")
    assert rc == 0
    table = pd.read_csv(out_dir / "pairwise_summary.csv")
    assert table["pair"].tolist() == ["cnn vs manual_e1", "cnn vs manual_e2", "manual_e1 vs manual_e2"]
    assert table["n"].tolist() == [2, 2, 3]  # the cnn set lacks case_c
    long = pd.read_csv(out_dir / "pairwise_metrics.csv")
    assert len(long) == 7
    row = long[(long["pair"] == "manual_e1 vs manual_e2") & (long["case"] == "case_c")].iloc[0]
    want = compute_metrics(truth["obs2"]["case_c"], truth["ref"]["case_c"], (2.0, 0.8, 0.8))
    assert row["rv"] == pytest.approx(want["rv"])  # RV = V_manual_e1 / V_manual_e2
    assert row["rv"] == pytest.approx(12 / 16) and row["vol_a_ml"] < row["vol_b_ml"]
    assert table.set_index("pair").loc["manual_e1 vs manual_e2", "rv_outside_count"] == 2
    summary = json.loads((out_dir / "pairwise_summary.json").read_text())
    assert summary["pairs"]["cnn vs manual_e1"]["metrics"]["dsc"]["median"] == pytest.approx(
        table.loc[0, "median_dsc"])
    assert (out_dir / "pairwise_boxplots.png").read_bytes()[:4] == b"\x89PNG"
    assert "manual_e1 vs manual_e2" in out

    rc, _, _ = _run(capsys, "--compare", f"cnn={root / 'cnn'}", f"manual_e1={root / 'ref'}",
                    f"manual_e2={root / 'obs2'}", "--pairs", "manual_e2:manual_e1", "-o", out_dir / "one",
                    "--no-plot", "-np", "1")
    assert rc == 0
    one = pd.read_csv(out_dir / "one" / "pairwise_metrics.csv")
    assert one["pair"].unique().tolist() == ["manual_e2 vs manual_e1"]
    assert one.set_index("case").loc["case_c", "rv"] == pytest.approx(16 / 12)


def test_compare_rejects_unknown_pair(sets, tmp_path, capsys):
    root, _ = sets
    rc, _, err = _run(capsys, "--compare", f"a={root / 'ref'}", f"b={root / 'pred'}", "--pairs", "a:c",
                      "-o", tmp_path)
    assert rc == 2 and "no set named 'c'" in _error(err)


def test_real_totalsegmentator_label_and_orientation(totalseg_dir, tmp_path, capsys):
    """A real RAS label image against its LPS copy holding only the liver: identical voxels."""
    src = totalseg_dir / "example_seg.nii.gz"
    img = read_image(src)
    lps = reorient(img.with_array((img.array == 5).astype(np.uint8)), "LPS")
    write_image(lps, tmp_path / "liver_lps.mha")
    rc, _, _ = _run(capsys, "-r", src, "--ref-label", "5", "-p", tmp_path / "liver_lps.mha", "-o", tmp_path / "ev",
                    "--no-plot")
    assert rc == 0
    row = pd.read_csv(tmp_path / "ev" / "metrics.csv").iloc[0]
    assert (row["dsc"], row["hd_mm"], row["rv"]) == (1.0, 0.0, 1.0)
    assert row["vol_ref_ml"] == pytest.approx(1043.1, abs=0.1)  # data README


def test_real_ircad_liver_dicom_vs_shifted_copy(ircad_dir, tmp_path, capsys):
    """The real IRCAD 1.1 liver mask (DICOM folder, values 255) against itself moved 2 slices up."""
    with zipfile.ZipFile(ircad_dir / "3Dircadb1.1" / "MASKS_DICOM.zip") as z:
        z.extractall(tmp_path, [n for n in z.namelist() if n.startswith("MASKS_DICOM/liver/")])
    liver = tmp_path / "MASKS_DICOM" / "liver"
    ref = read_image(liver)
    m = ref.array > 0
    assert not m[-2:].any()  # nothing leaves the grid
    shifted = np.zeros_like(m)
    shifted[2:] = m[:-2]
    write_image(ref.with_array(shifted.astype(np.uint8)), tmp_path / "shifted.nii", compress=False)
    rc, _, _ = _run(capsys, "-r", liver, "-p", tmp_path / "shifted.nii", "-o", tmp_path / "ev", "--no-plot")
    assert rc == 0
    row = pd.read_csv(tmp_path / "ev" / "metrics.csv").iloc[0]
    dz = ref.spacing[2]
    assert row["rv"] == 1.0 and row["vol_ref_ml"] == pytest.approx(1489.4, abs=0.1)  # data README
    assert row["dsc"] == pytest.approx(2 * np.count_nonzero(m & shifted) / (2 * m.sum()))
    # Every surface voxel has its shifted copy 2 slices away, so no distance exceeds 2 dz; the liver
    # dome's top slice has nothing above it within less than that.
    assert row["hd_mm"] == pytest.approx(2 * dz, rel=1e-6)
    assert 0 < row["msd_mm"] < 2 * dz
