"""LiTS17: ``volume-N.nii`` with ``segmentation-N.nii`` beside it (0 background, 1 liver, 2 tumour).

The training data comes in batch folders (``Training Batch 1/``, ...); they are searched recursively.
Tumour is part of the liver, so liver = label > 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from dataset_conversion.base import Converter, SourceCase, find_files, make_case_id


class LitsConverter(Converter):
    source = "lits"
    label_values: ClassVar[frozenset[int]] = frozenset({0, 1, 2})
    layout_hint = "volume-N.nii[.gz] with segmentation-N.nii[.gz] beside it"

    def list_cases(self, input_dir: Path) -> list[SourceCase]:
        cases = []
        for path, m in find_files(input_dir, r"volume-(\d+)\.nii(\.gz)?"):
            n = int(m.group(1))
            labels = [p for p in (path.with_name(f"segmentation-{m.group(1)}.nii"),
                                  path.with_name(f"segmentation-{m.group(1)}.nii.gz")) if p.exists()]
            label = labels[0] if labels else path.with_name(f"segmentation-{m.group(1)}.nii")
            cid = make_case_id(self.source, f"{n:03d}")
            cases.append(SourceCase(cid, cid, str(path), str(label)))
        return cases
