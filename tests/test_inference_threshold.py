"""Threshold tuning on saved cross-validation probabilities recovers a planted optimum; the stored
configuration drives `--threshold auto`."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_inference import save_model_folder

from livseg_pipeline.cli.find_best_threshold import main as find_best_threshold
from livseg_pipeline.inference.predictor import Predictor, load_inference_config
from livseg_pipeline.inference.threshold import best_threshold, dsc_curve
from livseg_pipeline.io.image_io import Geometry, Image, write_image
from livseg_pipeline.utils.files import save_npz_atomic

PLANTED = 0.32


def synthetic_case(rng, shape=(12, 40, 40)):
    """Reference: a box. Probabilities: inside the reference uniform in [0.32, 1), a rim of false
    positives at [0.2, 0.32) and false negatives... so that exactly t = 0.32 is best: below it the
    rim (outside) comes in, above it part of the reference (p in [0.32, t)) drops out."""
    ref = np.zeros(shape, bool)
    ref[2:10, 8:32, 8:32] = True
    p = rng.uniform(0.0, 0.2, shape)
    p[ref] = rng.uniform(PLANTED, 1.0, ref.sum())
    rim = np.zeros(shape, bool)
    rim[2:10, 6:34, 6:34] = True
    rim &= ~ref
    p[rim] = rng.uniform(0.2, PLANTED - 0.005, rim.sum())
    return p.astype(np.float16), ref


@pytest.fixture()
def cv_tree(tmp_path, monkeypatch, inf_plans, liver_net):
    results, raw = tmp_path / "results", tmp_path / "raw"
    monkeypatch.setenv("LVS_RESULTS", str(results))
    monkeypatch.setenv("LVS_RAW", str(raw))
    model_dir = save_model_folder(results, [liver_net, liver_net], inf_plans, "Dataset902_Thr")
    labels = raw / "Dataset902_Thr" / "labelsTr"
    rng = np.random.default_rng(0)
    for k in range(6):
        p, ref = synthetic_case(rng)
        fold = k % 2
        save_npz_atomic(model_dir / f"fold_{fold}" / "validation" / f"case_{k:03d}_prob.npz", probabilities=p)
        write_image(Image(ref.astype(np.uint8), Geometry((1.5, 1.5, 3.0))), labels / f"case_{k:03d}.nii.gz")
    return model_dir


def test_dsc_curve_matches_direct_computation():
    rng = np.random.default_rng(1)
    p, ref = synthetic_case(rng)
    ts = [0.1, 0.3, 0.32, 0.5, 0.9]
    direct = [2 * np.sum((p >= np.float32(t)) & ref) / (np.sum(p >= np.float32(t)) + ref.sum()) for t in ts]
    np.testing.assert_allclose(dsc_curve(p, ref, ts), direct, rtol=1e-12)
    assert best_threshold(dsc_curve(p, ref, np.round(np.arange(0.05, 0.96, 0.01), 2))[None],
                          np.round(np.arange(0.05, 0.96, 0.01), 2))[0] == PLANTED


def test_find_best_threshold_recovers_planted_optimum(cv_tree, capsys, liver_net, inf_plans):
    assert find_best_threshold(["-d", "902"]) == 0
    out = capsys.readouterr().out
    assert "best threshold 0.32" in out
    cfg = load_inference_config(cv_tree)
    assert cfg["threshold"] == pytest.approx(PLANTED)
    assert cfg["gain_over_0.5"] > 0 and cfg["n_cases"] == 6 and cfg["folds"] == ["fold_0", "fold_1"]
    assert set(cfg["postprocessing"]["median_dsc"]) == {"none", "paper", "reconstruction"}
    assert (cv_tree / "threshold_sweep.png").stat().st_size > 1000
    pred = Predictor.from_model_dir(cv_tree, threshold="auto")
    assert pred.threshold == pytest.approx(PLANTED)
    assert pred.postprocessing == cfg["postprocessing"]["enabled"]
    assert Predictor.from_model_dir(cv_tree).threshold == 0.5


def test_missing_cv_predictions_one_line_error(tmp_path, monkeypatch, capsys, inf_plans, liver_net):
    monkeypatch.setenv("LVS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("LVS_RAW", str(tmp_path / "raw"))
    save_model_folder(tmp_path / "results", [liver_net], inf_plans, "Dataset903_Empty")
    (tmp_path / "raw" / "Dataset903_Empty").mkdir(parents=True)
    assert find_best_threshold(["-d", "903"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no cross-validation probabilities" in err and len(err.splitlines()) == 1
