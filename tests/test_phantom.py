"""Synthetic CT phantom: determinism, HU per organ, label content, hard cases, cohort layouts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from livseg_pipeline.io import read_image, reorient_to_canonical, same_grid
from livseg_pipeline.io.archives import list_zip_folders, read_dicom_zip
from livseg_pipeline.phantom import generate_phantom, write_cohort
from livseg_pipeline.phantom.tissues import LESION_TISSUES, LIVER_TISSUES, T

SMALL = 0.3      # size_scale for unit tests: ~50k-100k voxels per phantom


@pytest.fixture(scope="module")
def portal_case():
    return generate_phantom(21, contrast="portal", size_scale=0.6)


@pytest.fixture(scope="module")
def native_case():
    return generate_phantom(21, contrast="none", size_scale=0.6)


def _interior_hu(case, tissue: T) -> np.ndarray:
    """HU of voxels of ``tissue`` away from its border (no partial volume)."""
    m = case.tissue.array == tissue
    m = ndimage.binary_erosion(m, iterations=1)
    return case.ct.array[m].astype(float)


def test_deterministic_per_seed():
    a, b = generate_phantom(7, size_scale=SMALL), generate_phantom(7, size_scale=SMALL)
    assert np.array_equal(a.ct.array, b.ct.array) and np.array_equal(a.label.array, b.label.array)
    assert a.ct.geometry == b.ct.geometry and a.meta == b.meta
    c = generate_phantom(8, size_scale=SMALL)
    assert c.ct.array.shape != a.ct.array.shape or not np.array_equal(c.ct.array, a.ct.array)


def test_types_grid_and_label_content(portal_case):
    c = portal_case
    assert c.ct.array.dtype == np.int16 and c.label.array.dtype == np.uint8
    assert same_grid(c.ct, c.label)
    assert set(np.unique(c.label.array)) == {0, 1}
    # The label is exactly the liver tissues, lesions and intrahepatic vessels included.
    assert np.array_equal(c.label.array > 0, np.isin(c.tissue.array, np.asarray(LIVER_TISSUES, np.uint8)))
    assert np.all(c.label.array[np.isin(c.tissue.array, np.asarray(LESION_TISSUES, np.uint8))] == 1)
    for other in (T.IVC, T.PORTAL_VEIN, T.GALLBLADDER, T.SPLEEN, T.KIDNEY_CORTEX, T.STOMACH_WALL):
        assert not np.any(c.label.array[c.tissue.array == other])
    assert 900 < c.liver_volume_ml < 2700
    assert c.meta["liver_volume_ml"] == pytest.approx(c.liver_volume_ml, rel=1e-3)


def test_liver_on_patients_right_and_below_lungs(portal_case):
    c = portal_case
    lab = c.label.array > 0
    sx, sy, sz = c.ct.spacing
    x_mm = c.ct.geometry.origin[0] + sx * np.nonzero(lab)[2]
    assert x_mm.mean() < -20           # LPS: patient's right is negative x
    z_liver_top = np.nonzero(lab.any(axis=(1, 2)))[0].max()
    z_lung_top = np.nonzero((c.tissue.array == T.LUNG).any(axis=(1, 2)))[0].max()
    assert z_lung_top > z_liver_top     # lung bases reach above the liver dome


@pytest.mark.parametrize("tissue,lo,hi", [
    (T.LIVER, 90, 130), (T.SPLEEN, 95, 145), (T.FAT, -125, -75), (T.MUSCLE, 35, 75),
    (T.LUNG, -920, -780), (T.AORTA, 135, 195), (T.KIDNEY_CORTEX, 150, 215), (T.AIR, -1024, -980),
])
def test_portal_hu_per_organ(portal_case, tissue, lo, hi):
    hu = _interior_hu(portal_case, tissue)
    assert hu.size > 20
    assert lo <= np.median(hu) <= hi, (tissue.name, np.median(hu))


def test_bone_and_native_hu(portal_case, native_case):
    cort = _interior_hu(portal_case, T.CANCELLOUS_BONE)
    assert np.median(cort) > 150 and np.percentile(portal_case.ct.array, 99.99) > 300
    assert 45 <= np.median(_interior_hu(native_case, T.LIVER)) <= 68
    assert 30 <= np.median(_interior_hu(native_case, T.AORTA)) <= 55
    assert np.median(_interior_hu(portal_case, T.LIVER)) - np.median(_interior_hu(native_case, T.LIVER)) > 35


def test_same_anatomy_on_any_grid():
    a, b = generate_phantom(4, size_scale=0.3), generate_phantom(4, size_scale=0.5)
    assert a.ct.array.size < b.ct.array.size
    assert a.liver_volume_ml == pytest.approx(b.liver_volume_ml, rel=0.06)
    c = generate_phantom(4, spacing=(6.0, 6.0, 8.0))
    assert c.ct.spacing == (6.0, 6.0, 8.0)
    assert c.liver_volume_ml == pytest.approx(b.liver_volume_ml, rel=0.08)


def test_orientation_keeps_content():
    lps = generate_phantom(5, size_scale=SMALL)
    ras = generate_phantom(5, size_scale=SMALL, orientation="RAS")
    assert ras.ct.geometry.orientation_code == "RAS"
    back = reorient_to_canonical(ras.ct)
    assert np.array_equal(back.array, lps.ct.array)
    assert np.allclose(back.geometry.origin, lps.ct.geometry.origin, atol=1e-3)


def test_hard_low_contrast():
    normal = generate_phantom(30, contrast="portal", size_scale=0.5)
    hard = generate_phantom(30, hard="low_contrast", size_scale=0.5)
    assert hard.meta["contrast"] == "none" and hard.meta["noise_sd"] >= 35
    liv_h = _interior_hu(hard, T.LIVER)
    liv_n = _interior_hu(normal, T.LIVER)
    assert np.std(liv_h) > 2 * np.std(liv_n)
    # Liver barely separable from spleen and muscle.
    assert abs(np.median(liv_h) - np.median(_interior_hu(hard, T.MUSCLE))) < 15


def test_hard_dense_lesion():
    c = generate_phantom(31, hard="dense_lesion", size_scale=0.5)
    kinds = [(les["kind"], les["hu"], max(les["radii"])) for les in c.meta["lesions"]]
    assert any(k == "cyst" and hu < 10 and r >= 30 for k, hu, r in kinds)
    assert any(k == "dense" and hu > 300 for k, hu, r in kinds)
    inside = c.ct.array[ndimage.binary_erosion(c.label.array > 0, iterations=1)]
    assert np.mean(inside < 30) > 0.02 and np.sum(inside > 300) > 0
    assert np.all(c.label.array[c.tissue.array == T.DENSE_LESION] == 1)


@pytest.mark.parametrize("seed,what", [(40, "left_lateral"), (41, "elongated")])
def test_hard_abnormal_position(seed, what):
    normal = generate_phantom(seed, size_scale=0.4)
    hard = generate_phantom(seed, hard="abnormal_position", size_scale=0.4)
    assert hard.meta["abnormal"] == what

    def extent(case, axis):   # physical extent of the liver along x (0) or z (2), mm
        idx = np.nonzero(case.label.array > 0)[2 - axis]
        o, s = case.ct.geometry.origin[axis], case.ct.spacing[axis]
        return o + s * idx.min(), o + s * idx.max()
    if what == "left_lateral":
        assert extent(hard, 0)[1] > extent(normal, 0)[1] + 30       # left lobe reaches far left
    else:
        assert extent(hard, 2)[0] < extent(normal, 2)[0] - 30       # long caudal right lobe


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="hard"):
        generate_phantom(0, hard="nonsense")
    with pytest.raises(ValueError, match="contrast"):
        generate_phantom(0, contrast="arterial")
    with pytest.raises(ValueError, match="spacing"):
        generate_phantom(0, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="orientation"):
        generate_phantom(0, orientation="XYZ")
    with pytest.raises(ValueError, match="Mvoxel"):
        generate_phantom(0, spacing=(0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="layout"):
        write_cohort(tmp_path / "never", n_cases=2, layouts=("lits", "kaggle"))
    with pytest.raises(ValueError, match="sirt_mask_format"):
        write_cohort(tmp_path / "never", sirt_mask_format="png")
    assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------------------------------------
# Cohort writer
# ---------------------------------------------------------------------------------------------
def _read_case(root: Path, rec: dict):
    if rec["layout"] == "ircadb":
        img = read_dicom_zip(root / rec["files"]["image"])
        lab = read_dicom_zip(root / rec["files"]["label"], "liver")
    else:
        img, lab = read_image(root / rec["files"]["image"]), read_image(root / rec["files"]["label"])
    return reorient_to_canonical(img), reorient_to_canonical(lab)


def test_cohort_layout_files(phantom_cohort):
    root, manifest = phantom_cohort
    assert {c["layout"] for c in manifest["cases"]} == {"lits", "msd", "sliver07", "ircadb", "sirt"}
    for rel in ("LiTS/volume-0.nii", "LiTS/segmentation-0.nii", "Task03_Liver/imagesTr/liver_0.nii.gz",
                "Task03_Liver/labelsTr/liver_0.nii.gz", "Task03_Liver/dataset.json",
                "SLIVER07/liver-orig001.mhd", "SLIVER07/liver-orig001.raw", "SLIVER07/liver-seg001.raw",
                "3Dircadb1/3Dircadb1.1/PATIENT_DICOM.zip", "3Dircadb1/3Dircadb1.1/MASKS_DICOM.zip",
                "manifest.json"):
        assert (root / rel).is_file(), rel
    ds = json.loads((root / "Task03_Liver/dataset.json").read_text())
    assert ds["labels"] == {"0": "background", "1": "liver", "2": "cancer"}
    assert ds["numTraining"] == len(ds["training"]) == 2
    # IRCAD zips: extensionless slices, image_0 the most caudal; liver/ among other structures.
    folders = list_zip_folders(root / "3Dircadb1/3Dircadb1.1/MASKS_DICOM.zip")
    assert "MASKS_DICOM/liver" in folders
    import zipfile
    with zipfile.ZipFile(root / "3Dircadb1/3Dircadb1.1/PATIENT_DICOM.zip") as zf:
        names = zf.namelist()
        assert all(n.startswith("PATIENT_DICOM/image_") for n in names)
        z = [float(pydicom.dcmread(zf.open(f"PATIENT_DICOM/image_{k}")).ImagePositionPatient[2]) for k in (0, 1)]
        assert z[0] < z[1]
    # No temporary files left behind.
    assert not [p for p in root.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]


def test_cohort_every_case_readable(phantom_cohort):
    root, manifest = phantom_cohort
    for rec in manifest["cases"]:
        img, lab = _read_case(root, rec)
        assert same_grid(img, lab), rec["case_id"]
        liver = lab.array > 0
        assert liver.sum() * lab.voxel_volume_ml == pytest.approx(rec["liver_volume_ml"], rel=2e-3)
        assert -1024 <= img.array.min() and np.median(img.array[liver]) > 20
        assert rec["spacing"] == pytest.approx(list(img.spacing), rel=1e-4)
        values = set(np.unique(lab.array).tolist())
        assert values <= {0, *rec["label_values"].values(), 2}


def test_cohort_planted_cases(phantom_cohort):
    root, manifest = phantom_cohort
    cases = {c["case_id"]: c for c in manifest["cases"]}
    assert sorted(c["hard"] for c in cases.values() if c["hard"]) == \
        ["abnormal_position", "dense_lesion", "low_contrast"]
    # Exact duplicate: same voxels, other format, data type and header.
    [(orig_id, dup_id)] = manifest["duplicates"]
    orig, dup = cases[orig_id], cases[dup_id]
    assert orig["layout"] == "lits" and dup["layout"] == "msd"
    a_raw, b_raw = read_image(root / orig["files"]["image"]), read_image(root / dup["files"]["image"])
    assert a_raw.array.dtype == np.int16 and b_raw.array.dtype == np.float32
    assert a_raw.geometry.direction != b_raw.geometry.direction
    a, b = reorient_to_canonical(a_raw), reorient_to_canonical(b_raw)
    assert np.array_equal(a.array, b.array.astype(np.int16)) and same_grid(a, b)
    # One SIRT patient with two scans on two dates: same PatientID, other study.
    [(pid, ids)] = manifest["patients"].items()
    assert len(ids) == 2 and all(cases[i]["layout"] == "sirt" for i in ids)
    hdr = [pydicom.dcmread(next((root / cases[i]["files"]["image"]).iterdir()), stop_before_pixels=True)
           for i in ids]
    assert hdr[0].PatientID == hdr[1].PatientID == pid
    assert hdr[0].StudyDate != hdr[1].StudyDate and hdr[0].StudyInstanceUID != hdr[1].StudyInstanceUID
    assert hdr[0].RescaleIntercept == -1024


def test_cohort_dicom_values_match_generator(phantom_cohort):
    root, manifest = phantom_cohort
    for layout in ("sirt", "ircadb"):
        rec = next(c for c in manifest["cases"] if c["layout"] == layout and not c["hard"])
        img, lab = _read_case(root, rec)
        ref = generate_phantom(rec["seed"], size_scale=0.3, scan_index=rec["scan_index"])
        expect = ref.ct.array if layout == "sirt" else np.clip(ref.ct.array, -1024, 1024)
        assert np.array_equal(img.array, expect), layout
        assert np.array_equal(lab.array > 0, ref.label.array > 0), layout
        if layout == "sirt":
            assert np.allclose(img.geometry.origin, ref.ct.geometry.origin, atol=1e-3)


def test_cohort_rerun_skips_finished(phantom_cohort, tmp_path):
    root, manifest = phantom_cohort
    kw = {"n_cases": 3, "seed": 1, "layouts": ("lits", "sliver07"), "size_scale": 0.25, "hard_cases": ()}
    m1 = write_cohort(tmp_path, **kw)
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and p.name != "manifest.json"}
    m2 = write_cohort(tmp_path, **kw)
    assert m1["n_written"] == 3 and m2["n_written"] == 0
    assert stamp == {p: p.stat().st_mtime_ns for p in stamp}
    assert [c["case_id"] for c in m1["cases"]] == [c["case_id"] for c in m2["cases"]]
    assert m2["complete"] is True


def test_cohort_resumes_after_interruption(tmp_path):
    kw = {"n_cases": 3, "seed": 2, "layouts": ("msd",), "size_scale": 0.25, "hard_cases": (),
          "plant_duplicate": False}

    def crash_after_two(plan):
        if plan.case_id == "msd_001":
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        write_cohort(tmp_path, progress=crash_after_two, **kw)
    partial = json.loads((tmp_path / "manifest.json").read_text())
    assert partial["complete"] is False and len(partial["cases"]) == 2
    assert write_cohort(tmp_path, **kw)["n_written"] == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # rt-utils uses pydicom's old API
def test_sirt_rtstruct(phantom_sirt_rtstruct):
    sirt_root, manifest = phantom_sirt_rtstruct
    [rec] = manifest["cases"]
    patient = sirt_root.parent / Path(rec["files"]["image"]).parent
    rs = pydicom.dcmread(patient / "RTSTRUCT_liver.dcm")
    assert rs.Modality == "RTSTRUCT"
    assert [r.ROIName for r in rs.StructureSetROISequence] == ["Liver"]
    assert not (patient / "liver.nii.gz").exists()
    from rt_utils import RTStructBuilder
    rt = RTStructBuilder.create_from(dicom_series_path=str(patient / "CT"),
                                     rt_struct_path=str(patient / "RTSTRUCT_liver.dcm"))
    mask = rt.get_roi_mask_by_name("Liver").transpose(2, 0, 1)
    truth = generate_phantom(rec["seed"], size_scale=0.3).label.array > 0
    dice = 2 * np.sum(mask & truth) / (mask.sum() + truth.sum())
    assert dice > 0.9


def test_cli_make_phantoms(tmp_path, capsys):
    from livseg_pipeline.cli.make_phantoms import main
    out = tmp_path / "ph"
    assert main([str(out), "-n", "2", "--layouts", "msd", "sirt", "--size-scale", "0.25", "--hard"]) == 0
    text = capsys.readouterr().out
    assert "2 cases" in text and "manifest" in text
    m = json.loads((out / "manifest.json").read_text())
    assert [c["layout"] for c in m["cases"]] == ["msd", "sirt"]
    assert main([str(out), "-n", "0"]) == 2
    assert os.path.isdir(out / "SIRT")
