"""The data tree: raw, preprocessed and results folders, and nnU-Net style dataset names.

The roots come from ``LVS_RAW``, ``LVS_PREPROCESSED`` and ``LVS_RESULTS``. They are resolved when
asked for, never at import, so importing livseg never fails on a machine without them. Unset
variables fall back to ``./lvs_data/{raw,preprocessed,results}`` and one line says so.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

_ENV = {"raw": "LVS_RAW", "preprocessed": "LVS_PREPROCESSED", "results": "LVS_RESULTS"}
_warned: set[str] = set()
_DATASET_RE = re.compile(r"^Dataset(\d{3})_(.+)$")


def _root(kind: str) -> Path:
    var = _ENV[kind]
    value = os.environ.get(var)
    if value:
        return Path(value).expanduser().resolve()
    default = (Path.cwd() / "lvs_data" / kind).resolve()
    if var not in _warned:
        _warned.add(var)
        print(f"[livseg] {var} is not set; using {default}", file=sys.stderr, flush=True)
    return default


def raw_root() -> Path:
    """Folder holding converted datasets (``$LVS_RAW``)."""
    return _root("raw")


def preprocessed_root() -> Path:
    """Folder holding plans and preprocessed arrays (``$LVS_PREPROCESSED``)."""
    return _root("preprocessed")


def results_root() -> Path:
    """Folder holding trained models and predictions (``$LVS_RESULTS``)."""
    return _root("results")


def dataset_name(dataset_id: int, name: str) -> str:
    """nnU-Net style folder name.

    >>> dataset_name(3, "Liver")
    'Dataset003_Liver'
    """
    if not 0 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset id must be in 0..999, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]*", name):
        raise ValueError(f"dataset name {name!r} may only hold letters, digits, '_' and '-'")
    return f"Dataset{int(dataset_id):03d}_{name}"


def parse_dataset_name(folder_name: str) -> tuple[int, str]:
    """Split ``DatasetNNN_Name`` into ``(NNN, Name)``.

    >>> parse_dataset_name("Dataset003_Liver")
    (3, 'Liver')
    """
    m = _DATASET_RE.match(folder_name)
    if not m:
        raise ValueError(f"{folder_name!r} is not a DatasetNNN_Name folder name")
    return int(m.group(1)), m.group(2)


def resolve_dataset(id_or_name: str | int, root: Path | None = None) -> str:
    """Find the dataset folder name for an id (``3``, ``"003"``) or a name (``"Liver"``,
    ``"Dataset003_Liver"``) by looking in the raw, preprocessed and results roots (or ``root``).
    """
    roots = [root] if root is not None else [raw_root(), preprocessed_root(), results_root()]
    text = str(id_or_name)
    candidates: set[str] = set()
    for r in roots:
        if not r.is_dir():
            continue
        for child in r.iterdir():
            m = _DATASET_RE.match(child.name)
            if not m or not child.is_dir():
                continue
            if child.name == text or m.group(2) == text or (text.isdigit() and int(text) == int(m.group(1))):
                candidates.add(child.name)
    if not candidates:
        raise FileNotFoundError(f"no dataset {text!r} under {', '.join(str(r) for r in roots)}")
    if len(candidates) > 1:
        raise ValueError(f"dataset {text!r} is ambiguous: {sorted(candidates)}")
    return candidates.pop()


def raw_dataset_dir(id_or_name: str | int) -> Path:
    return raw_root() / resolve_dataset(id_or_name)


def preprocessed_dataset_dir(id_or_name: str | int) -> Path:
    return preprocessed_root() / resolve_dataset(id_or_name)


def results_dataset_dir(id_or_name: str | int) -> Path:
    return results_root() / resolve_dataset(id_or_name)
