"""Hospital SIRT exports: one folder per patient, each with a DICOM CT series and a liver mask.

Accepted per folder ``P`` of INPUT (the patient id is the CT's DICOM PatientID, or the folder name
when that is empty; scans of one patient are grouped into one fold by it):

* one scan: ``P/CT/`` (or DICOM slices directly in ``P``) plus the mask;
* several scans: sub-folders ``P/<scan>/`` each laid out as above (case ids ``sirt_P_<scan>``,
  all with patient id ``P`` so that they land in one fold).

The mask is an image file beside the CT (NIfTI / NRRD / MHA; the one whose name holds "liver" when
there are several) or, failing that, a DICOM RTSTRUCT in the scan or CT folder, whose ROI named
like /liver/i is rasterised onto the CT grid by :func:`livseg_pipeline.clinical.rtstruct.read_rtstruct`
(several candidates -> a clear error listing them).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from dataset_conversion.base import CaseError, Converter, SourceCase, make_case_id
from livseg_pipeline.clinical.dicom_series import DicomReferenceError
from livseg_pipeline.clinical.rtstruct import RTStructError, read_rtstruct, referenced_series_uids
from livseg_pipeline.io.image_io import (
    Geometry,
    Image,
    has_image_suffix,
    is_dicom_file,
    list_dicom_series,
    read_image,
    same_grid,
)

_LIVER_RE = re.compile(r"liver", re.IGNORECASE)


class SirtConverter(Converter):
    source = "sirt"
    layout_hint = "one folder per patient with CT/ (a DICOM series) and liver.nii.gz or an RTSTRUCT"

    def list_cases(self, input_dir: Path) -> list[SourceCase]:
        cases = []
        patients = [input_dir] if _is_scan(input_dir) else \
            sorted(p for p in input_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        for patient in patients:
            scans = [patient] if _is_scan(patient) else \
                sorted(s for s in patient.iterdir() if s.is_dir() and _is_scan(s))
            if not scans:  # reported as a failed case rather than silently passed over
                cid = make_case_id(self.source, patient.name)
                cases.append(SourceCase(cid, cid, str(patient / "CT"), None))
            for scan in scans:
                ct = scan / "CT" if (scan / "CT").is_dir() else scan
                mask = _mask_file(scan)
                parts = [self.source, patient.name] + ([scan.name] if scan != patient else [])
                originals = (str(ct),) + ((str(mask),) if mask and mask.parent != ct else ())
                pid = _dicom_patient_id(ct) or patient.name
                cases.append(SourceCase(make_case_id(*parts), make_case_id(self.source, pid),
                                        str(ct), str(mask) if mask else None, originals))
        return cases

    def read_image(self, case: SourceCase) -> Image:
        """The CT series; in a folder with several series, the one the mask singles out (CT modality,
        the series an RTSTRUCT references, or the one whose grid a mask image matches)."""
        ct = Path(case.image_ref)
        series = list_dicom_series(ct) if ct.is_dir() else []
        if len(series) <= 1:
            return read_image(ct)
        candidates = [s for s in series if s.modality == "CT"] or series
        if len(candidates) == 1:
            return read_image(ct, series_uid=candidates[0].uid)
        mask = Path(case.label_ref) if case.label_ref else None
        if mask is not None and not has_image_suffix(mask):
            try:
                refs = set(referenced_series_uids(mask)) & {s.uid for s in candidates}
            except RTStructError as e:
                raise CaseError(str(e)) from None
            if len(refs) == 1:
                return read_image(ct, series_uid=refs.pop())
        elif mask is not None:
            grid = _header_grid(mask)
            images = [read_image(ct, series_uid=s.uid) for s in candidates]
            matches = [im for im in images if same_grid(im.geometry, grid[0], im.array.shape, grid[1])]
            if len(matches) == 1:
                return matches[0]
        listing = "; ".join(str(s) for s in candidates)
        raise CaseError(f"{ct}: holds {len(candidates)} CT series and the liver mask does not single one out: "
                        f"{listing}")

    def read_label(self, case: SourceCase, image: Image) -> Image:
        if not case.label_ref:
            raise CaseError(f"{Path(case.image_ref).parent}: no liver mask (image file or DICOM RTSTRUCT) found")
        path = Path(case.label_ref)
        if has_image_suffix(path):
            return read_image(path)
        try:
            return read_rtstruct(path, case.image_ref, roi_regex="liver")
        except (RTStructError, DicomReferenceError) as e:
            raise CaseError(str(e)) from None


def _header_grid(path: Path) -> tuple[Geometry, tuple[int, ...]]:
    """Geometry and array shape (z, y, x) of an image file, from its header only."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise CaseError(f"{path}: cannot read the mask header ({str(e).strip().splitlines()[-1]})") from None
    size = reader.GetSize()[:3]
    return (Geometry(reader.GetSpacing()[:3], reader.GetOrigin()[:3],
                     tuple(np.asarray(reader.GetDirection()).reshape(reader.GetDimension(), -1)[:3, :3].ravel())),
            tuple(reversed(size)))


def _is_scan(folder: Path) -> bool:
    ct = folder / "CT"
    if ct.is_dir():
        return True
    return any(is_dicom_file(f) for f in _files(folder)[:20])


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))


def _mask_file(scan: Path) -> Path | None:
    """An image file beside the CT (preferring one named like liver), else an RTSTRUCT, else None."""
    images = [f for f in _files(scan) if has_image_suffix(f)]
    named = [f for f in images if _LIVER_RE.search(f.name)]
    if named or images:
        return (named or images)[0]
    for folder in (scan, scan / "CT"):
        if folder.is_dir():
            for f in _files(folder):
                if _modality(f) == "RTSTRUCT":
                    return f
    return None


def _header_value(path: Path, keyword: str) -> str:
    """One header value of a DICOM file ('' when absent or unreadable)."""
    import pydicom

    if not is_dicom_file(path):
        return ""
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[keyword]).get(keyword, "")).strip()
    except Exception:  # noqa: BLE001 - an unreadable file simply has no usable value
        return ""


def _modality(path: Path) -> str:
    return _header_value(path, "Modality")


def _dicom_patient_id(ct: Path) -> str:
    """PatientID of the first DICOM file of the CT folder: an export names its folders per scan
    (``<id>_<date>``), so the header, not the folder, says which scans share a patient."""
    if not ct.is_dir():
        return ""
    return next((v for v in (_header_value(f, "PatientID") for f in _files(ct)[:5]) if v), "")
