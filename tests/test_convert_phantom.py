"""The phantom cohort in all six layouts converted into one dataset: layout, records, fingerprint,
the planted duplicate grouped and kept in one fold, patients kept in one fold, reruns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dataset_conversion import CONVERTERS, run_conversion
from livseg_pipeline.io.image_io import read_image, same_grid


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _val_fold(splits: list[dict], case: str) -> int:
    folds = [k for k, f in enumerate(splits) if case in f["val"]]
    assert len(folds) == 1, (case, folds)
    return folds[0]


def test_every_layout_converts(raw_dataset) -> None:
    assert set(raw_dataset.reports) == {"lits", "msd", "sliver07", "ircadb", "sirt", "nifti"}
    for source, report in raw_dataset.reports.items():
        assert report["n_failed"] == 0, (source, report["cases"])
        assert report["n_converted"] >= 1
    ds = _json(raw_dataset.path / "dataset.json")
    manifest = raw_dataset.manifest
    assert set(raw_dataset.case_of) == {c["case_id"] for c in manifest["cases"]}
    assert ds["numTraining"] == len(ds["cases"]) == len(manifest["cases"]) + 2
    for key in ("channel_names", "labels", "file_ending"):
        assert key in ds
    images = sorted(p.name for p in (raw_dataset.path / "imagesTr").iterdir())
    labels = sorted(p.name for p in (raw_dataset.path / "labelsTr").iterdir())
    assert images == sorted(f"{c}_0000.nii.gz" for c in ds["cases"])
    assert labels == sorted(f"{c}.nii.gz" for c in ds["cases"])
    for rec in ds["cases"].values():
        assert {"source", "original_paths", "patient_id", "group_id", "content_hash"} <= set(rec)


def test_voxels_and_volumes_match_the_manifest(raw_dataset) -> None:
    """Whatever the native format and orientation, the liver volume is the phantom's."""
    fp = _json(raw_dataset.path / "fingerprint.json")["cases"]
    for rec in raw_dataset.manifest["cases"]:
        case = raw_dataset.case_of[rec["case_id"]]
        img = read_image(raw_dataset.path / "imagesTr" / f"{case}_0000.nii.gz")
        lab = read_image(raw_dataset.path / "labelsTr" / f"{case}.nii.gz")
        assert same_grid(img, lab) and lab.array.dtype == np.uint8
        assert set(np.unique(lab.array).tolist()) == {0, 1}
        assert img.array.dtype == np.int16, (case, img.array.dtype)  # also the float32 MSD copy
        assert lab.array.shape == tuple(rec["shape_zyx"]) or sorted(lab.array.shape) == sorted(rec["shape_zyx"])
        rtol = 0.03 if str(rec["files"]["label"]).endswith(".dcm") else 1e-3  # RTSTRUCT: contours
        assert fp[case]["liver_volume_ml"] == pytest.approx(rec["liver_volume_ml"], rel=rtol), case
        if not rec.get("hard"):
            assert fp[case]["liver_side"] == "right", case
        assert -1100 < fp[case]["hu"]["p0_5"] < -500  # HU (SIRT's unsigned + intercept rescaled)


def test_planted_duplicate_grouped_and_kept_in_one_fold(raw_dataset) -> None:
    pairs = [[raw_dataset.case_of[a], raw_dataset.case_of[b]] for a, b in raw_dataset.manifest["duplicates"]]
    assert pairs, "the cohort plants one duplicate"
    dup = _json(raw_dataset.path / "duplicates.json")
    # grouped, and nothing else is: phantoms share anatomy templates but distinct scans never match
    assert dup["groups"] == sorted(sorted(p) for p in pairs)
    assert all(p["kind"] == "exact" for p in dup["pairs"])
    ds = _json(raw_dataset.path / "dataset.json")["cases"]
    splits = _json(raw_dataset.path / "splits_final.json")
    assert len(splits) == 5
    for a, b in pairs:
        assert ds[a]["source"] != ds[b]["source"]  # LiTS .nii int16 vs MSD .nii.gz float32
        assert ds[a]["content_hash"] == ds[b]["content_hash"]
        assert ds[a]["group_id"] == ds[b]["group_id"]
        assert ds[a]["training_weight"] == ds[b]["training_weight"] == 0.5
        assert _val_fold(splits, a) == _val_fold(splits, b)
        for f in splits:
            assert (a in f["train"]) == (b in f["train"])


def test_splits_cover_every_case_once_and_keep_patients_together(raw_dataset) -> None:
    ds = _json(raw_dataset.path / "dataset.json")["cases"]
    splits = _json(raw_dataset.path / "splits_final.json")
    vals = [c for f in splits for c in f["val"]]
    assert sorted(vals) == sorted(ds)
    for f in splits:
        assert not set(f["train"]) & set(f["val"]) and sorted(f["train"] + f["val"]) == sorted(ds)
    patients = raw_dataset.manifest["patients"]
    assert patients, "the cohort plants a SIRT patient scanned twice"
    for scans in patients.values():
        cases = [raw_dataset.case_of[s] for s in scans]
        assert len({ds[c]["patient_id"] for c in cases}) == 1
        assert len({_val_fold(splits, c) for c in cases}) == 1
        # two scans of one patient are not duplicates: full training weight each
        assert all(ds[c]["training_weight"] == 1.0 for c in cases)


def test_fingerprint_summary(raw_dataset) -> None:
    fp = _json(raw_dataset.path / "fingerprint.json")
    s = fp["summary"]
    assert s["n_cases"] == len(fp["cases"])
    assert len(s["median_spacing"]) == 3 and len(s["median_shape"]) == 3
    fg = s["foreground_intensity_properties"]
    assert -200 < fg["percentile_00_5"] < fg["median"] < fg["percentile_99_5"] < 400
    # the headers of the native orientations are recorded (LiTS RAS, SLIVER LPS, ...)
    assert len(s["orientations"]) >= 2


def test_rerun_converts_nothing_new(raw_dataset, use_raw_root) -> None:
    use_raw_root(raw_dataset)
    before = {p.name: p.stat().st_mtime_ns for p in (raw_dataset.path / "imagesTr").iterdir()}
    splits_before = (raw_dataset.path / "splits_final.json").read_text()
    report = run_conversion(CONVERTERS["lits"](), raw_dataset.cohort_dir / "LiTS", 100, num_processes=1,
                            verbose=False)
    assert report["n_converted"] == 0 and report["n_failed"] == 0
    assert report["n_unchanged"] == raw_dataset.reports["lits"]["n_cases"]
    assert {p.name: p.stat().st_mtime_ns for p in (raw_dataset.path / "imagesTr").iterdir()} == before
    assert (raw_dataset.path / "splits_final.json").read_text() == splits_before


def test_ircadb_unzipped_folders_read_like_the_zips(raw_dataset, tmp_path: Path, monkeypatch) -> None:
    import zipfile

    rec = next(r for r in raw_dataset.manifest["cases"] if r["layout"] == "ircadb")
    case_dir = (raw_dataset.cohort_dir / rec["files"]["image"]).parent
    unzipped = tmp_path / "3Dircadb1" / case_dir.name
    for name in ("PATIENT_DICOM.zip", "MASKS_DICOM.zip"):
        with zipfile.ZipFile(case_dir / name) as zf:
            zf.extractall(unzipped)  # our own test archive; real input is never extracted like this
    monkeypatch.setenv("LVS_RAW", str(tmp_path / "raw"))
    report = run_conversion(CONVERTERS["ircadb"](), tmp_path / "3Dircadb1", 102, "Unzipped", verbose=False)
    assert report["n_converted"] == 1 and report["n_failed"] == 0
    ds = _json(tmp_path / "raw" / "Dataset102_Unzipped" / "dataset.json")["cases"]
    zipped = _json(raw_dataset.path / "dataset.json")["cases"][raw_dataset.case_of[rec["case_id"]]]
    (case, record), = ds.items()
    assert case == raw_dataset.case_of[rec["case_id"]]
    assert record["content_hash"] == zipped["content_hash"]
    assert record["original_paths"][0].endswith("PATIENT_DICOM")
