"""Atomic file writing and small JSON helpers.

Every output of livseg appears only when complete: it is written to a temporary file in the same
folder (so the rename cannot cross file systems) and renamed into place. A crash or Ctrl-C leaves at
worst a ``.tmp`` file that no later stage mistakes for a result.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def temp_path_beside(path: Path) -> Path:
    """A fresh temporary path in ``path``'s folder keeping its full suffix (``.nii.gz``), since
    writers pick the format from the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=".tmp" + suffix,
                               dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it is renamed to ``path``.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (d / "a.txt").read_text(), [p.name for p in d.iterdir()]
    ('done', ['a.txt'])
    """
    path = Path(path)
    tmp = temp_path_beside(path)
    try:
        yield tmp
        # mkstemp creates 0600 files; results are meant to be shared (DICOM to a PACS, masks to a
        # colleague), so give them the permissions a plain open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


class _NumpyEncoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.bool_):
            return bool(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        return super().default(o)


def save_json(obj: Any, path: str | Path, indent: int = 2) -> None:
    """Write JSON atomically (numpy scalars and arrays and paths are converted)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, cls=_NumpyEncoder) + "\n", encoding="utf-8")


def load_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def save_npz_atomic(path: str | Path, compressed: bool = True, **arrays: np.ndarray) -> None:
    """``np.savez(_compressed)`` through a temporary file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compressed else np.savez)(f, **arrays)
