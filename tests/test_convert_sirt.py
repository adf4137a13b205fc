"""SIRT exports with the liver as a DICOM RTSTRUCT: rasterised onto the CT grid; ambiguous ROIs and
missing masks are clear one-line failures of that case only. (Two scans of one SIRT patient landing in
one fold is tested on the phantom cohort, test_convert_phantom.py.)"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pydicom
import pytest

from dataset_conversion import CONVERTERS, run_conversion


def _add_second_liver_roi(rtstruct: Path) -> None:
    ds = pydicom.dcmread(rtstruct)
    roi = copy.deepcopy(ds.StructureSetROISequence[0])
    roi.ROINumber, roi.ROIName = 99, "Liver_old"
    ds.StructureSetROISequence.append(roi)
    contour = copy.deepcopy(ds.ROIContourSequence[0])
    contour.ReferencedROINumber = 99
    ds.ROIContourSequence.append(contour)
    pydicom.dcmwrite(rtstruct, ds, enforce_file_format=True)


def test_rtstruct_masks(phantom_sirt_rtstruct, tmp_path: Path, monkeypatch, capsys) -> None:
    sirt_root, manifest = phantom_sirt_rtstruct
    sirt = tmp_path / "SIRT"
    shutil.copytree(sirt_root, sirt)
    scans = sorted(p for p in sirt.iterdir() if p.is_dir())
    assert len(scans) == 1
    # a third scan folder: ambiguous liver ROIs; a fourth: no mask at all
    ambiguous = sirt / "LVS-P900_20200101"
    shutil.copytree(scans[0], ambiguous)
    _add_second_liver_roi(next(ambiguous.glob("*.dcm")))
    no_mask = sirt / "LVS-P901_20200101"
    shutil.copytree(scans[0] / "CT", no_mask / "CT")

    monkeypatch.setenv("LVS_RAW", str(tmp_path / "raw"))
    report = run_conversion(CONVERTERS["sirt"](), sirt, 400, "Sirt", num_processes=2, verbose=True)
    out = capsys.readouterr().out
    failed = {c: r["reason"] for c, r in report["cases"].items() if r["status"] == "failed"}
    assert set(failed) == {"sirt_LVS-P900_20200101", "sirt_LVS-P901_20200101"}
    assert "2 ROIs match" in failed["sirt_LVS-P900_20200101"] and "Liver_old" in failed["sirt_LVS-P900_20200101"]
    assert "no liver mask" in failed["sirt_LVS-P901_20200101"]
    assert all(reason in out for reason in failed.values())

    ds_dir = tmp_path / "raw" / "Dataset400_Sirt"
    fp = json.loads((ds_dir / "fingerprint.json").read_text())["cases"]
    for rec in manifest["cases"]:
        case = f"sirt_{rec['native_id']}"
        # contours drawn through border pixel centres come back to the same voxels
        assert fp[case]["liver_volume_ml"] == pytest.approx(rec["liver_volume_ml"], rel=0.01)
        assert fp[case]["liver_side"] == "right"
    # the patient id comes from the DICOM header, not from the folder name
    ds = json.loads((ds_dir / "dataset.json").read_text())["cases"]
    assert {r["patient_id"] for r in ds.values()} == {f"sirt_{manifest['cases'][0]['patient_id']}"}


def _second_series(ct: Path, out: Path) -> None:
    """Every other slice of ``ct`` as another series (a thicker reconstruction) beside it."""
    uid = pydicom.uid.generate_uid()
    for k, f in enumerate(sorted(ct.iterdir())[::2]):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID, ds.SeriesNumber = uid, 99
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        pydicom.dcmwrite(out / f"thick_{k:04d}.dcm", ds, enforce_file_format=True)


def test_several_series_the_mask_picks_one(phantom_cohort, tmp_path: Path, monkeypatch) -> None:
    """A CT folder with a second reconstruction: the series on the mask's grid is taken; when the mask
    fits none, the case fails naming the series."""
    cohort, manifest = phantom_cohort
    recs = [r for r in manifest["cases"] if r["layout"] == "sirt"]
    sirt = tmp_path / "SIRT"
    good = sirt / "two_series"
    shutil.copytree(cohort / Path(recs[0]["files"]["image"]).parent, good)
    _second_series(good / "CT", good / "CT")
    wrong = sirt / "mask_of_another_scan"
    shutil.copytree(good / "CT", wrong / "CT")
    other_mask = (cohort / recs[-1]["files"]["label"])
    shutil.copy(other_mask, wrong / "liver.nii.gz")

    monkeypatch.setenv("LVS_RAW", str(tmp_path / "raw"))
    report = run_conversion(CONVERTERS["sirt"](), sirt, 401, "Series", num_processes=1, verbose=False)
    status = {c: (r["status"], r["reason"]) for c, r in report["cases"].items()}
    assert status["sirt_two_series"][0] == "converted"
    assert status["sirt_mask_of_another_scan"][0] == "failed"
    assert "2 CT series" in status["sirt_mask_of_another_scan"][1]
    fp = json.loads((tmp_path / "raw" / "Dataset401_Series" / "fingerprint.json").read_text())["cases"]
    assert fp["sirt_two_series"]["liver_volume_ml"] == pytest.approx(recs[0]["liver_volume_ml"], rel=1e-3)
