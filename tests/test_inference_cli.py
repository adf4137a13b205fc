"""lvs_predict end to end on small phantoms: image folders and DICOM series in, masks on the input
grids out, bad inputs reported in one line while the others still run, reruns skip, and
--part-id/--num-parts split the cases exactly."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_inference import phantom_ct
from test_clinical_dicom import write_ct_series

from livseg_pipeline.cli.predict import main as lvs_predict
from livseg_pipeline.inference.cases import find_cases, partition
from livseg_pipeline.io.image_io import Geometry, Image, read_image, reorient, same_grid, write_image


def tiny(seed: int, **kw):
    return phantom_ct(shape=(12, 36, 40), spacing=(3.0, 3.0, 3.0), seed=seed, **kw)


@pytest.fixture(scope="module")
def case_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("cases")
    write_image(tiny(0)[0], d / "alpha_0000.nii.gz")
    write_image(reorient(tiny(1)[0], "RAS"), d / "beta.nii.gz")
    write_image(tiny(2)[0], d / "gamma.mha")
    write_image(tiny(3)[0], d / "delta.nrrd")
    return d


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    write_image(tiny(0)[0], d / "good.nii.gz")
    (d / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    write_image(Image(np.full((1, 30, 30), -1000, np.int16), Geometry((1.0, 1.0, 1.0))), d / "flat.nii.gz")
    mr = np.random.default_rng(0).uniform(0, 900, (12, 36, 40)).astype(np.int16)
    write_image(Image(mr, Geometry((3.0, 3.0, 3.0))), d / "mr.nii.gz")
    (d / "notes.txt").write_text("not an image")
    return d


def test_folder_of_images(case_folder, two_fold_model, tmp_path, capsys):
    out = tmp_path / "out"
    rc = lvs_predict(["-i", str(case_folder), "-o", str(out), "--model", str(two_fold_model), "-f", "0",
                      "--output-format", "same", "--save-probabilities"])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["alpha.nii.gz", "alpha_prob.npz", "beta.nii.gz", "beta_prob.npz", "delta.nrrd",
                     "delta_prob.npz", "gamma.mha", "gamma_prob.npz"]  # nothing half-written left over
    for src, dst in [("alpha_0000.nii.gz", "alpha.nii.gz"), ("beta.nii.gz", "beta.nii.gz"), ("gamma.mha", "gamma.mha")]:
        a, m = read_image(case_folder / src), read_image(out / dst)
        assert same_grid(a, m, tol=1e-6) and m.array.dtype == np.uint8 and 0 < m.array.sum() < m.array.size
        with np.load(out / dst.replace(".nii.gz", "").replace(".mha", "") .__add__("_prob.npz")) as z:
            assert z["probabilities"].shape == a.array.shape and z["probabilities"].dtype == np.float16
    err = capsys.readouterr().err
    assert "4 done, 0 failed" in err and "network" in err
    # a rerun skips every finished case and leaves the files alone
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert lvs_predict(["-i", str(case_folder), "-o", str(out), "--model", str(two_fold_model), "-f", "0",
                        "--output-format", "same"]) == 0
    assert "4 already done" in capsys.readouterr().err
    assert before == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def test_part_id_num_parts_partition_exactly(case_folder, two_fold_model, tmp_path):
    cases, _ = find_cases(case_folder)
    ids = [c.case_id for c in cases]
    assert ids == sorted(ids) == ["alpha", "beta", "delta", "gamma"]
    produced = []
    for k in range(3):
        out = tmp_path / f"part{k}"
        assert lvs_predict(["-i", str(case_folder), "-o", str(out), "--model", str(two_fold_model), "-f", "0",
                            "--part-id", str(k), "--num-parts", "3"]) == 0
        got = sorted(p.name[: -len(".nii.gz")] for p in out.glob("*.nii.gz")) if out.exists() else []
        assert got == [c.case_id for c in partition(cases, k, 3)]
        produced += got
    assert sorted(produced) == ids  # each case exactly once
    assert lvs_predict(["-i", str(case_folder), "-o", str(tmp_path / "x"), "--model", str(two_fold_model),
                        "--part-id", "3", "--num-parts", "3"]) == 2


def test_bad_inputs_fail_alone_with_one_line_each(bad_folder, two_fold_model, tmp_path, capsys):
    out = tmp_path / "out"
    rc = lvs_predict(["-i", str(bad_folder), "-o", str(out), "--model", str(two_fold_model), "-f", "0"])
    assert rc == 1
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("ERROR")]
    assert len(errors) == 3
    assert any("broken.nii.gz" in e for e in errors)
    assert any("flat.nii.gz" in e and "2D" in e for e in errors)
    assert any("mr.nii.gz" in e and "do not look like CT" in e for e in errors)
    assert sorted(p.name for p in out.iterdir()) == ["good.nii.gz"]
    assert "1 done, 3 failed" in err and "1 non-image file(s) ignored" in err


def test_model_folder_without_checkpoints(case_folder, tmp_path, capsys):
    empty = tmp_path / "Dataset001_X" / "paper"
    (empty / "fold_0").mkdir(parents=True)
    assert lvs_predict(["-i", str(case_folder), "-o", str(tmp_path / "o"), "--model", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert str(empty) in err[-1] and "no checkpoints" in err[-1]
    assert not (tmp_path / "o").exists()


def test_dicom_folder_with_two_series_and_clinical_outputs(two_fold_model, tmp_path, capsys):
    dcm = tmp_path / "dicom"
    dcm.mkdir()
    for seed in (0, 1):  # two series mixed in one folder
        write_ct_series(tmp_path / f"s{seed}", tiny(seed)[0].array, pixel_spacing=(3.0, 3.0), slice_step=3.0,
                        seed=seed)
        for f in (tmp_path / f"s{seed}").iterdir():
            f.rename(dcm / f"s{seed}_{f.name}")
    out = tmp_path / "out"
    rc = lvs_predict(["-i", str(dcm), "-o", str(out), "--model", str(two_fold_model),
                      "--output-type", "nifti", "rtstruct", "--preview", "--report"])
    assert rc == 0, capsys.readouterr().err
    masks = sorted(out.glob("*.nii.gz"))
    assert len(masks) == 2 and all(m.name.startswith("dicom_") for m in masks)
    for m in masks:
        cid = m.name[: -len(".nii.gz")]
        for suffix in ("_rtstruct.dcm", "_overlay.png", "_report.json"):
            assert (out / f"{cid}{suffix}").is_file()


def test_real_dicom_series_mask_on_its_grid(totalseg_dir, two_fold_model, tmp_path):
    """Real Siemens CT slices (RescaleIntercept -1024): the mask lies on the series' own grid."""
    src = totalseg_dir / "example_ct_dicom"
    out = tmp_path / "out"
    assert lvs_predict(["-i", str(src), "-o", str(out), "--model", str(two_fold_model), "-f", "1"]) == 0
    (mask,) = out.glob("*.nii.gz")
    assert mask.name == "example_ct_dicom.nii.gz"
    ct, m = read_image(src), read_image(mask)
    assert same_grid(ct, m, tol=1e-6) and m.array.dtype == np.uint8
