"""Is an input file complete? SimpleITK reads a truncated NIfTI (plain or gzipped) without any
error and fills the missing voxels with zeros, so converters check the byte count first.

>>> import tempfile, pathlib, numpy as np
>>> from livseg_pipeline.io.image_io import Image, Geometry, write_image
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a.nii"
>>> _ = write_image(Image(np.zeros((4, 5, 6), np.int16), Geometry((1, 1, 1))), p, compress=False)
>>> check_complete(p)
>>> p.write_bytes(p.read_bytes()[:-10]) and None
>>> check_complete(p)
Traceback (most recent call last):
...
dataset_conversion.errors.CaseError: ...a.nii: truncated file (230 of 240 voxel bytes)
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from dataset_conversion.errors import CaseError

_NIFTI1 = {"size": 348, "dim": (40, "8h"), "bitpix": (72, "h"), "offset": (108, "f")}
_NIFTI2 = {"size": 540, "dim": (16, "8q"), "bitpix": (14, "h"), "offset": (168, "q")}


def _nifti_layout(header: bytes) -> tuple[int, int] | None:
    """(voxel data offset, voxel data bytes) from a NIfTI-1/2 header, or None when not NIfTI."""
    for spec in (_NIFTI1, _NIFTI2):
        for endian in "<>":
            if len(header) >= spec["size"] and struct.unpack(endian + "i", header[:4])[0] == spec["size"]:
                def get(key: str, _s=spec, _e=endian):
                    off, fmt = _s[key]
                    return struct.unpack_from(_e + fmt, header, off)
                dim = get("dim")
                ndim = max(0, min(int(dim[0]), 7))
                nvox = int(np.prod([max(1, int(d)) for d in dim[1:1 + ndim]])) if ndim else 0
                return int(get("offset")[0]), nvox * max(int(get("bitpix")[0]), 0) // 8
    return None


def check_complete(path: str | Path) -> None:
    """Raise :class:`CaseError` when a NIfTI file (``.nii``/``.nii.gz``) holds fewer voxel bytes than
    its header announces or its gzip stream is cut; other formats are left to their reader."""
    path = Path(path)
    name = path.name.lower()
    if not path.is_file() or not name.endswith((".nii", ".nii.gz")):
        return
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                head = f.read(544)
                # Read to the end: a cut gzip stream raises here (SimpleITK does not).
                size = len(head) + sum(len(chunk) for chunk in iter(lambda: f.read(1 << 22), b""))
            layout = _nifti_layout(head)
        else:
            with open(path, "rb") as f:
                layout = _nifti_layout(f.read(544))
            size = path.stat().st_size
    except (EOFError, OSError, zlib.error) as e:
        raise CaseError(f"{path}: truncated or corrupt compressed file ({e})") from None
    if layout is None:
        raise CaseError(f"{path}: not a NIfTI file (bad header)")
    offset, nbytes = layout
    if size < offset + nbytes:
        raise CaseError(f"{path}: truncated file ({max(size - offset, 0)} of {nbytes} voxel bytes)")
