"""Generic folders: ``imagesTr/CASE_0000.nii.gz`` (or ``CASE.nii.gz``) + ``labelsTr/CASE.nii.gz``.

Any format :func:`livseg_pipeline.io.read_image` reads is accepted (NIfTI, MHA/MHD, NRRD). Labels are
0/1 (2 = tumour, counted as liver). The case id is the file's own name; the patient id too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from dataset_conversion.base import Converter, SourceCase, make_case_id
from livseg_pipeline.io.image_io import has_image_suffix, strip_image_suffix

_CHANNEL_RE = re.compile(r"(.+)_(\d{4})")


class NiftiConverter(Converter):
    source = "nifti"
    label_values: ClassVar[frozenset[int]] = frozenset({0, 1, 2})
    layout_hint = "imagesTr/CASE_0000.nii.gz (or CASE.nii.gz) with labelsTr/CASE.nii.gz"

    def list_cases(self, input_dir: Path) -> list[SourceCase]:
        images = input_dir / "imagesTr"
        labels = input_dir / "labelsTr"
        if not images.is_dir():
            return []
        cases = []
        for path in sorted(images.iterdir()):
            if path.name.startswith(".") or not path.is_file() or not has_image_suffix(path):
                continue
            stem = strip_image_suffix(path.name)
            channel = _CHANNEL_RE.fullmatch(stem)
            if channel and channel.group(2) != "0000":
                continue  # further channels; livseg uses the CT (channel 0) only
            case = channel.group(1) if channel else stem
            ending = path.name[len(stem):]
            cid = make_case_id(case)
            cases.append(SourceCase(cid, cid, str(path), str(labels / f"{case}{ending}")))
        return cases
