"""SLIVER07: ``liver-orig0NN.mhd`` (+ ``.raw``) with ``liver-seg0NN.mhd`` (+ ``.raw``), labels 0/1."""

from __future__ import annotations

from pathlib import Path

from dataset_conversion.base import Converter, SourceCase, find_files, make_case_id


class Sliver07Converter(Converter):
    source = "sliver07"
    layout_hint = "liver-orig0NN.mhd/.raw with liver-seg0NN.mhd/.raw"

    def list_cases(self, input_dir: Path) -> list[SourceCase]:
        cases = []
        for path, m in find_files(input_dir, r"liver-orig(\d+)\.(mhd|mha)"):
            label = path.with_name(f"liver-seg{m.group(1)}.{m.group(2)}")
            # The voxel data file is an input too (hashed for reruns, checked for presence).
            paths = [path, *_data_files(path), label, *_data_files(label)]
            cid = make_case_id(self.source, f"{int(m.group(1)):03d}")
            cases.append(SourceCase(cid, cid, str(path), str(label), tuple(dict.fromkeys(map(str, paths)))))
        return cases


def _data_files(header: Path) -> list[Path]:
    """The ``ElementDataFile`` a MetaImage header names, when it is a plain file beside it."""
    if header.suffix.lower() != ".mhd" or not header.exists():
        return []
    for line in header.read_text(errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ElementDataFile":
            name = value.strip()
            # Only a bare file name is followed; LOCAL, LIST and path tricks are left to the reader.
            if name and name != "LOCAL" and "/" not in name and "\\" not in name and " " not in name:
                return [header.with_name(name)]
    return []
