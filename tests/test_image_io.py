"""Image I/O: round trips per format, DICOM series (folders and zips), geometry helpers, bad input,
and the real 3D-IRCADb cases."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from livseg_pipeline.io import Geometry, Image, ImageReadError, read_image, reorient, reorient_to_canonical, same_grid
from livseg_pipeline.io.archives import list_zip_folders, read_dicom_zip
from livseg_pipeline.io.image_io import list_dicom_series, write_image
from livseg_pipeline.phantom.dicom_writer import SeriesInfo, dataset_bytes, iter_ct_slices, make_uid

# A permuted, flipped direction (axes: x->-y, y->x, z->z) with non-trivial spacing and origin.
PERMUTED = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def _image(dtype=np.int16, direction=PERMUTED, shape=(7, 9, 11)) -> Image:
    rng = np.random.default_rng(0)
    arr = rng.integers(-1000, 1500, size=shape).astype(dtype)
    return Image(arr, Geometry((0.7, 0.8, 2.5), (-120.5, 33.25, -410.0), direction))


def _one_line(e: pytest.ExceptionInfo, name: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg and name in msg, msg


def _series_info(tag: str, **kw) -> SeriesInfo:
    return SeriesInfo(patient_id="P1", patient_name="TEST^P1", study_uid=make_uid(tag, "st"),
                      series_uid=make_uid(tag, "se"), frame_uid=make_uid(tag, "for"), **kw)


def _write_series(folder: Path, image: Image, tag: str = "a", edit=None, **kw) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, ds in iter_ct_slices(image, _series_info(tag, **kw)):
        if edit is not None:
            edit(k, ds)
        (folder / f"{tag}{k:03d}").write_bytes(dataset_bytes(ds))


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mha", ".mhd", ".nrrd"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_round_trip_keeps_values_and_geometry(tmp_path, suffix, dtype):
    img = _image(dtype)
    path = write_image(img, tmp_path / f"img{suffix}")
    back = read_image(path)
    assert back.array.dtype == img.array.dtype
    assert np.array_equal(back.array, img.array)
    # NIfTI stores geometry in float32.
    assert np.allclose(back.geometry.spacing, img.geometry.spacing, atol=1e-5)
    assert np.allclose(back.geometry.origin, img.geometry.origin, atol=1e-4)
    assert np.allclose(back.geometry.direction, img.geometry.direction, atol=1e-6)
    assert same_grid(back, img)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name] + ([path.with_suffix(".zraw").name] if suffix == ".mhd" else []))


def test_mhd_uncompressed_writes_raw_pair(tmp_path):
    img = _image()
    write_image(img, tmp_path / "liver-orig001.mhd", compress=False)
    assert (tmp_path / "liver-orig001.raw").stat().st_size == img.array.nbytes
    assert "ElementDataFile = liver-orig001.raw" in (tmp_path / "liver-orig001.mhd").read_text()
    assert np.array_equal(read_image(tmp_path / "liver-orig001.mhd").array, img.array)


def test_dicom_series_round_trip(tmp_path):
    img = _image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    _write_series(tmp_path / "ct", img)
    back = read_image(tmp_path / "ct")
    assert np.array_equal(back.array, img.array)
    assert np.allclose(back.geometry.spacing, img.geometry.spacing, atol=1e-4)
    assert np.allclose(back.geometry.origin, img.geometry.origin, atol=1e-3)
    assert back.geometry.orientation_code == "LPS"
    # The same series from a zip archive (IRCAD style: folder inside, extensionless names).
    zpath = tmp_path / "PATIENT_DICOM.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted((tmp_path / "ct").iterdir()):
            zf.write(f, f"PATIENT_DICOM/image_{f.name[1:].lstrip('0') or '0'}")
    z = read_dicom_zip(zpath)
    assert np.array_equal(z.array, img.array) and same_grid(z, back)
    assert read_image(zpath).array.shape == img.array.shape


# ---------------------------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------------------------
def test_same_grid_tolerance():
    a = _image()
    g = a.geometry
    assert same_grid(a, Image(a.array, Geometry(g.spacing, tuple(o + 1e-5 for o in g.origin), g.direction)))
    assert not same_grid(a, Image(a.array, Geometry(g.spacing, (g.origin[0] + 0.5,) + g.origin[1:], g.direction)))
    assert not same_grid(a, Image(a.array, Geometry((0.7, 0.8, 2.6), g.origin, g.direction)))
    assert not same_grid(a, Image(a.array, Geometry(g.spacing, g.origin, (1, 0, 0, 0, 1, 0, 0, 0, 1))))
    assert not same_grid(a, Image(a.array[:-1], g))
    assert same_grid(a.geometry, g, a.array.shape, a.array.shape)


@pytest.mark.parametrize("code", ["RAS", "LPI", "PIR", "SLA"])
def test_reorientation_keeps_physical_positions(code):
    arr = np.arange(5 * 6 * 7, dtype=np.int32).reshape(5, 6, 7)
    lps = Image(arr, Geometry((0.9, 1.1, 3.0), (10.0, -20.0, 30.0)))
    other = reorient(lps, code)
    assert other.geometry.orientation_code == code
    s_lps, s_oth = lps.to_sitk(), other.to_sitk()
    rng = np.random.default_rng(1)
    for _ in range(20):
        idx = [int(rng.integers(n)) for n in s_oth.GetSize()]
        p = s_oth.TransformIndexToPhysicalPoint(idx)
        j = s_lps.TransformPhysicalPointToIndex(p)
        assert s_oth[idx] == s_lps[j]
    back = reorient_to_canonical(other)
    assert np.array_equal(back.array, arr) and same_grid(back, lps)


# ---------------------------------------------------------------------------------------------
# DICOM pitfalls
# ---------------------------------------------------------------------------------------------
def test_two_series_in_one_folder(tmp_path):
    img = _image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), shape=(4, 8, 8))
    _write_series(tmp_path, img, "a", series_description="AX PV")
    _write_series(tmp_path, img, "b", series_description="AX LOW DOSE")
    series = list_dicom_series(tmp_path)
    assert len(series) == 2
    with pytest.raises(ImageReadError) as e:
        read_image(tmp_path)
    _one_line(e, str(tmp_path))
    assert "2 DICOM series" in str(e.value) and all(s.uid in str(e.value) for s in series)
    chosen = read_image(tmp_path, series_uid=series[1].uid)
    assert np.array_equal(chosen.array, img.array)


def test_gantry_tilt_is_an_error(tmp_path):
    img = _image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), shape=(6, 8, 8))

    def tilt(k, ds):   # slice origins slide in y: a 20 degree gantry tilt
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + np.tan(np.radians(20)) * k * 2.5, z]
    _write_series(tmp_path / "tilt", img, edit=tilt)
    with pytest.raises(ImageReadError, match="gantry tilt") as e:
        read_image(tmp_path / "tilt")
    _one_line(e, "tilt")


def test_non_uniform_spacing_warns(tmp_path):
    img = _image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), shape=(6, 8, 8))
    _write_series(tmp_path / "gap", img)
    sorted(p for p in (tmp_path / "gap").iterdir())[3].unlink()     # a missing slice
    with pytest.warns(UserWarning, match="non-uniform slice spacing"):
        read_image(tmp_path / "gap")


# ---------------------------------------------------------------------------------------------
# Bad input: one-line ImageReadError naming the file
# ---------------------------------------------------------------------------------------------
def test_truncated_and_garbage_files(tmp_path):
    good = write_image(_image(shape=(20, 30, 30)), tmp_path / "good.nii.gz")
    data = good.read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    raw = gzip.decompress(data)
    (tmp_path / "truncated.nii").write_bytes(raw[: len(raw) // 2])
    for suffix in (".mha", ".nrrd"):
        f = write_image(_image(shape=(20, 30, 30)), tmp_path / f"truncated{suffix}", compress=False)
        f.write_bytes(f.read_bytes()[:-3000])
    (tmp_path / "garbage.nrrd").write_bytes(b"this is not an image at all\n" * 10)
    (tmp_path / "empty.mha").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    for name in ("truncated.nii.gz", "truncated.nii", "truncated.mha", "truncated.nrrd", "garbage.nrrd",
                 "empty.mha", "notes.txt", "missing.nii"):
        with pytest.raises(ImageReadError) as e:
            read_image(tmp_path / name)
        _one_line(e, name)


def test_mhd_with_missing_raw(tmp_path):
    write_image(_image(), tmp_path / "a.mhd", compress=False)
    (tmp_path / "a.raw").unlink()
    with pytest.raises(ImageReadError) as e:
        read_image(tmp_path / "a.mhd")
    _one_line(e, "a.mhd")


def test_folders_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.txt").write_text("no images here")
    for name in ("empty", "text"):
        with pytest.raises(ImageReadError, match="no DICOM image series") as e:
            read_image(tmp_path / name)
        _one_line(e, name)


def test_zip_errors_and_zip_slip(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ImageReadError) as e:
        read_dicom_zip(bad)
    _one_line(e, "bad.zip")
    # Member names that try to escape: never used as paths.
    evil = tmp_path / "evil.zip"
    victim = tmp_path / "outside" / "pwned"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside/pwned", b"x")
        zf.writestr("/tmp/../" + str(victim), b"x")
        zf.writestr("MASKS_DICOM/liver/image_0", b"not dicom")
        zf.writestr("MASKS_DICOM/spleen/image_0", b"not dicom")
    assert "MASKS_DICOM/liver" in list_zip_folders(evil)
    with pytest.raises(ImageReadError, match="choose one") as e:
        read_dicom_zip(evil)
    _one_line(e, "evil.zip")
    with pytest.raises(ImageReadError, match="no DICOM image series") as e:
        read_dicom_zip(evil, "liver")
    _one_line(e, "evil.zip")
    for name in ("..", "outside"):
        with pytest.raises(ImageReadError):
            read_dicom_zip(evil, name)
    assert not victim.exists() and not (tmp_path.parent / "outside").exists()
    with pytest.raises(ImageReadError, match="not found"):
        read_dicom_zip(evil, "kidney")


# ---------------------------------------------------------------------------------------------
# Real data: 3D-IRCADb (zip layout)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case,volume_ml", [("3Dircadb1.1", 1489.4), ("3Dircadb1.7", 1430.4)])
def test_real_ircad_liver_volume_and_side(ircad_dir, case, volume_ml):
    ct = read_dicom_zip(ircad_dir / case / "PATIENT_DICOM.zip")
    mask = read_dicom_zip(ircad_dir / case / "MASKS_DICOM.zip", "liver")
    assert same_grid(ct, mask)
    ct, mask = reorient_to_canonical(ct), reorient_to_canonical(mask)
    liver = mask.array > 0                     # 255 here, 1 in other IRCAD patients
    assert liver.sum() * mask.voxel_volume_ml == pytest.approx(volume_ml, rel=0.005)
    # Patient's right = low x in LPS: the liver lies left of the body's centre in the array.
    body_x = np.nonzero(ct.array[ct.array.shape[0] // 2] > -300)[1].mean()
    liver_x = np.nonzero(liver)[2].mean()
    assert liver_x < body_x - 30
    assert 90 < np.median(ct.array[liver]) < 140        # portal-venous phase
    assert ct.array.dtype == np.int16 and sitk.GetPixelIDValueAsString(ct.to_sitk().GetPixelID())
