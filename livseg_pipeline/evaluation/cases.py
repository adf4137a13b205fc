"""Finding the masks of a segmentation set and matching two sets by case name.

A set is one mask file, a DICOM series folder, or a folder holding mask files (NIfTI, MHA/MHD,
NRRD) and/or DICOM series sub-folders. The case name is the file name without its image suffix
(``case_001.nii.gz`` -> ``case_001``) or the sub-folder's name; when every file of a folder ends in
an nnU-Net channel tag (``case_001_0000.nii.gz``) the tag is dropped too. Names come from the disk,
never from DICOM headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from livseg_pipeline.io.image_io import has_image_suffix, is_dicom_file, strip_image_suffix

_CHANNEL_TAG = re.compile(r"_\d{4}$")


class CaseMatchError(ValueError):
    """Sets of masks that cannot be paired; the message is one line naming the folders."""


def _holds_dicom(folder: Path, probe: int = 5) -> bool:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return any(is_dicom_file(p) for p in files[:probe])


def find_cases(path: str | Path) -> dict[str, Path]:
    """``{case name: mask path}`` of a file, a DICOM series folder or a folder of masks.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> for n in ("b_0000.nii.gz", "a_0000.mha", "notes.txt"): _ = (d / n).write_text("x")
    >>> sorted(find_cases(d))
    ['a', 'b']
    """
    path = Path(path)
    if not path.exists():
        raise CaseMatchError(f"{path}: no such file or folder")
    if path.is_file():
        if not (has_image_suffix(path) or is_dicom_file(path)):
            raise CaseMatchError(f"{path}: not a mask file (expected NIfTI, MHA/MHD, NRRD or DICOM)")
        return {strip_image_suffix(path.name): path}
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file() and has_image_suffix(p)]
    folders = [p for p in entries if p.is_dir() and _holds_dicom(p)]
    if not files and not folders:
        if _holds_dicom(path):
            return {path.name: path}
        raise CaseMatchError(f"{path}: no masks found (expected NIfTI/MHA/NRRD files or DICOM series folders)")
    names = [strip_image_suffix(p.name) for p in files]
    if names and all(_CHANNEL_TAG.search(n) for n in names):
        names = [_CHANNEL_TAG.sub("", n) for n in names]
    cases: dict[str, Path] = {}
    for name, p in [*zip(names, files), *((p.name, p) for p in folders)]:
        if name in cases:
            raise CaseMatchError(f"{path}: two masks for case {name!r}: {cases[name].name} and {p.name}")
        cases[name] = p
    return cases


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


@dataclass(frozen=True)
class Matching:
    """Cases present in both sets, and those only in the reference (``missing``) or prediction (``extra``)."""

    pairs: list[tuple[str, Path, Path]]
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


def match_cases(ref: str | Path, pred: str | Path, allow_missing: bool = False) -> Matching:
    """Pair the masks of two sets by case name (sorted); a single mask (file or DICOM series folder)
    against a single mask is paired whatever the names. A reference case without a prediction is an
    error unless ``allow_missing``.
    """
    ref, pred = Path(ref), Path(pred)
    ref_cases, pred_cases = find_cases(ref), find_cases(pred)
    if list(ref_cases.values()) == [ref] and list(pred_cases.values()) == [pred]:
        (name, rp), (_, pp) = next(iter(ref_cases.items())), next(iter(pred_cases.items()))
        return Matching([(name, rp, pp)])
    common = sorted(set(ref_cases) & set(pred_cases))
    if not common:
        raise CaseMatchError(f"no case names in common between {ref} ({_preview(sorted(ref_cases))}) "
                             f"and {pred} ({_preview(sorted(pred_cases))})")
    missing = sorted(set(ref_cases) - set(pred_cases))
    if missing and not allow_missing:
        raise CaseMatchError(f"{pred}: no prediction for {len(missing)} of {len(ref_cases)} reference cases: "
                             f"{_preview(missing)} (use --allow-missing to evaluate the {len(common)} others)")
    extra = sorted(set(pred_cases) - set(ref_cases))
    return Matching([(c, ref_cases[c], pred_cases[c]) for c in common], missing, extra)
