"""Reading and writing CT images and masks, with their geometry.

One module, SimpleITK underneath. Conventions used everywhere in livseg:

* ``Image.array`` is a numpy array in SimpleITK's order ``(z, y, x)``.
* ``Geometry.spacing`` / ``origin`` are in ITK order ``(x, y, z)``, in mm, and ``direction`` is the
  row-major 3x3 direction cosine matrix (9 floats), in the LPS patient frame as ITK uses it.

Formats: NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mha``, ``.mhd`` + ``.raw``), NRRD and DICOM
series folders (files with or without extension). Writes are atomic.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from livseg_pipeline.utils.files import atomic_path

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


class ImageReadError(ValueError):
    """An input could not be read; the message names the file and the reason in one line."""


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid lies in patient space (ITK conventions, x/y/z order, mm)."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def orientation_code(self) -> str:
        """Three-letter ITK/DICOM orientation code; ``'LPS'`` for the identity direction.

        >>> Geometry((1, 1, 1)).orientation_code
        'LPS'
        """
        return sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(list(self.direction))

    def to_dict(self) -> dict:
        return {"spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        return cls(tuple(float(v) for v in d["spacing"]), tuple(float(v) for v in d["origin"]),
                   tuple(float(v) for v in d["direction"]))


@dataclass
class Image:
    """A voxel array ``(z, y, x)`` with its geometry; ``source`` is the path it was read from."""

    array: np.ndarray
    geometry: Geometry
    source: str | None = field(default=None, compare=False)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.geometry.spacing

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        s = self.geometry.spacing
        return (s[2], s[1], s[0])

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.geometry.spacing)) / 1000.0

    def to_sitk(self) -> sitk.Image:
        img = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        img.SetSpacing([float(v) for v in self.geometry.spacing])
        img.SetOrigin([float(v) for v in self.geometry.origin])
        img.SetDirection([float(v) for v in self.geometry.direction])
        return img

    @classmethod
    def from_sitk(cls, img: sitk.Image, source: str | None = None) -> Image:
        if img.GetDimension() != 3:
            raise ImageReadError(f"{source or 'image'}: expected a 3D image, got {img.GetDimension()}D")
        geom = Geometry(tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection()))
        return cls(sitk.GetArrayFromImage(img), geom, source)

    def with_array(self, array: np.ndarray) -> Image:
        """Same grid, other voxel values (e.g. a mask for this image)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} differs from image shape {self.array.shape}")
        return Image(array, self.geometry, self.source)


# ----------------------------------------------------------------------------------------------
# DICOM
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DicomSeries:
    """One series found in a folder: its UID, a short description and its files (sorted)."""

    uid: str
    files: tuple[str, ...]
    description: str = ""
    modality: str = ""

    def __str__(self) -> str:
        return f"{self.uid} ({self.modality or '?'}, {len(self.files)} files, {self.description!r})"


def is_dicom_file(path: str | Path) -> bool:
    """True for a file with the DICOM preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def list_dicom_series(folder: str | Path) -> list[DicomSeries]:
    """All image series in ``folder`` (not recursive), files sorted along the slice normal.

    Only pixel-data series are returned (RTSTRUCT and SEG objects are skipped). File names are
    never taken from headers; only the names on disk are used.
    """
    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    series: list[DicomSeries] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        uids = reader.GetGDCMSeriesIDs(str(folder)) or []
    for uid in uids:
        files = reader.GetGDCMSeriesFileNames(str(folder), uid)
        if not files:
            continue
        desc, modality = "", ""
        try:
            r = sitk.ImageFileReader()
            r.SetFileName(files[0])
            r.ReadImageInformation()
            modality = r.GetMetaData("0008|0060").strip() if r.HasMetaDataKey("0008|0060") else ""
            desc = r.GetMetaData("0008|103e").strip() if r.HasMetaDataKey("0008|103e") else ""
        except RuntimeError:
            pass
        if modality in ("RTSTRUCT", "SEG", "RTPLAN", "RTDOSE", "SR", "PR"):
            continue
        series.append(DicomSeries(uid, tuple(files), desc, modality))
    return series


def _check_dicom_geometry(files: Sequence[str], folder: Path) -> None:
    """Reject gantry tilt and warn on non-uniform slice spacing (which resampling would hide)."""
    import pydicom

    positions, normal = [], None
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        ipp = getattr(ds, "ImagePositionPatient", None)
        iop = getattr(ds, "ImageOrientationPatient", None)
        if ipp is None or iop is None:
            return
        if normal is None:
            row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
            normal = np.cross(row, col)
            first_ipp = np.asarray(ipp, float)
        positions.append(np.asarray(ipp, float))
    if normal is None or len(positions) < 3:
        return
    pos = np.asarray(positions)
    along = pos @ normal
    order = np.argsort(along)
    pos, along = pos[order], along[order]
    # Gantry tilt: slice origins do not move along the slice normal.
    step = pos[-1] - pos[0]
    length = np.linalg.norm(step)
    if length > 0:
        cosang = abs(float(step @ normal) / length)
        if cosang < 0.999:
            angle = float(np.degrees(np.arccos(min(1.0, cosang))))
            raise ImageReadError(f"{folder}: DICOM series has a gantry tilt of {angle:.1f} degrees; "
                                 "resample it to an untilted grid first")
    gaps = np.diff(along)
    if len(gaps) and (gaps.min() <= 0 or gaps.max() - gaps.min() > 0.01 * max(abs(gaps.mean()), 1e-6) + 1e-3):
        if gaps.min() <= 1e-6:
            raise ImageReadError(f"{folder}: DICOM series has duplicate slice positions")
        warnings.warn(f"{folder}: non-uniform slice spacing ({gaps.min():.3f}-{gaps.max():.3f} mm); "
                      f"using the mean {gaps.mean():.3f} mm", stacklevel=3)
    del first_ipp


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> Image:
    """Read one DICOM series from ``folder``. Several series require ``series_uid``."""
    folder = Path(folder)
    series = list_dicom_series(folder)
    if not series:
        raise ImageReadError(f"{folder}: no DICOM image series found")
    if series_uid is None:
        if len(series) > 1:
            listing = "; ".join(str(s) for s in series)
            raise ImageReadError(f"{folder}: holds {len(series)} DICOM series, choose one: {listing}")
        chosen = series[0]
    else:
        matches = [s for s in series if s.uid == series_uid]
        if not matches:
            raise ImageReadError(f"{folder}: no DICOM series with UID {series_uid}")
        chosen = matches[0]
    _check_dicom_geometry(chosen.files, folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = reader.Execute()
    except RuntimeError as e:
        raise ImageReadError(f"{folder}: cannot read DICOM series ({_first_line(e)})") from None
    return Image.from_sitk(img, source=str(folder))


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # ITK errors put the useful text last ("... Description: ...").
    for ln in reversed(lines):
        if "description" in ln.lower() or "error" in ln.lower():
            return ln
    return lines[-1] if lines else type(e).__name__


def has_image_suffix(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(IMAGE_SUFFIXES)


def strip_image_suffix(name: str) -> str:
    """
    >>> strip_image_suffix("case_0000.nii.gz")
    'case_0000'
    """
    low = name.lower()
    for suf in IMAGE_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


def _check_nifti_complete(path: Path) -> None:
    """ITK's NIfTI reader zero-fills truncated files silently; compare the data size the header
    promises with what the file holds (gzip: its stored length first, a full decompression only when
    that disagrees)."""
    import gzip
    import struct
    import zlib

    gz = str(path).lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            hdr = f.read(348)
    except (OSError, EOFError, zlib.error) as e:
        raise ImageReadError(f"{path}: cannot read NIfTI header ({e})") from None
    if len(hdr) < 348:
        raise ImageReadError(f"{path}: truncated NIfTI header ({len(hdr)} of 348 bytes)")
    for end in "<>":
        if struct.unpack(end + "i", hdr[:4])[0] == 348:
            break
    else:
        return  # NIfTI-2 or not NIfTI: left to ITK
    dims = struct.unpack(end + "8h", hdr[40:56])
    bitpix = struct.unpack(end + "h", hdr[72:74])[0]
    vox_offset = int(struct.unpack(end + "f", hdr[108:112])[0])
    if not 1 <= dims[0] <= 7 or bitpix <= 0:
        return
    need = max(vox_offset, 348) + int(np.prod([max(d, 1) for d in dims[1:dims[0] + 1]], dtype=np.int64)) * bitpix // 8
    if not gz:
        have = path.stat().st_size
    else:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            if struct.unpack("<I", f.read(4))[0] == need % 2 ** 32:
                return
        have = 0
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    have += len(chunk)
        except (OSError, EOFError, zlib.error):
            raise ImageReadError(f"{path}: truncated or corrupt gzip data ({have} bytes readable, "
                                 f"the header needs {need})") from None
    if have < need:
        raise ImageReadError(f"{path}: truncated NIfTI file ({have} bytes, the header needs {need})")


def read_image(path: str | Path, series_uid: str | None = None) -> Image:
    """Read a NIfTI / MHA / MHD / NRRD file, a DICOM series folder or a zip holding one DICOM series
    folder into an :class:`Image`.

    Raises :class:`ImageReadError` with a one-line message naming the file on any failure.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or folder")
    if path.is_dir():
        return read_dicom_series(path, series_uid)
    if path.suffix.lower() == ".zip":
        from livseg_pipeline.io.archives import read_dicom_zip  # archives imports this module

        return read_dicom_zip(path, series_uid=series_uid)
    if not has_image_suffix(path) and not is_dicom_file(path):
        raise ImageReadError(f"{path}: unknown image format (expected NIfTI, MHA/MHD, NRRD or DICOM)")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty")
    if str(path).lower().endswith((".nii", ".nii.gz")):
        _check_nifti_complete(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ImageReadError(f"{path}: cannot read image ({_first_line(e)})") from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(f"{path}: expected a scalar image, got "
                             f"{img.GetNumberOfComponentsPerPixel()} components per voxel")
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() != 3:
        raise ImageReadError(f"{path}: expected a 3D image, got {img.GetDimension()}D "
                             f"of size {img.GetSize()}")
    try:
        array = sitk.GetArrayFromImage(img)
    except RuntimeError as e:
        raise ImageReadError(f"{path}: truncated or corrupt voxel data ({_first_line(e)})") from None
    geom = Geometry(tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection()))
    return Image(array, geom, str(path))


def write_image(image: Image, path: str | Path, compress: bool = True) -> Path:
    """Write atomically; the format follows the suffix. ``.mhd`` writes the ``.raw`` beside it
    (the pair is renamed into place data first, header last, so a visible header means complete)."""
    path = Path(path)
    img = image.to_sitk()
    if str(path).lower().endswith(".mhd"):
        return _write_mhd(img, path, compress)
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), compress)
    return path


def _write_mhd(img: sitk.Image, path: Path, compress: bool) -> Path:
    raw_name = path.with_suffix(".zraw" if compress else ".raw").name
    tmp_dir = path.parent / f".{path.stem}.writing"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    try:
        tmp_hdr = tmp_dir / path.name
        sitk.WriteImage(img, str(tmp_hdr), compress)
        written_raw = [p for p in tmp_dir.iterdir() if p.name != path.name]
        if len(written_raw) != 1:
            raise RuntimeError(f"{path}: unexpected MetaImage output {written_raw}")
        os.replace(written_raw[0], path.parent / raw_name)
        header = tmp_hdr.read_text()
        header = "\n".join(
            f"ElementDataFile = {raw_name}" if ln.startswith("ElementDataFile") else ln
            for ln in header.splitlines()) + "\n"
        with atomic_path(path) as tmp:
            tmp.write_text(header)
    finally:
        for p in tmp_dir.glob("*"):
            p.unlink()
        tmp_dir.rmdir()
    return path


# ----------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------
def same_grid(a: Image | Geometry, b: Image | Geometry, shape_a: Sequence[int] | None = None,
              shape_b: Sequence[int] | None = None, tol: float = 1e-3, *, spacing_rtol: float | None = None,
              origin_tol_voxels: float | None = None, origin_slack_mm: float = 1e-6) -> bool:
    """True when two grids coincide: same shape (if known), direction within ``tol``, spacing within
    ``spacing_rtol`` (relative) and origins within ``origin_tol_voxels`` spacings plus
    ``origin_slack_mm`` (both tolerances default to ``tol``)."""
    spacing_rtol = tol if spacing_rtol is None else spacing_rtol
    origin_tol_voxels = tol if origin_tol_voxels is None else origin_tol_voxels
    if isinstance(a, Image):
        shape_a, a = a.array.shape, a.geometry
    if isinstance(b, Image):
        shape_b, b = b.array.shape, b.geometry
    if shape_a is not None and shape_b is not None and tuple(shape_a) != tuple(shape_b):
        return False
    sa, sb = np.asarray(a.spacing), np.asarray(b.spacing)
    if not np.allclose(sa, sb, rtol=spacing_rtol, atol=0):
        return False
    if not np.allclose(a.direction, b.direction, atol=tol):
        return False
    return bool(np.all(np.abs(np.asarray(a.origin) - np.asarray(b.origin)) <= origin_tol_voxels * sa
                       + origin_slack_mm))


CANONICAL_ORIENTATION = "LPS"


def reorient(image: Image, orientation: str = CANONICAL_ORIENTATION) -> Image:
    """Permute/flip axes so the direction matrix matches ``orientation`` (ITK code; ``'LPS'`` =
    identity direction: array x runs to the patient's left, y to posterior, z to superior).
    Voxel values are not interpolated; the physical position of every voxel is kept."""
    img = sitk.DICOMOrient(image.to_sitk(), orientation)
    out = Image.from_sitk(img, image.source)
    return out


def reorient_to_canonical(image: Image) -> Image:
    """:func:`reorient` to the canonical ``'LPS'`` axis order used inside livseg."""
    return reorient(image, CANONICAL_ORIENTATION)


def is_near_axis_aligned(geometry: Geometry, tol: float = 1e-3) -> bool:
    """True when the direction matrix is a signed permutation (no oblique rotation)."""
    m = np.abs(geometry.direction_matrix)
    return bool(np.all((np.abs(m - 1) < tol) | (m < tol)))


def is_orthonormal(geometry: Geometry, tol: float = 1e-3) -> bool:
    m = geometry.direction_matrix
    return bool(np.allclose(m @ m.T, np.eye(3), atol=tol))
