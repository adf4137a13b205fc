"""The source DICOM series that an RTSTRUCT or a DICOM SEG refers to: headers, slice order, grid.

RTSTRUCT and SEG objects reference every CT slice by its SOPInstanceUID, so the writers need the
series' headers in a known slice order, and a mask that lies on exactly that grid. This module

* reads the headers of one image series (pixel data is never decoded, so JPEG 2000 or other
  compressed series work without extra codecs),
* sorts the slices along the slice normal (ascending ``normal . ImagePositionPatient``, the order
  SimpleITK/GDCM uses, so index ``k`` here is ``z = k`` of ``read_image(folder).array``),
* describes the native grid as a :class:`Geometry` (x = columns, y = rows, z = sorted slices), and
* maps an :class:`Image` mask onto that grid (reorienting when it was reoriented, e.g. to LPS),
  refusing with a clear error when the mask lies on another grid.

Input files are only read, never modified; file names are the ones on disk, never from headers.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import generate_uid

from livseg_pipeline.io.image_io import Geometry, Image, list_dicom_series, same_grid


class DicomReferenceError(ValueError):
    """The DICOM series cannot be referenced (missing tags, inconsistent slices, wrong grid)."""


@dataclass(frozen=True)
class ReferencedSeries:
    """Headers of one CT series sorted along the slice normal, and its native voxel grid."""

    folder: Path
    files: tuple[Path, ...]
    datasets: tuple[pydicom.Dataset, ...]
    geometry: Geometry
    shape: tuple[int, int, int]  # (slices, rows, columns) = (z, y, x)
    slice_positions: np.ndarray  # mm along the slice normal, ascending

    @property
    def study_uid(self) -> str:
        return str(self.datasets[0].StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)

    @property
    def frame_of_reference_uid(self) -> str:
        return str(self.datasets[0].get("FrameOfReferenceUID", ""))

    @property
    def sop_instance_uids(self) -> list[str]:
        return [str(ds.SOPInstanceUID) for ds in self.datasets]

    @property
    def normal(self) -> np.ndarray:
        return self.geometry.direction_matrix[:, 2]

    def header_copies(self) -> list[pydicom.Dataset]:
        """Deep copies of the headers with absent type-2 patient/study attributes set empty, as the
        DICOM writers (rt-utils, highdicom) read them unconditionally; the files are untouched."""
        out = []
        for_uid = self.frame_of_reference_uid
        if not for_uid:
            # Required for CT, yet absent in some research data (3D-IRCADb). The derived UID is the
            # same for every object made from this series, so its RTSTRUCT and SEG agree.
            for_uid = generate_uid(entropy_srcs=["livseg frame of reference", self.series_uid])
            warnings.warn(f"{self.folder}: series has no FrameOfReferenceUID; the objects written use "
                          f"{for_uid} - a viewer may need the CT associated by hand", stacklevel=3)
        for ds in self.datasets:
            ds = copy.deepcopy(ds)
            for key in _TYPE2:
                if key not in ds:
                    setattr(ds, key, "")
            ds.FrameOfReferenceUID = for_uid
            out.append(ds)
        return out

    def empty_image(self, dtype: type = np.uint8) -> Image:
        return Image(np.zeros(self.shape, dtype=dtype), self.geometry, str(self.folder))


_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
          "AccessionNumber", "ReferringPhysicianName")
_REQUIRED = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID",
             "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")


def load_series(folder: str | Path, series_uid: str | None = None) -> ReferencedSeries:
    """Read and sort the headers of the image series in ``folder`` (one series, or ``series_uid``).

    Raises :class:`DicomReferenceError` (one line, naming the folder) when the folder holds no or
    several series without a choice, or the slices lack geometry tags or disagree with each other.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomReferenceError(f"{folder}: not a folder of DICOM files")
    series = list_dicom_series(folder)
    if series_uid is not None:
        series = [s for s in series if s.uid == series_uid]
        if not series:
            raise DicomReferenceError(f"{folder}: no DICOM image series with SeriesInstanceUID {series_uid}")
    if not series:
        raise DicomReferenceError(f"{folder}: no DICOM image series found")
    if len(series) > 1:
        listing = "; ".join(str(s) for s in series)
        raise DicomReferenceError(f"{folder}: holds {len(series)} DICOM series, pass series_uid: {listing}")
    files = [Path(f) for f in series[0].files]
    datasets = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as e:  # pydicom raises several types for broken files
            raise DicomReferenceError(f"{f}: cannot read DICOM header ({e})") from None
        _sop_from_file_meta(ds)
        missing = [k for k in _REQUIRED if k not in ds or ds[k].value in (None, "", b"")]
        if missing:
            raise DicomReferenceError(f"{f}: missing or empty DICOM tags {', '.join(missing)} (anonymised "
                                      "series?); a structure set cannot reference this slice")
        datasets.append(ds)
    return _sorted_series(folder, files, datasets)


def _sop_from_file_meta(ds: pydicom.Dataset) -> None:
    """Fill empty SOP Class/Instance UIDs from the file meta header, which by the standard holds the
    same values (some anonymisers blank only the dataset's copy)."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    for key, meta_key in (("SOPInstanceUID", "MediaStorageSOPInstanceUID"), ("SOPClassUID", "MediaStorageSOPClassUID")):
        if not str(ds.get(key, "") or "") and str(meta.get(meta_key, "") or ""):
            setattr(ds, key, str(meta[meta_key].value))


def _sorted_series(folder: Path, files: list[Path], datasets: list[pydicom.Dataset]) -> ReferencedSeries:
    iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    if abs(float(row_dir @ col_dir)) > 1e-3 or abs(np.linalg.norm(normal) - 1) > 1e-3:
        raise DicomReferenceError(f"{files[0]}: invalid ImageOrientationPatient {list(iop)}")
    rows, cols = int(datasets[0].Rows), int(datasets[0].Columns)
    pixel_spacing = [float(v) for v in datasets[0].PixelSpacing]
    for f, ds in zip(files, datasets):
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, float), iop, atol=1e-4):
            raise DicomReferenceError(f"{f}: ImageOrientationPatient differs from the other slices")
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise DicomReferenceError(f"{f}: {ds.Rows}x{ds.Columns} pixels, other slices {rows}x{cols}")
        if not np.allclose([float(v) for v in ds.PixelSpacing], pixel_spacing, rtol=1e-4):
            raise DicomReferenceError(f"{f}: PixelSpacing differs from the other slices")
    positions = np.array([float(np.asarray(ds.ImagePositionPatient, float) @ normal) for ds in datasets])
    order = np.argsort(positions, kind="stable")
    positions = positions[order]
    if len(positions) > 1 and np.min(np.diff(positions)) < 1e-3:
        raise DicomReferenceError(f"{folder}: DICOM series has duplicate slice positions")
    files = [files[i] for i in order]
    datasets = [datasets[i] for i in order]
    step = float(np.mean(np.diff(positions))) if len(positions) > 1 else float(
        datasets[0].get("SliceThickness", 1.0) or 1.0)
    direction = np.stack([row_dir, col_dir, normal], axis=1)  # columns = image x, y, z axes
    # PixelSpacing is (between rows, between columns) = (y, x).
    geometry = Geometry((pixel_spacing[1], pixel_spacing[0], step),
                        tuple(float(v) for v in datasets[0].ImagePositionPatient),
                        tuple(float(v) for v in direction.ravel()))
    return ReferencedSeries(folder, tuple(files), tuple(datasets), geometry, (len(datasets), rows, cols),
                            positions)


def _grids_match(a: Geometry, shape_a: tuple[int, ...], b: Geometry, shape_b: tuple[int, ...]) -> bool:
    """Same voxel centres: shape and direction equal, spacing within 1 %, origin within 0.1 voxel.
    (The tolerance on spacing admits series with slightly uneven slice gaps, whose mean spacing
    SimpleITK and this module may compute a little differently.)"""
    return same_grid(a, b, shape_a, shape_b, tol=1e-3, spacing_rtol=1e-2, origin_tol_voxels=0.1,
                     origin_slack_mm=1e-4)


def read_dicom_object(path: Path, sop_class_uid: str, kind: str, error: type[Exception],
                      modality: str | None = None) -> pydicom.Dataset:
    """Read a DICOM object of one SOP class (or, given ``modality``, of that Modality) or raise
    ``error`` with a one-line message naming the file."""
    if not path.is_file():
        raise error(f"{path}: no such file")
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # pydicom raises several types for non-DICOM input
        raise error(f"{path}: not a readable DICOM file ({e})") from None
    if str(ds.get("SOPClassUID", "")) != sop_class_uid and (modality is None or ds.get("Modality", "") != modality):
        raise error(f"{path}: not {kind} (Modality {ds.get('Modality', '?')})")
    return ds


def onto_grid(image: Image, target: Geometry, target_shape: tuple[int, ...]) -> Image:
    """``image`` on the grid ``target``, which must be its own grid or a reorientation of it (axes
    permuted/flipped, e.g. the canonical LPS); voxel values are moved, never interpolated.

    Anything else - another spacing, a crop, another series - raises :class:`DicomReferenceError`:
    silently resampling would attach a mask to the wrong anatomy.
    """
    if _grids_match(image.geometry, image.array.shape, target, target_shape):
        return Image(image.array, target, image.source)
    code = target.orientation_code
    if image.geometry.orientation_code != code:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            oriented = Image.from_sitk(sitk.DICOMOrient(image.to_sitk(), code), image.source)
        if _grids_match(oriented.geometry, oriented.array.shape, target, target_shape):
            return Image(oriented.array, target, image.source)
    g = image.geometry
    raise DicomReferenceError(
        f"{image.source or 'mask'}: grid (shape {image.array.shape}, spacing {_fmt(g.spacing)}, origin "
        f"{_fmt(g.origin)}) is not the grid (shape {tuple(target_shape)}, spacing {_fmt(target.spacing)}, origin "
        f"{_fmt(target.origin)}) nor a reorientation of it")


def mask_on_series_grid(mask: Image, series: ReferencedSeries) -> np.ndarray:
    """The mask as a bool array ``(slices, rows, columns)`` in the series' sorted slice order.

    ``mask`` must lie on the series' native grid (as ``read_image`` returns it) or a reorientation
    of it; see :func:`onto_grid`.
    """
    try:
        return onto_grid(mask, series.geometry, series.shape).array > 0
    except DicomReferenceError as e:
        raise DicomReferenceError(f"{series.folder} (series {series.series_uid}): mask does not fit: {e}") from None


def _fmt(v: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{x:.3f}" for x in v) + ")"
