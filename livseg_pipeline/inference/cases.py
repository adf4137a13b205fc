"""Which cases an ``lvs_predict`` input holds, and how they are split over processes.

An input is one image file, a DICOM series folder, or a folder holding image files and/or DICOM
series (searched recursively). Every DICOM series found is a case of its own. Case ids (used as
output file names) come from file and folder names on disk, made safe; DICOM header strings are
never used in paths (a series UID only contributes its digits).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from livseg_pipeline.inference.predictor import case_id_from_name
from livseg_pipeline.io.image_io import has_image_suffix, is_dicom_file, list_dicom_series, strip_image_suffix


@dataclass(frozen=True)
class CaseInput:
    case_id: str
    path: Path                       # image file, or DICOM folder
    series_uid: str | None = None    # set for DICOM series

    @property
    def is_dicom(self) -> bool:
        return self.series_uid is not None

    def describe(self) -> str:
        return f"{self.path} (series {self.series_uid})" if self.is_dicom else str(self.path)


def _dicom_cases(folder: Path, name: str) -> list[CaseInput]:
    series = list_dicom_series(folder)
    if len(series) == 1:
        return [CaseInput(case_id_from_name(name), folder, series[0].uid)]
    out = []
    for s in sorted(series, key=lambda s: s.uid):
        tail = re.sub(r"[^0-9]", "", s.uid)[-10:] or "series"
        out.append(CaseInput(case_id_from_name(f"{name}_{tail}"), folder, s.uid))
    return out


def find_cases(input_path: str | Path) -> tuple[list[CaseInput], list[Path]]:
    """``(cases sorted by id, ignored files)``. A missing input raises ``FileNotFoundError``."""
    root = Path(input_path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    if root.is_file():
        name = strip_image_suffix(root.name)
        return [CaseInput(case_id_from_name(name), root)], []
    cases: list[CaseInput] = []
    ignored: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        has_dicom = False
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            p = folder / fn
            if has_image_suffix(fn):
                cases.append(CaseInput(case_id_from_name(strip_image_suffix(fn)), p))
            elif is_dicom_file(p):
                has_dicom = True
            else:
                ignored.append(p)
        if has_dicom:
            rel = folder.relative_to(root)
            name = root.name if rel == Path(".") else "_".join(rel.parts)
            cases.extend(_dicom_cases(folder, name))
    ids = [c.case_id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"{root}: several inputs map to the same case id(s) {', '.join(dupes)}; "
                         "rename them or predict the folders separately")
    return sorted(cases, key=lambda c: c.case_id), ignored


def partition(cases: list, part_id: int, num_parts: int) -> list:
    """The cases of part ``part_id`` of ``num_parts``: sorted order, every ``num_parts``-th.

    >>> [partition(list("abcdefg"), k, 3) for k in range(3)]
    [['a', 'd', 'g'], ['b', 'e'], ['c', 'f']]
    """
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ValueError(f"--part-id must be in 0..{num_parts - 1} for --num-parts {num_parts}, got {part_id}")
    return [c for i, c in enumerate(cases) if i % num_parts == part_id]
