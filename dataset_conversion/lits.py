"""LiTS17: ``volume-N.nii`` with ``segmentation-N.nii`` beside it (0 background, 1 liver, 2 tumour).

The training data comes in batch folders (``Training Batch 1/``, ...); they are searched recursively.
Tumour is part of the liver, so liver = label > 0.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from dataset_conversion.base import PairedFilesConverter


class LitsConverter(PairedFilesConverter):
    source = "lits"
    label_values: ClassVar[frozenset[int]] = frozenset({0, 1, 2})
    layout_hint = "volume-N.nii[.gz] with segmentation-N.nii[.gz] beside it"
    image_pattern = r"volume-(\d+)\.nii(\.gz)?"

    def label_path(self, image: Path, match: re.Match) -> Path:
        candidates = [image.with_name(f"segmentation-{match.group(1)}{ext}") for ext in (".nii", ".nii.gz")]
        return next((p for p in candidates if p.exists()), candidates[0])
