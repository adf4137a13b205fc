"""SLIVER07: ``liver-orig0NN.mhd`` (+ ``.raw``) with ``liver-seg0NN.mhd`` (+ ``.raw``), labels 0/1."""

from __future__ import annotations

import re
from pathlib import Path

from dataset_conversion.base import PairedFilesConverter


class Sliver07Converter(PairedFilesConverter):
    source = "sliver07"
    layout_hint = "liver-orig0NN.mhd/.raw with liver-seg0NN.mhd/.raw"
    image_pattern = r"liver-orig(\d+)\.(mhd|mha)"

    def label_path(self, image: Path, match: re.Match) -> Path:
        return image.with_name(f"liver-seg{match.group(1)}.{match.group(2)}")

    def data_files(self, path: Path) -> list[Path]:
        """The ``ElementDataFile`` a MetaImage header names, when it is a plain file beside it
        (hashed for reruns and checked for presence)."""
        if path.suffix.lower() != ".mhd" or not path.exists():
            return []
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ElementDataFile":
                name = value.strip()
                # Only a bare file name is followed; LOCAL, LIST and paths are left to the reader.
                if name and name != "LOCAL" and "/" not in name and "\\" not in name and " " not in name:
                    return [path.with_name(name)]
        return []
