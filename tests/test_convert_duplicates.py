"""Duplicate detection and grouped splits on small phantoms: exact copies under other dtype, header
and flips; near copies (re-encoded, cropped); distinct scans never grouped; policies; user splits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from dataset_conversion import CONVERTERS, run_conversion
from livseg_pipeline.experiment_planning.duplicates import content_hash, find_duplicates, policy_weights
from livseg_pipeline.experiment_planning.splits import build_splits, check_splits, make_splits, split_groups
from livseg_pipeline.io.image_io import Geometry, Image, reorient, write_image
from livseg_pipeline.phantom.generator import generate_phantom

SCALE = 0.3


@pytest.fixture(scope="module")
def phantoms() -> dict:
    """Distinct scans: four seeds (same anatomy templates), and a second scan of seed 21."""
    out = {f"seed{s}": generate_phantom(s, size_scale=SCALE) for s in (21, 22, 23, 24)}
    out["seed21_scan2"] = generate_phantom(21, size_scale=SCALE, scan_index=1)
    return out


def _generic(folder: Path, images: dict[str, tuple[Image, Image]]) -> Path:
    for name, (ct, lab) in images.items():
        write_image(ct, folder / "imagesTr" / f"{name}_0000.nii.gz")
        write_image(lab, folder / "labelsTr" / f"{name}.nii.gz")
    return folder


def test_content_hash_ignores_dtype_header_and_flips(phantoms) -> None:
    ct = phantoms["seed21"].ct
    ras = reorient(ct, "RAS")  # other header, same physical image: equal after reorientation to LPS
    assert content_hash(ct.array) == content_hash(ras.array[::-1, ::-1].astype(np.float32)[::-1, ::-1])
    # a wrong header that mirrors the array: still the same content
    assert content_hash(ct.array) == content_hash(ct.array[:, ::-1, ::-1].astype(np.int32))
    changed = ct.array.copy()
    changed[0, 0, 0] += 1
    assert content_hash(ct.array) != content_hash(changed)
    assert content_hash(ct.array) != content_hash(phantoms["seed21_scan2"].ct.array)


def test_exact_near_and_distinct(tmp_path: Path, phantoms) -> None:
    rng = np.random.default_rng(0)
    orig = phantoms["seed21"]
    a = orig.ct.array
    # re-encoded (float with sub-HU noise) and cropped a few voxels on every side, mirrored in x
    near = (a[2:-1, 3:-2, 1:-3].astype(np.float32) + rng.normal(0, 0.3, a[2:-1, 3:-2, 1:-3].shape))[:, :, ::-1]
    g = orig.ct.geometry
    near_img = Image(near.astype(np.float32), Geometry(g.spacing, (0.0, 0.0, 0.0)))
    near_lab = near_img.with_array(orig.label.array[2:-1, 3:-2, 1:-3][:, :, ::-1].copy())
    # exact copy with another header (RAS) and dtype
    ras_ct, ras_lab = reorient(orig.ct, "RAS"), reorient(orig.label, "RAS")
    exact = (ras_ct.with_array(ras_ct.array.astype(np.float32)), ras_lab)
    images = {k: (v.ct, v.label) for k, v in phantoms.items()}
    images.update({"copy_exact": exact, "copy_near": (near_img, near_lab)})
    folder = _generic(tmp_path / "generic", images)
    report = run_conversion(CONVERTERS["nifti"](), folder, 300, "Dups", num_processes=2, verbose=False)
    assert report["n_failed"] == 0
    ds_dir = Path(os.environ["LVS_RAW"]) / "Dataset300_Dups"
    dup = json.loads((ds_dir / "duplicates.json").read_text())
    assert dup["groups"] == [["copy_exact", "copy_near", "seed21"]]
    kinds = {(p["a"], p["b"]): (p["kind"], p["similarity"]) for p in dup["pairs"]}
    assert kinds[("copy_exact", "seed21")] == ("exact", 1.0)
    kind, sim = kinds[("copy_near", "seed21")]
    assert kind == "near" and sim > 0.99
    # the other seeds and the second scan of seed 21 (same anatomy, new acquisition) are not grouped,
    # and their recorded near-checks stay far below the threshold
    assert all(sim < 0.95 for ha, hb, sim in dup["near_checks"] if sim is not None and sim < 0.98)
    ds = json.loads((ds_dir / "dataset.json").read_text())["cases"]
    assert [ds[c]["training_weight"] for c in ("copy_exact", "copy_near", "seed21")] == [pytest.approx(1 / 3)] * 3
    assert ds["seed22"]["training_weight"] == 1.0
    splits = json.loads((ds_dir / "splits_final.json").read_text())
    folds = {k for k, f in enumerate(splits) for c in ("copy_exact", "copy_near", "seed21") if c in f["val"]}
    assert len(folds) == 1

    # policy drop: one copy kept (weight 1), the others out of the splits
    drop = find_duplicates(ds_dir, policy="drop", verbose=False)
    assert drop["groups"] == dup["groups"] and len(drop["dropped"]) == 2
    kept = [c for c in drop["groups"][0] if c not in drop["dropped"]]
    assert drop["weights"][kept[0]] == 1.0 and all(drop["weights"][c] == 0.0 for c in drop["dropped"])


def test_policy_weights_keep_and_unknown() -> None:
    assert policy_weights([["a", "b"]], ["a", "b"], "keep") == ({"a": 1.0, "b": 1.0}, [])
    cases = {c: {"patient_id": c} for c in "abc"}
    assert split_groups(cases, {"policy": "keep", "groups": [["a", "b"]]}) == [["a"], ["b"], ["c"]]
    assert split_groups(cases, {"policy": "group", "groups": [["a", "b"]]}) == [["a", "b"], ["c"]]
    with pytest.raises(ValueError, match="policy"):
        policy_weights([], ["a"], "merge")


def test_splits_respect_groups_and_user_edits(tmp_path: Path) -> None:
    cases = {f"c{i:02d}": {"patient_id": f"p{i // 3}", "group_id": f"p{i // 3}", "training_weight": 1.0}
             for i in range(20)}
    cases["c00"]["training_weight"] = 0.0  # dropped duplicate: in no fold
    splits = build_splits(cases, 5, 12345)
    assert len(splits) == 5 and build_splits(cases, 5, 12345) == splits
    assert check_splits(splits, cases) == []
    assert "c00" not in {c for f in splits for c in f["train"] + f["val"]}
    for gid in {r["group_id"] for r in cases.values()}:
        members = [c for c, r in cases.items() if r["group_id"] == gid and r["training_weight"] > 0]
        assert len({k for k, f in enumerate(splits) for c in members if c in f["val"]}) == 1

    (tmp_path / "dataset.json").write_text(json.dumps({"cases": cases}))
    first = make_splits(tmp_path, verbose=False)
    assert first == splits
    # a user's edit is kept (and its leak reported), unless overwrite is asked for
    edited = json.loads((tmp_path / "splits_final.json").read_text())
    moved = edited[0]["val"].pop()
    edited[1]["val"].append(moved)
    (tmp_path / "splits_final.json").write_text(json.dumps(edited))
    assert make_splits(tmp_path, verbose=False) == edited
    assert any("spread over several folds" in p for p in check_splits(edited, cases))
    assert make_splits(tmp_path, overwrite=True, verbose=False) == splits
