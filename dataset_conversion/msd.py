"""Medical Segmentation Decathlon Task03_Liver: ``imagesTr/liver_N.nii.gz`` + ``labelsTr/liver_N.nii.gz``
(0 background, 1 liver, 2 tumour). INPUT is the ``Task03_Liver`` folder or a folder holding it.
The ``._liver_N.nii.gz`` files of the official archive (macOS metadata) are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from dataset_conversion.base import Converter, SourceCase, find_files, make_case_id


class MsdConverter(Converter):
    source = "msd"
    label_values: ClassVar[frozenset[int]] = frozenset({0, 1, 2})
    layout_hint = "Task03_Liver/imagesTr/liver_N.nii.gz with labelsTr/liver_N.nii.gz"

    def list_cases(self, input_dir: Path) -> list[SourceCase]:
        cases = []
        for path, m in find_files(input_dir, r"liver_(\d+)\.nii(\.gz)?"):
            if path.parent.name != "imagesTr":
                continue
            label = path.parent.parent / "labelsTr" / path.name
            cid = make_case_id(self.source, f"{int(m.group(1)):03d}")
            cases.append(SourceCase(cid, cid, str(path), str(label)))
        return cases
