"""RTSTRUCT and DICOM SEG delivery: round trips, UID references, orientation, errors, deliver_outputs.

Synthetic DICOM series are written with pydicom into tmp (non-square slices, anisotropic pixels,
a flipped orientation, shuffled file names); the real TotalSegmentator example series is used when
../shared is present.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from livseg_pipeline.clinical.deliver import deliver_outputs
from livseg_pipeline.clinical.dicom_series import DicomReferenceError, load_series
from livseg_pipeline.clinical.dicomseg import read_dicom_seg_mask, write_dicom_seg
from livseg_pipeline.clinical.report import ReportOptions
from livseg_pipeline.clinical.rtstruct import (
    RTStructError,
    list_rtstruct_rois,
    read_rtstruct_mask,
    rtstruct_to_mask_file,
    write_rtstruct,
)
from livseg_pipeline.io.image_io import Image, read_image, reorient, same_grid


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def write_ct_series(folder: Path, volume: np.ndarray, *, pixel_spacing=(0.8, 0.7), slice_step=2.5,
                    iop=(1, 0, 0, 0, 1, 0), origin=(-20.0, -15.0, 100.0), seed=0) -> dict:
    """Write ``volume`` (slices, rows, cols) int16 HU as a CT series; file names are shuffled."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    row_dir, col_dir = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row_dir, col_dir)
    names = rng.permutation(len(volume))
    for k, sl in enumerate(volume):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"im{names[k]:03d}"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.PatientName, ds.StudyDate, ds.StudyTime = "CT", "P1", "Test^P", "20250101", "1200"
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = "abdomen", 2, k + 1
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin) + k * slice_step * normal]
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
        ds.SliceThickness = float(slice_step)
        ds.Rows, ds.Columns = sl.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(sl.astype(np.int16)).tobytes()
        ds.save_as(folder / f"im{names[k]:03d}", enforce_file_format=True)
    return {"study": study, "series": series, "frame": frame}


def liver_like_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """An ellipsoid with a hole (a vessel) and a small separate island: contours with holes."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    cz, cy, cx = shape[0] / 2, shape[1] / 2, shape[2] / 2.6
    m = ((z - cz) / (shape[0] * 0.38)) ** 2 + ((y - cy) / (shape[1] * 0.35)) ** 2 \
        + ((x - cx) / (shape[2] * 0.3)) ** 2 < 1
    m &= ~(((y - cy) ** 2 + (x - cx) ** 2) < 9)  # a vessel through the middle: holes in every slice
    m[:, 4:8, shape[2] - 10: shape[2] - 5] = True  # an island
    m[0] = m[-1] = False
    return m


@pytest.fixture(scope="module")
def series_folders(tmp_path_factory) -> dict[str, Path]:
    """Two synthetic series: standard head-first orientation, and rotated 180 degrees in-plane."""
    root = tmp_path_factory.mktemp("dicom")
    rng = np.random.default_rng(1)
    vol = (rng.normal(40, 10, size=(12, 48, 64))).astype(np.int16)
    out = {}
    for name, iop in (("standard", (1, 0, 0, 0, 1, 0)), ("flipped", (-1, 0, 0, 0, -1, 0))):
        write_ct_series(root / name, vol, iop=iop)
        out[name] = root / name
    return out


@pytest.mark.parametrize("name", ["standard", "flipped"])
def test_rtstruct_round_trip_and_references(series_folders, tmp_path, name):
    folder = series_folders[name]
    ct = read_image(folder)
    m = liver_like_mask(ct.array.shape)
    out = write_rtstruct(ct.with_array(m.astype(np.uint8)), folder, tmp_path / "case_rtstruct.dcm")
    back = read_rtstruct_mask(out, folder)
    assert back.shape == m.shape
    assert dice(back, m) >= 0.97
    assert (back ^ m).sum() == 0  # contours traced through pixel centres come back exactly

    ds, series = pydicom.dcmread(out), load_series(folder)
    assert ds.Modality == "RTSTRUCT" and ds.StudyInstanceUID == series.study_uid
    assert ds.SeriesInstanceUID != series.series_uid
    fr = ds.ReferencedFrameOfReferenceSequence[0]
    assert fr.FrameOfReferenceUID == series.frame_of_reference_uid
    ref_series = fr.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == series.series_uid
    assert {c.ReferencedSOPInstanceUID for c in ref_series.ContourImageSequence} == set(series.sop_instance_uids)
    assert list_rtstruct_rois(out) == ["Liver"]
    # Every contour lies in the plane of the slice it references.
    ipp = {d.SOPInstanceUID: np.asarray(d.ImagePositionPatient, float) for d in series.datasets}
    for c in ds.ROIContourSequence[0].ContourSequence:
        pts = np.asarray(c.ContourData, float).reshape(-1, 3)
        plane = ipp[c.ContourImageSequence[0].ReferencedSOPInstanceUID] @ series.normal
        assert np.allclose(pts @ series.normal, plane, atol=1e-3)


def test_rtstruct_accepts_reoriented_mask_and_rejects_foreign_grid(series_folders, tmp_path):
    folder = series_folders["flipped"]
    ct = read_image(folder)
    m = liver_like_mask(ct.array.shape)
    lps = reorient(ct.with_array(m.astype(np.uint8)), "LPS")
    assert lps.geometry.orientation_code != ct.geometry.orientation_code
    out = write_rtstruct(lps, folder, tmp_path / "a.dcm")
    assert (read_rtstruct_mask(out, folder) ^ m).sum() == 0
    shifted = Image(m.astype(np.uint8), type(ct.geometry)(ct.spacing, (0.0, 0.0, 0.0), ct.geometry.direction))
    with pytest.raises(DicomReferenceError, match="not the grid"):
        write_rtstruct(shifted, folder, tmp_path / "b.dcm")
    assert not (tmp_path / "b.dcm").exists()


def test_rtstruct_reader_roi_choice_and_position_matching(series_folders, tmp_path):
    folder = series_folders["standard"]
    ct = read_image(folder)
    m = liver_like_mask(ct.array.shape)
    path = write_rtstruct(ct.with_array(m.astype(np.uint8)), folder, tmp_path / "rt.dcm")
    ds = pydicom.dcmread(path)
    # A second ROI whose name also matches "liver" (e.g. a planning structure), without image
    # references: the reader must place its contours by position.
    roi2 = copy.deepcopy(ds.StructureSetROISequence[0])
    roi2.ROINumber, roi2.ROIName = 2, "Liver_PTV"
    contours2 = copy.deepcopy(ds.ROIContourSequence[0])
    contours2.ReferencedROINumber = 2
    for c in contours2.ContourSequence:
        del c.ContourImageSequence
    ds.StructureSetROISequence.append(roi2)
    ds.ROIContourSequence.append(contours2)
    two = tmp_path / "two.dcm"
    ds.save_as(two)
    with pytest.raises(RTStructError, match="2 ROIs match 'liver'.*'Liver'.*'Liver_PTV'"):
        read_rtstruct_mask(two, folder)
    with pytest.raises(RTStructError, match="no ROI name matches 'spleen'"):
        read_rtstruct_mask(two, folder, roi_regex="spleen")
    assert (read_rtstruct_mask(two, folder, roi_regex="^liver$") ^ m).sum() == 0
    assert (read_rtstruct_mask(two, folder, roi_regex="ptv") ^ m).sum() == 0
    with pytest.raises(RTStructError, match="not an RTSTRUCT"):
        read_rtstruct_mask(next(folder.iterdir()), folder)


def test_folder_with_two_series(series_folders, tmp_path):
    both = tmp_path / "both"
    both.mkdir()
    for name, folder in series_folders.items():
        for f in folder.iterdir():
            shutil.copy(f, both / f"{name}_{f.name}")
    ct = read_image(series_folders["standard"])
    m = liver_like_mask(ct.array.shape)
    with pytest.raises(DicomReferenceError, match="holds 2 DICOM series"):
        write_rtstruct(ct.with_array(m.astype(np.uint8)), both, tmp_path / "x.dcm")
    uid = load_series(series_folders["standard"]).series_uid
    out = write_rtstruct(ct.with_array(m.astype(np.uint8)), both, tmp_path / "x.dcm", series_uid=uid)
    shutil.copy(out, both / "rtstruct")  # the structure set may sit beside the images
    assert (read_rtstruct_mask(both / "rtstruct", both) ^ m).sum() == 0  # picks the referenced series


@pytest.mark.parametrize("name", ["standard", "flipped"])
def test_dicom_seg_exact_round_trip_and_references(series_folders, tmp_path, name):
    import highdicom as hd

    folder = series_folders[name]
    ct = read_image(folder)
    m = liver_like_mask(ct.array.shape)
    out = write_dicom_seg(ct.with_array(m.astype(np.uint8)), folder, tmp_path / "case_seg.dcm")
    back = read_dicom_seg_mask(out, folder)
    assert back.dtype == bool and np.array_equal(back, m)

    series = load_series(folder)
    seg = hd.seg.segread(out)
    assert seg.StudyInstanceUID == series.study_uid and seg.FrameOfReferenceUID == series.frame_of_reference_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    referenced = {uid[2] for uid in seg.get_source_image_uids()}
    assert referenced <= set(series.sop_instance_uids)
    with_liver = {series.sop_instance_uids[k] for k in np.nonzero(m.any(axis=(1, 2)))[0]}
    frame_refs = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                  for f in seg.PerFrameFunctionalGroupsSequence}
    assert frame_refs == with_liver
    desc = seg.get_segment_description(1)
    assert desc.segment_label == "Liver"
    assert desc.segmented_property_category.value == "123037004"
    assert desc.segmented_property_type.value == "10200004"
    assert desc.segmented_property_type.scheme_designator == "SCT"


@pytest.fixture(scope="module")
def totalseg_series(totalseg_dir, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """The real example series, with the UIDs its anonymiser blanked filled in (pixel data untouched),
    and its liver (label 5) resampled physically onto the DICOM grid."""
    src = totalseg_dir / "example_ct_dicom"
    dst = tmp_path_factory.mktemp("ts_dicom")
    study, series = generate_uid(), generate_uid()
    for i, f in enumerate(sorted(src.iterdir())):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.save_as(dst / f"slice{i:03d}", enforce_file_format=True)
    ct = read_image(dst)
    seg = sitk.ReadImage(str(totalseg_dir / "example_seg_dicom.nii.gz"))
    res = sitk.Resample(seg, ct.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor, 0, seg.GetPixelID())
    return dst, sitk.GetArrayFromImage(res) == 5


def test_real_series_rtstruct_and_seg(totalseg_dir, totalseg_series, tmp_path):
    folder, liver = totalseg_series
    ct = read_image(folder)
    assert abs(liver.sum() * ct.voxel_volume_ml - 699.4) < 1.0  # the README's liver volume
    mask = ct.with_array(liver.astype(np.uint8))
    rt = write_rtstruct(mask, folder, tmp_path / "ts_rtstruct.dcm")
    back = read_rtstruct_mask(rt, folder)
    assert dice(back, liver) >= 0.97
    seg = write_dicom_seg(mask, folder, tmp_path / "ts_seg.dcm")
    assert np.array_equal(read_dicom_seg_mask(seg, folder), liver)
    # The original files have blank Study/Series UIDs: nothing could reference them.
    with pytest.raises(DicomReferenceError, match="StudyInstanceUID, SeriesInstanceUID"):
        write_rtstruct(mask, totalseg_dir / "example_ct_dicom", tmp_path / "no.dcm")


def test_deliver_outputs_with_dicom(series_folders, tmp_path):
    folder = series_folders["standard"]
    ct = read_image(folder)
    m = liver_like_mask(ct.array.shape)
    mask = ct.with_array(m.astype(np.uint8))
    out_dir = tmp_path / "out"
    res = deliver_outputs(ct, mask, out_dir, "case_007", output_types=("nifti", "rtstruct", "dicomseg"),
                          dicom_folder=folder, preview=True,
                          report_options=ReportOptions(target_dose_gy=120.0, lung_shunt_fraction=0.1),
                          removed_components_ml=[3.0])
    assert set(res["paths"]) == {"report_json", "report_txt", "overlay", "rtstruct", "dicomseg"}
    assert sorted(os.listdir(out_dir)) == ["case_007_overlay.png", "case_007_report.json", "case_007_report.txt",
                                           "case_007_rtstruct.dcm", "case_007_seg.dcm"]
    assert (read_rtstruct_mask(out_dir / "case_007_rtstruct.dcm", folder) ^ m).sum() == 0
    assert np.array_equal(read_dicom_seg_mask(out_dir / "case_007_seg.dcm", folder), m)
    # An (adjusted) structure set back to a NIfTI mask on the CT grid, for lvs_evaluate --compare.
    nii = read_image(rtstruct_to_mask_file(out_dir / "case_007_rtstruct.dcm", folder, tmp_path / "adj.nii.gz"))
    assert np.array_equal(nii.array > 0, m) and same_grid(nii, ct)
    assert "volume" in res["qc"]["flagged"]  # a tiny synthetic "liver"
    vol = m.sum() * ct.voxel_volume_ml
    assert res["report"]["volume_ml"] == pytest.approx(vol, abs=1e-3)
    assert res["report"]["activity_mird_gbq"] == pytest.approx(120 * vol * 1.05e-3 / (49.67 * 0.9), abs=1e-4)


def test_deliver_outputs_refuses_before_writing(series_folders, tmp_path):
    folder = series_folders["standard"]
    ct = read_image(folder)
    mask = ct.with_array(liver_like_mask(ct.array.shape).astype(np.uint8))
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError, match="'rtstruct' needs a DICOM series"):
        deliver_outputs(ct, mask, out_dir, "c1", output_types=("rtstruct",))
    with pytest.raises(ValueError, match="unknown output type"):
        deliver_outputs(ct, mask, out_dir, "c1", output_types=("rtss",), dicom_folder=folder)
    with pytest.raises(ValueError, match="not usable as a file name"):
        deliver_outputs(ct, mask, out_dir, "../c1")
    other = read_image(series_folders["flipped"])
    with pytest.raises(DicomReferenceError):
        deliver_outputs(other, other.with_array(mask.array), out_dir, "c1", output_types=("dicomseg",),
                        dicom_folder=folder)
    assert not out_dir.exists() or not any(out_dir.iterdir())
