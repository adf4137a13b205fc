"""A reduced lvs_demo end to end: tiny phantoms, a tiny network, two short epochs.

It checks the chain is wired (every stage ran through its CLI, the summary and overlays exist, the
planted duplicate was found), not accuracy: the full demo's accuracy is in documentation/demo.md.
"""

from __future__ import annotations

import json

from livseg_pipeline.demo import DemoConfig, run_demo
from livseg_pipeline.training.synthetic import tiny_plans


def test_reduced_demo_runs_end_to_end(tmp_path):
    plans = tiny_plans(spacing_mm=6.0, plans_name="demo_tiny")
    plans.training.epochs = 2
    plans.training.iterations_per_epoch = 6
    plans.training.val_interval_epochs = 2
    cfg = DemoConfig(tmp_path / "demo", n_train=5, n_test_normal=1, hard_cases=("low_contrast",),
                     plans=plans, size_scale=0.4, num_processes=1)
    summary = run_demo(cfg)

    stages = [s["stage"] for s in summary["stages"]]
    assert stages == ["phantoms", "convert LiTS", "convert MSD", "plan + preprocess", "train fold 0",
                      "predict held-out", "evaluate"]
    assert all(s["exit"] == 0 for s in summary["stages"])
    # the planted duplicate (same scan as LiTS .nii and MSD .nii.gz) is found and grouped
    assert len(summary["planted_duplicates"]) == 1
    assert len(summary["duplicate_groups"]) == 1 and len(summary["duplicate_groups"][0]) == 2
    # every held-out case was predicted, evaluated and got a QC report and an overlay
    assert [r["case"] for r in summary["cases"]] == ["test_000", "test_001_low_contrast"]
    assert all("dsc" in r and 0.0 <= r["dsc"] <= 1.0 for r in summary["cases"])
    assert len(summary["overlays"]) == 2
    work = tmp_path / "demo"
    assert (work / "summary.md").read_text().startswith("# livseg demo summary")
    assert json.loads((work / "summary.json").read_text())["cases"] == summary["cases"]

    # a rerun skips finished work: no stage trains or predicts again
    again = run_demo(cfg)
    assert [s["stage"] for s in again["stages"]] == ["phantoms", "convert LiTS", "convert MSD",
                                                       "plan + preprocess", "predict held-out", "evaluate"]
    assert again["cases"] == summary["cases"]
