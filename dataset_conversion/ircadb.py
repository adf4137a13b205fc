"""3D-IRCADb-01: ``3Dircadb1.N/PATIENT_DICOM.zip`` (the CT) and ``3Dircadb1.N/MASKS_DICOM.zip``
(one folder of binary DICOM masks per structure; the liver is ``MASKS_DICOM/liver/``), or the same
content unzipped (``PATIENT_DICOM/``, ``MASKS_DICOM/liver/``).

Slices are extensionless DICOM files (``image_0`` is the most caudal); their order comes from the
DICOM positions, never from the names. Masks hold 255 (or 1 in some patients): liver = mask > 0.
Zips are read in place by :func:`livseg_pipeline.io.archives.read_dicom_zip` (members extracted to a
private temporary folder under generated names, never the member names).
"""

from __future__ import annotations

import re
from pathlib import Path

from dataset_conversion.base import CaseError, Converter, SourceCase, make_case_id
from livseg_pipeline.io.archives import read_dicom_zip
from livseg_pipeline.io.image_io import Image, read_image

_CASE_RE = re.compile(r"3Dircadb(\d+)\.(\d+)", re.IGNORECASE)


class IrcadbConverter(Converter):
    source = "ircadb"
    layout_hint = "3Dircadb1.N/ folders with PATIENT_DICOM(.zip) and MASKS_DICOM(.zip) holding liver/"

    def list_cases(self, input_dir: Path) -> list[SourceCase]:
        folders = [input_dir] if _CASE_RE.fullmatch(input_dir.name) else \
            sorted((p for p in input_dir.rglob("*") if p.is_dir() and _CASE_RE.fullmatch(p.name)),
                   key=lambda p: [int(g) for g in _CASE_RE.fullmatch(p.name).groups()])
        cases = []
        for folder in folders:
            m = _CASE_RE.fullmatch(folder.name)
            image = _part(folder, "PATIENT_DICOM")
            if image is None:
                continue
            label = _part(folder, "MASKS_DICOM")
            cid = make_case_id(self.source, f"{int(m.group(1))}", f"{int(m.group(2)):02d}")
            cases.append(SourceCase(cid, cid, str(image), str(label) if label else None))
        return cases

    def read_image(self, case: SourceCase) -> Image:
        return _read_series(Path(case.image_ref), "PATIENT_DICOM")

    def read_label(self, case: SourceCase, image: Image) -> Image:
        if not case.label_ref:
            raise CaseError(f"{Path(case.image_ref).parent}: no MASKS_DICOM(.zip) beside PATIENT_DICOM")
        return _read_series(Path(case.label_ref), "MASKS_DICOM/liver")


def _part(folder: Path, name: str) -> Path | None:
    """``folder/name.zip`` or ``folder/name/`` (zip preferred: it is the distributed form)."""
    for candidate in (folder / f"{name}.zip", folder / name):
        if candidate.exists():
            return candidate
    return None


def _read_series(ref: Path, inner: str) -> Image:
    """Read the DICOM slices of folder ``inner`` inside the zip ``ref``, or below ``ref``'s folder."""
    if ref.is_dir():
        sub = ref.parent / inner
        if not sub.is_dir():
            raise CaseError(f"{sub}: folder missing")
        return read_image(sub)
    return read_dicom_zip(ref, inner)
