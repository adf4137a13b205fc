"""Medical Segmentation Decathlon Task03_Liver: ``imagesTr/liver_N.nii.gz`` + ``labelsTr/liver_N.nii.gz``
(0 background, 1 liver, 2 tumour). INPUT is the ``Task03_Liver`` folder or a folder holding it.
The ``._liver_N.nii.gz`` files of the official archive (macOS metadata) are ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from dataset_conversion.base import PairedFilesConverter


class MsdConverter(PairedFilesConverter):
    source = "msd"
    label_values: ClassVar[frozenset[int]] = frozenset({0, 1, 2})
    layout_hint = "Task03_Liver/imagesTr/liver_N.nii.gz with labelsTr/liver_N.nii.gz"
    image_pattern = r"liver_(\d+)\.nii(\.gz)?"

    def label_path(self, image: Path, match: re.Match) -> Path | None:
        if image.parent.name != "imagesTr":
            return None  # labelsTr/ and imagesTs/ hold files of the same name
        return image.parent.parent / "labelsTr" / image.name
