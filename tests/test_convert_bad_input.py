"""Bad input: each broken case is skipped with a one-line reason, the rest converts, exit status 1,
nothing half-written is left, inputs are untouched."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from livseg_pipeline.cli.convert import main
from livseg_pipeline.io.image_io import Geometry, Image, read_image, write_image
from livseg_pipeline.phantom.generator import generate_phantom


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bad_lits(tmp_path_factory) -> Path:
    """A LiTS-layout folder: cases 0 and 6 are fine, 1-5 are broken in one way each."""
    root = tmp_path_factory.mktemp("bad_lits")
    for n, seed in ((0, 11), (6, 12)):
        case = generate_phantom(seed, size_scale=0.3)
        write_image(case.ct, root / f"volume-{n}.nii", compress=False)
        write_image(case.label, root / f"segmentation-{n}.nii", compress=False)
    good = generate_phantom(13, size_scale=0.3)
    ct, lab = good.ct, good.label.array
    # 1: truncated image file
    write_image(ct, root / "volume-1.nii", compress=False)
    data = (root / "volume-1.nii").read_bytes()
    (root / "volume-1.nii").write_bytes(data[: len(data) // 2])
    write_image(good.label, root / "segmentation-1.nii", compress=False)
    # 2: label missing
    write_image(ct, root / "volume-2.nii", compress=False)
    # 3: label on another grid (other spacing and shape)
    write_image(ct, root / "volume-3.nii", compress=False)
    other = Geometry(tuple(s * 2 for s in ct.spacing), ct.geometry.origin)
    write_image(Image(lab[::2, ::2, ::2].copy(), other), root / "segmentation-3.nii", compress=False)
    # 4: label values {0, 3}
    write_image(ct, root / "volume-4.nii", compress=False)
    write_image(ct.with_array((lab * 3).astype(np.uint8)), root / "segmentation-4.nii", compress=False)
    # 5: empty mask
    write_image(ct, root / "volume-5.nii", compress=False)
    write_image(ct.with_array(np.zeros_like(lab)), root / "segmentation-5.nii", compress=False)
    return root


EXPECTED = {
    "lits_001": "truncated",
    "lits_002": "label file missing",
    "lits_003": "another grid",
    "lits_004": "unexpected label values {0, 3}",
    "lits_005": "label is empty",
}


def test_bad_cases_skipped_with_reason(bad_lits: Path, capsys) -> None:
    before = _snapshot(bad_lits)
    rc = main(["lits", str(bad_lits), "-d", "7", "--name", "Bad", "-np", "2"])
    out = capsys.readouterr().out
    assert rc == 1
    ds_dir = Path(os.environ["LVS_RAW"]) / "Dataset007_Bad"
    report = json.loads((ds_dir / "conversion_report.json").read_text())
    failed = report["latest"]["failed"]
    assert set(failed) == set(EXPECTED)
    for case, words in EXPECTED.items():
        reason = failed[case]
        assert words in reason, reason
        assert "\n" not in reason
        assert str(bad_lits) in reason  # names the file
        # the same one-line reason is in the printed summary
        assert any(line.strip().startswith(case) and words in line for line in out.splitlines()), out
    # the good cases converted; nothing of the bad ones (and no temp file) was left behind
    names = sorted(p.name for p in ds_dir.rglob("*.nii.gz"))
    assert names == ["lits_000.nii.gz", "lits_000_0000.nii.gz", "lits_006.nii.gz", "lits_006_0000.nii.gz"]
    assert not [p for p in ds_dir.rglob("*") if ".tmp" in p.name]
    ds = json.loads((ds_dir / "dataset.json").read_text())
    assert sorted(ds["cases"]) == ["lits_000", "lits_006"] and ds["numTraining"] == 2
    # inputs are never modified
    assert _snapshot(bad_lits) == before


def test_written_case_matches_input(bad_lits: Path) -> None:
    assert main(["lits", str(bad_lits), "-d", "8", "-np", "1"]) == 1
    ds_dir = next(Path(os.environ["LVS_RAW"]).glob("Dataset008_*"))
    img = read_image(ds_dir / "imagesTr" / "lits_000_0000.nii.gz")
    lab = read_image(ds_dir / "labelsTr" / "lits_000.nii.gz")
    src = read_image(bad_lits / "volume-0.nii")
    src_lab = read_image(bad_lits / "segmentation-0.nii")
    assert img.array.dtype == np.int16 and lab.array.dtype == np.uint8
    np.testing.assert_array_equal(img.array, src.array)
    np.testing.assert_array_equal(lab.array, (src_lab.array > 0).astype(np.uint8))
    assert img.geometry == lab.geometry
    np.testing.assert_allclose(img.spacing, src.spacing, rtol=1e-6)


def test_no_input_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["msd", str(tmp_path), "-d", "9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no msd cases found" in err and str(tmp_path) in err


def test_rerun_converts_only_what_is_new_or_changed(bad_lits: Path, tmp_path: Path, capsys) -> None:
    import shutil

    src = tmp_path / "lits"
    shutil.copytree(bad_lits, src)
    assert main(["lits", str(src), "-d", "10", "-np", "1"]) == 1
    # the user repairs case 5's label and replaces case 6 by a corrected scan
    vol5 = read_image(src / "volume-5.nii")
    write_image(vol5.with_array(read_image(src / "segmentation-4.nii").array // 3), src / "segmentation-5.nii",
                compress=False)
    vol6 = read_image(src / "volume-6.nii")
    write_image(vol6.with_array((vol6.array + 1).astype(np.int16)), src / "volume-6.nii", compress=False)
    capsys.readouterr()
    assert main(["lits", str(src), "-d", "10", "-np", "1"]) == 1  # 1-4 still broken
    ds_dir = next(Path(os.environ["LVS_RAW"]).glob("Dataset010_*"))
    runs = json.loads((ds_dir / "conversion_report.json").read_text())["runs"]
    assert len(runs) == 2
    status = {c: r["status"] for c, r in runs[-1]["cases"].items()}
    assert status == {"lits_000": "unchanged", "lits_001": "failed", "lits_002": "failed", "lits_003": "failed",
                      "lits_004": "failed", "lits_005": "converted", "lits_006": "updated"}
    ds = json.loads((ds_dir / "dataset.json").read_text())
    assert sorted(ds["cases"]) == ["lits_000", "lits_005", "lits_006"]
    np.testing.assert_array_equal(read_image(ds_dir / "imagesTr" / "lits_006_0000.nii.gz").array,
                                  vol6.array + 1)
    # the same files moved elsewhere are recognised by their bytes: nothing is converted again
    moved = shutil.move(str(src), str(tmp_path / "moved"))
    assert main(["lits", moved, "-d", "10", "-np", "1"]) == 1
    last = json.loads((ds_dir / "conversion_report.json").read_text())["runs"][-1]
    assert last["n_converted"] == 0 and last["n_unchanged"] == 3
    ds = json.loads((ds_dir / "dataset.json").read_text())
    assert ds["cases"]["lits_000"]["original_paths"][0].startswith(str(Path(moved).resolve()))
