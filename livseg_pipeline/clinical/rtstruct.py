"""DICOM RTSTRUCT: write the liver as a "Liver" ROI, and read any ROI back as a voxel mask.

Writing uses rt-utils for the structure set skeleton and the per-slice contours (OpenCV border
following: one closed planar contour per region border and per hole border, vertices on the centres
of the border pixels). Two rt-utils 1.2.x shortcuts are corrected after the fact so the contours sit
exactly on the slices in every viewer: the contour ``z`` is taken from each slice's own
ImagePositionPatient (rt-utils interpolates a mean slice step) and in-plane coordinates use the
column spacing along rows (rt-utils uses the row spacing for both). The series headers are read and
sorted by :mod:`livseg_pipeline.clinical.dicom_series`, never through rt-utils' folder walk, so a
folder with several series or compressed (JPEG 2000) pixel data works.

Reading (:func:`read_rtstruct`, :func:`read_rtstruct_mask`) is independent of rt-utils and meant for
any RTSTRUCT (MIM, 3D Slicer, Eclipse, ...), e.g. the SIRT masks that dataset conversion imports:

* the ROI is chosen by a case-insensitive regular expression on ROIName; none or several matches
  are an error listing the names;
* each contour is placed on its slice by its referenced SOPInstanceUID, or, when the reference is
  absent or unknown, by its position along the slice normal (within half a slice step);
* contours on one slice are combined by the even-odd rule (a contour inside another is a hole);
  a pixel is inside when its centre is, and for contours traced through pixel centres (all vertices
  on integer pixel positions, as rt-utils and many tools write them) the traced border pixels count
  as inside too, so a write/read round trip gives the mask back.

The mask comes back as a bool array ``(z, y, x)`` on the grid that ``read_image(dicom_folder)``
returns (slices sorted along the slice normal). :func:`rtstruct_to_mask_file` writes it as a mask
file, e.g. to compare observers' adjusted structures with ``lvs_evaluate --compare``.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from skimage.draw import line as draw_line
from skimage.draw import polygon_perimeter

from livseg_pipeline.clinical.dicom_series import (
    DicomReferenceError,
    ReferencedSeries,
    load_series,
    mask_on_series_grid,
    read_dicom_object,
)
from livseg_pipeline.io.image_io import Image
from livseg_pipeline.utils.files import atomic_path

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
LIVER_COLOR = (221, 130, 101)  # Slicer's "liver" colour (GenericAnatomyColors)


class RTStructError(ValueError):
    """An RTSTRUCT cannot be written or read; the message names the file and the reason."""


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def write_rtstruct(mask: Image, dicom_folder: str | Path, out_path: str | Path, *, series_uid: str | None = None,
                   roi_name: str = "Liver", color: Sequence[int] = LIVER_COLOR,
                   series_description: str = "livseg liver (automatic, unapproved)") -> Path:
    """Write ``mask`` (on the series' grid or a reorientation of it) as an RTSTRUCT with one ROI.

    The structure set references the study, the series, the frame of reference and every slice's
    SOPInstanceUID of the source series, and is marked ``UNAPPROVED`` / ``AUTOMATIC`` so that
    reviewers see it still needs a clinician's check. Written atomically to ``out_path``.
    """
    from rt_utils import RTStruct, ds_helper, image_helper

    out_path = Path(out_path)
    series = load_series(dicom_folder, series_uid)
    native = mask_on_series_grid(mask, series)  # (slices, rows, cols)
    headers = series.header_copies()
    # rt-utils uses pydicom attributes deprecated in pydicom 3 and prints a note for empty masks.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        rt = RTStruct(headers, ds_helper.create_rtstruct_dataset(headers))
        rt.add_roi(mask=np.ascontiguousarray(np.transpose(native, (1, 2, 0))), name=roi_name,
                   color=[int(c) for c in color], approximate_contours=True,
                   roi_generation_algorithm="AUTOMATIC")
    _fix_contour_geometry(rt.ds, series, image_helper.get_pixel_to_patient_transformation_matrix(headers))
    _describe(rt.ds, series, roi_name, series_description)
    with atomic_path(out_path) as tmp:
        rt.ds.save_as(tmp, enforce_file_format=True)
    return out_path


def _fix_contour_geometry(ds: pydicom.Dataset, series: ReferencedSeries, rtutils_matrix: np.ndarray) -> None:
    """Recompute each contour point from its pixel position with the slice's own geometry."""
    inverse = np.linalg.inv(rtutils_matrix.astype(float))
    index_of = {uid: k for k, uid in enumerate(series.sop_instance_uids)}
    d = series.geometry.direction_matrix
    row_dir, col_dir = d[:, 0], d[:, 1]
    sx, sy = series.geometry.spacing[0], series.geometry.spacing[1]
    for roi in ds.ROIContourSequence:
        for contour in roi.ContourSequence:
            k = index_of[str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)]
            pts = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            pix = (np.c_[pts, np.ones(len(pts))] @ inverse.T)[:, :2]
            col, row = np.round(pix[:, 0]), np.round(pix[:, 1])
            ipp = np.asarray(series.datasets[k].ImagePositionPatient, dtype=float)
            fixed = ipp + np.outer(col * sx, row_dir) + np.outer(row * sy, col_dir)
            contour.ContourData = [f"{v:.4f}".rstrip("0").rstrip(".") for v in fixed.ravel()]
            contour.NumberOfContourPoints = len(fixed)


def _describe(ds: pydicom.Dataset, series: ReferencedSeries, roi_name: str, series_description: str) -> None:
    src = series.datasets[0]
    ds.Manufacturer = "livseg"
    ds.ManufacturerModelName = "livseg_pipeline"
    ds.InstitutionName = src.get("InstitutionName", "")
    ds.StructureSetLabel = "livseg"
    ds.StructureSetName = roi_name
    ds.SeriesDescription = series_description
    ds.SeriesNumber = 9901
    ds.AccessionNumber = src.get("AccessionNumber", "")
    ds.ReferringPhysicianName = src.get("ReferringPhysicianName", "")
    ds.OperatorsName = ""
    for obs in ds.RTROIObservationsSequence:
        obs.ROIObservationLabel = roi_name
        obs.RTROIInterpretedType = "ORGAN"
        obs.ROIObservationDescription = "automatic segmentation by livseg; review before clinical use"
        obs.ROIInterpreter = ""


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
def _read_structure_set(path: Path) -> pydicom.Dataset:
    ds = read_dicom_object(path, RTSTRUCT_SOP_CLASS, "an RTSTRUCT", RTStructError, modality="RTSTRUCT")
    if "StructureSetROISequence" not in ds or "ROIContourSequence" not in ds:
        raise RTStructError(f"{path}: RTSTRUCT without StructureSetROISequence/ROIContourSequence")
    return ds


def list_rtstruct_rois(rtstruct_path: str | Path) -> list[str]:
    """The ROI names in an RTSTRUCT, in file order."""
    ds = _read_structure_set(Path(rtstruct_path))
    return [str(r.get("ROIName", "")) for r in ds.StructureSetROISequence]


def referenced_series_uids(rtstruct_path: str | Path) -> list[str]:
    """SeriesInstanceUIDs the RTSTRUCT says its contours are drawn on."""
    ds = _read_structure_set(Path(rtstruct_path))
    return _referenced_series(ds)


def _referenced_series(ds: pydicom.Dataset) -> list[str]:
    uids = []
    for fr in ds.get("ReferencedFrameOfReferenceSequence", []):
        for st in fr.get("RTReferencedStudySequence", []):
            for se in st.get("RTReferencedSeriesSequence", []):
                if "SeriesInstanceUID" in se:
                    uids.append(str(se.SeriesInstanceUID))
    return uids


def _choose_roi(ds: pydicom.Dataset, path: Path, roi_regex: str) -> pydicom.Dataset:
    rois = list(ds.StructureSetROISequence)
    pattern = re.compile(roi_regex, re.IGNORECASE)
    hits = [r for r in rois if pattern.search(str(r.get("ROIName", "")))]
    names = ", ".join(repr(str(r.get("ROIName", ""))) for r in rois) or "none"
    if not hits:
        raise RTStructError(f"{path}: no ROI name matches {roi_regex!r} (ROIs: {names})")
    if len(hits) > 1:
        matched = ", ".join(repr(str(r.ROIName)) for r in hits)
        raise RTStructError(f"{path}: {len(hits)} ROIs match {roi_regex!r} ({matched}); "
                            f"use a stricter roi_regex such as '^{re.escape(str(hits[0].ROIName))}$'")
    return hits[0]


def read_rtstruct(rtstruct_path: str | Path, dicom_folder: str | Path, roi_regex: str = "liver", *,
                  series_uid: str | None = None) -> Image:
    """Rasterise the one ROI whose name matches ``roi_regex`` onto the referenced CT series.

    ``dicom_folder`` holds the CT series (it may also hold the RTSTRUCT and other series; the one the
    RTSTRUCT references is used unless ``series_uid`` is given). Returns a uint8 0/1 :class:`Image`
    on the series' native grid, which is the grid of ``read_image(dicom_folder)``.
    """
    path = Path(rtstruct_path)
    ds = _read_structure_set(path)
    roi = _choose_roi(ds, path, roi_regex)
    if series_uid is None:
        refs = _referenced_series(ds)
        series_uid = refs[0] if len(set(refs)) == 1 else None
        try:
            series = load_series(dicom_folder, series_uid)
        except DicomReferenceError:
            if series_uid is None:
                raise
            raise RTStructError(f"{path}: references series {series_uid}, which is not in {dicom_folder}") from None
    else:
        series = load_series(dicom_folder, series_uid)
    roi_for = str(roi.get("ReferencedFrameOfReferenceUID", ""))
    if roi_for and series.frame_of_reference_uid and roi_for != series.frame_of_reference_uid:
        raise RTStructError(f"{path}: ROI {roi.ROIName!r} is in frame of reference {roi_for}, the series in "
                            f"{dicom_folder} in {series.frame_of_reference_uid}")
    contours = [c for rc in ds.ROIContourSequence if str(rc.get("ReferencedROINumber")) == str(roi.ROINumber)
                for c in rc.get("ContourSequence", [])]
    mask = _rasterise(contours, series, path)
    return Image(mask.astype(np.uint8), series.geometry, str(path))


def read_rtstruct_mask(rtstruct_path: str | Path, dicom_folder: str | Path, roi_regex: str = "liver", *,
                       series_uid: str | None = None) -> np.ndarray:
    """Bool mask ``(z, y, x)`` of the ROI matching ``roi_regex`` (see :func:`read_rtstruct`).

    Errors (one line, naming the file): not an RTSTRUCT; no ROI or several ROIs match (the names are
    listed); the referenced series is not in ``dicom_folder``; another frame of reference.
    """
    return read_rtstruct(rtstruct_path, dicom_folder, roi_regex, series_uid=series_uid).array > 0


def rtstruct_to_mask_file(rtstruct_path: str | Path, dicom_folder: str | Path, out_path: str | Path,
                          roi_regex: str = "liver", *, series_uid: str | None = None) -> Path:
    """Rasterise one ROI (see :func:`read_rtstruct`) and write it as a uint8 0/1 mask file (format
    from the suffix, e.g. ``.nii.gz``) on the CT grid, e.g. to compare observers' adjusted
    structures with ``lvs_evaluate --compare``. Atomic."""
    from livseg_pipeline.io.image_io import write_image

    return write_image(read_rtstruct(rtstruct_path, dicom_folder, roi_regex, series_uid=series_uid), out_path)


def _contour_points(contour: pydicom.Dataset) -> np.ndarray:
    """ContourData as an (n, 3) float array. The raw text is parsed directly: pydicom's per-value
    DS validation costs seconds on the ~10^5 numbers of a liver structure."""
    raw = contour.get_item(0x30060050)
    value = getattr(raw, "value", None)
    if isinstance(value, bytes):
        try:
            return np.array(value.replace(b"\0", b"").split(b"\\"), dtype=float).reshape(-1, 3)
        except ValueError:
            pass  # unusual formatting: let pydicom parse it
    return np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)


def even_odd_fill(polygons: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centres lie inside an odd number of the closed ``(rows, cols)`` polygons.

    A scanline fill, linear in the number of edge crossings (skimage's point-in-polygon test is
    quadratic and took ~0.1 s per liver contour).

    >>> square = (np.array([0.5, 0.5, 3.5, 3.5]), np.array([0.5, 3.5, 3.5, 0.5]))
    >>> hole = (np.array([1.5, 1.5, 2.5, 2.5]), np.array([1.5, 2.5, 2.5, 1.5]))
    >>> even_odd_fill([square, hole], (5, 5)).astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 1, 0, 1, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 0, 0, 0]])
    """
    ny, nx = shape
    rows, xs = [], []
    for row, col in polygons:
        r0, c0 = np.asarray(row, float), np.asarray(col, float)
        r1, c1 = np.roll(r0, -1), np.roll(c0, -1)
        keep = r0 != r1  # horizontal edges cross no scanline
        r0, r1, c0, c1 = r0[keep], r1[keep], c0[keep], c1[keep]
        # Scanline k (pixel centres at row k) crosses an edge when min(r0, r1) <= k < max(r0, r1).
        lo = np.clip(np.ceil(np.minimum(r0, r1)), 0, ny).astype(np.int64)
        hi = np.clip(np.ceil(np.maximum(r0, r1)), 0, ny).astype(np.int64)
        n = np.maximum(hi - lo, 0)
        edge = np.repeat(np.arange(len(n)), n)
        k = lo[edge] + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        rows.append(k)
        xs.append(c0[edge] + (k - r0[edge]) * (c1[edge] - c0[edge]) / (r1[edge] - r0[edge]))
    toggles = np.zeros((ny, nx + 1), np.int32)
    if rows:
        k, x = np.concatenate(rows), np.concatenate(xs)
        # Each crossing flips every pixel centre at or right of it.
        np.add.at(toggles, (k, np.clip(np.ceil(x), 0, nx).astype(np.int64)), 1)
    return (np.cumsum(toggles, axis=1)[:, :nx] % 2).astype(bool)


def _rasterise(contours: list[pydicom.Dataset], series: ReferencedSeries, path: Path) -> np.ndarray:
    nz, ny, nx = series.shape
    border = np.zeros(series.shape, dtype=bool)
    per_slice: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    index_of = {uid: k for k, uid in enumerate(series.sop_instance_uids)}
    d = series.geometry.direction_matrix
    row_dir, col_dir, normal = d[:, 0], d[:, 1], d[:, 2]
    sx, sy = series.geometry.spacing[0], series.geometry.spacing[1]
    half_step = 0.5 * abs(series.geometry.spacing[2])
    ipp = [np.asarray(ds.ImagePositionPatient, dtype=float) for ds in series.datasets]
    off_slice = 0
    for c in contours:
        if str(c.get("ContourGeometricType", "CLOSED_PLANAR")).upper() != "CLOSED_PLANAR":
            continue  # points and open polylines enclose no volume
        pts = _contour_points(c)
        k = None
        for ref in c.get("ContourImageSequence", []):
            k = index_of.get(str(ref.get("ReferencedSOPInstanceUID", "")))
        if k is None:
            z = float(np.mean(pts @ normal))
            k = int(np.argmin(np.abs(series.slice_positions - z)))
            if abs(series.slice_positions[k] - z) > half_step:
                off_slice += 1
                continue
        rel = pts - ipp[k]
        col, row = rel @ row_dir / sx, rel @ col_dir / sy
        if len(pts) >= 3:
            per_slice.setdefault(k, []).append((row, col))
        if np.allclose(col, np.round(col), atol=1e-3) and np.allclose(row, np.round(row), atol=1e-3):
            ri, ci = np.round(row).astype(int), np.round(col).astype(int)
            if len(pts) >= 3:
                rr, cc = polygon_perimeter(ri, ci, shape=(ny, nx))
            else:  # a one- or two-pixel region: skimage cannot trace a perimeter through < 3 points
                rr, cc = draw_line(ri[0], ci[0], ri[-1], ci[-1])
                inside = (rr >= 0) & (rr < ny) & (cc >= 0) & (cc < nx)
                rr, cc = rr[inside], cc[inside]
            border[k, rr, cc] = True
    if off_slice:
        warnings.warn(f"{path}: {off_slice} contours lie between or outside the slices of the series and were "
                      "ignored", stacklevel=3)
    for k, polygons in per_slice.items():
        border[k] |= even_odd_fill(polygons, (ny, nx))
    return border
