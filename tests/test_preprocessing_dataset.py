"""lvs_plan_preprocess end to end on the fixture dataset: outputs, reruns, plan changes, bad cases."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from livseg_pipeline.cli.plan_preprocess import main
from livseg_pipeline.experiment_planning.plans import load_plans
from livseg_pipeline.io.image_io import read_image
from livseg_pipeline.preprocessing.preprocessor import load_preprocessed_case, restore_to_original


def test_fixture_dataset_is_complete(preprocessed_dataset):
    ds = preprocessed_dataset
    folder = ds.plans_dir
    plans = load_plans(folder / "plans.json")
    assert plans.dataset_name == ds.name and plans.preprocessing.target_spacing_mm == [4.0, 4.0, 4.0]
    assert plans.planner_notes and "hardware" in plans.planner_info
    assert (folder.parent / "splits_final.json").read_text() == (ds.raw_dir / "splits_final.json").read_text()
    assert (folder.parent / "dataset.json").is_file()
    assert ds.summary["n_failed"] == 0 and ds.summary["n_done"] == len(ds.case_ids) >= 2
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]          # no temp files left
    assert (folder / "preprocessing_preview.png").read_bytes()[:4] == b"\x89PNG"
    for case in ds.case_ids:
        arrays, props = load_preprocessed_case(folder, case)
        assert arrays["image"].dtype == np.float32 and arrays["label"].dtype == np.uint8
        assert arrays["image"].shape == arrays["label"].shape == tuple(props["preprocessed"]["shape_zyx"])
        assert props["preprocessed"]["orientation"] == "LPS"
        assert abs(props["liver_volume_change_pct"]) < 2.0
        assert props["crop_box_zyx"][0] == [0, props["reoriented"]["shape_zyx"][0]]   # full z kept
        back = restore_to_original(arrays["label"], props, order=0)
        original = read_image(props["source_label"])
        assert back.shape == original.array.shape


def _copy_tree(ds, tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    pre = tmp_path / "preprocessed"
    shutil.copytree(ds.raw_root, raw)
    shutil.copytree(ds.preprocessed_root, pre)
    monkeypatch.setenv("LVS_RAW", str(raw))
    monkeypatch.setenv("LVS_PREPROCESSED", str(pre))
    return raw / ds.name, pre / ds.name / ds.plans.plans_name


def test_rerun_skips_and_plan_change_redoes(preprocessed_dataset, tmp_path, monkeypatch, capsys):
    ds = preprocessed_dataset
    raw, folder = _copy_tree(ds, tmp_path, monkeypatch)
    preset = ["--preset", str(tmp_path / "unused.json")]
    shutil.copy(folder / "plans.json", preset[1])
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")}
    assert main(["-d", ds.name, *preset, "-np", "1"]) == 0
    summary = json.loads((folder / "preprocessing_summary.json").read_text())
    assert summary["n_skipped"] == len(ds.case_ids) and summary["n_done"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")} == mtimes
    out = capsys.readouterr().out
    assert "skipped (up to date): " + str(len(ds.case_ids)) in out and "using the existing" in out

    # a re-converted input (new file) makes its case stale, and only that one
    lab = raw / "labelsTr" / f"{ds.case_ids[1]}.nii.gz"
    lab.write_bytes(lab.read_bytes())
    os.utime(lab, ns=(lab.stat().st_atime_ns, lab.stat().st_mtime_ns + 10 ** 9))
    assert main(["-d", ds.name, *preset, "-np", "1"]) == 0
    summary = json.loads((folder / "preprocessing_summary.json").read_text())
    assert summary["n_done"] == 1 and summary["cases"][ds.case_ids[1]]["status"] == "done"

    # a hand edit of the preprocessing settings in plans.json makes every case stale
    d = json.loads((folder / "plans.json").read_text())
    d["preprocessing"]["median_filter_size"] = 0
    (folder / "plans.json").write_text(json.dumps(d))
    assert main(["-d", ds.name, *preset, "-np", "1", "--cases", ds.case_ids[0]]) == 0
    summary = json.loads((folder / "preprocessing_summary.json").read_text())
    assert summary["n_done"] == 1 and summary["n_cases"] == 1
    _, props = load_preprocessed_case(folder, ds.case_ids[0])
    assert props["plans_hash"] == summary["plans_hash"]


def test_bad_case_is_reported_and_the_rest_goes_on(preprocessed_dataset, tmp_path, monkeypatch, capsys):
    ds = preprocessed_dataset
    raw, folder = _copy_tree(ds, tmp_path, monkeypatch)
    bad = ds.case_ids[0]
    img = raw / "imagesTr" / f"{bad}_0000.nii.gz"
    img.write_bytes(b"this is not a NIfTI file")                      # corrupt file
    for p in folder.glob(f"{bad}.*"):
        p.unlink()
    preset = tmp_path / "p.json"
    shutil.copy(folder / "plans.json", preset)
    rc = main(["-d", ds.name, "--preset", str(preset), "-np", "2", "--overwrite", "--cases", *ds.case_ids[:3]])
    assert rc == 1
    summary = json.loads((folder / "preprocessing_summary.json").read_text())
    assert summary["n_failed"] == 1 and summary["n_done"] == 2
    msg = summary["cases"][bad]["message"]
    assert str(img) in msg and "\n" not in msg
    assert f"FAILED {bad}: " in capsys.readouterr().out
    assert not list(folder.glob(f"{bad}.*")) and not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_plan_only_and_unknown_dataset(preprocessed_dataset, tmp_path, monkeypatch, capsys):
    ds = preprocessed_dataset
    monkeypatch.setenv("LVS_RAW", str(ds.raw_root))
    monkeypatch.setenv("LVS_PREPROCESSED", str(tmp_path / "pre"))
    assert main(["-d", ds.name, "--preset", "cpu_demo", "--plan-only"]) == 0
    folder = tmp_path / "pre" / ds.name / "cpu_demo"
    assert {p.name for p in folder.iterdir()} == {"plans.json"}
    assert {"dataset.json", "splits_final.json"} <= {p.name for p in folder.parent.iterdir()}
    assert "inference.segment_size_out" in capsys.readouterr().out
    assert main(["-d", "987"]) == 2
    assert "no dataset '987'" in capsys.readouterr().err


def test_split_copy_refreshed_from_raw_but_hand_edits_kept(tmp_path):
    import time

    from livseg_pipeline.cli.plan_preprocess import copy_dataset_files

    raw, pre = tmp_path / "raw", tmp_path / "pre"
    raw.mkdir()
    pre.mkdir()
    (raw / "splits_final.json").write_text("[1]")
    assert copy_dataset_files(raw, pre)[0].startswith("copied")
    assert copy_dataset_files(raw, pre) == []                                # unchanged: nothing to do
    (raw / "splits_final.json").write_text("[2]")
    later = time.time_ns() + 10 ** 10
    os.utime(raw / "splits_final.json", ns=(later, later))                    # raw is newer
    copy_dataset_files(raw, pre)
    assert (pre / "splits_final.json").read_text() == "[2]"
    (pre / "splits_final.json").write_text("[3]")                            # a hand edit, newer than raw
    os.utime(pre / "splits_final.json", ns=(later + 10 ** 9, later + 10 ** 9))
    assert copy_dataset_files(raw, pre)[0].startswith("kept")
    assert (pre / "splits_final.json").read_text() == "[3]"


def test_planner_extracts_a_missing_fingerprint(tmp_path, monkeypatch, capsys):
    from fixtures_preprocess import write_phantom_raw_dataset

    raw = write_phantom_raw_dataset(tmp_path / "raw", "Dataset902_Tiny", seeds=(3, 4), size_scale=0.3)
    assert not (raw / "fingerprint.json").exists()
    monkeypatch.setenv("LVS_RAW", str(tmp_path / "raw"))
    monkeypatch.setenv("LVS_PREPROCESSED", str(tmp_path / "pre"))
    assert main(["-d", "902", "--preset", "cpu_demo", "--plan-only", "-np", "1"]) == 0
    assert (raw / "fingerprint.json").is_file()
    plans = load_plans(tmp_path / "pre" / raw.name / "cpu_demo" / "plans.json")
    assert plans.planner_info["n_cases"] == 2 and plans.dataset_name == raw.name
    assert "fingerprint.json is missing; extracting" in capsys.readouterr().out
    assert main(["-d", "902", "--preset", "no_such_preset"]) == 2
    assert "no plans preset 'no_such_preset'" in capsys.readouterr().err
