"""Anti-aliased volumes for the coarse pathways.

Pathway ``k`` reads every ``f``-th voxel of a volume that was low-pass filtered for factor ``f``
(a centred ``f``-voxel box mean, i.e. exactly the average pooling of the ``f^3`` block a coarse voxel
stands for), so the coarse inputs are anti-aliased rather than bare strides. The fine volume is used
as it is for factor 1. Training and inference both call :func:`context_volumes`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def context_volumes(image: np.ndarray, factors: Sequence[int], pad_value: float,
                    mode: str = "box") -> list[np.ndarray]:
    """One float32 volume per pathway factor, same shape as ``image``.

    Outside the volume counts as ``pad_value`` (the value segments are padded with), so a coarse
    voxel near the border averages the same thing in training and inference.

    >>> v = np.zeros((15, 15, 15), np.float32); v[7, 7, 7] = 27.0
    >>> [round(float(c[7, 7, 7]), 3) for c in context_volumes(v, (1, 3), pad_value=0.0)]
    [27.0, 1.0]
    """
    image = np.asarray(image, dtype=np.float32)
    out = []
    for f in factors:
        if f == 1:
            out.append(image)
        elif mode == "box":
            out.append(ndimage.uniform_filter(image, size=f, mode="constant", cval=pad_value))
        elif mode == "gaussian":
            # sigma for a box of width f has the same variance: f / sqrt(12)
            out.append(ndimage.gaussian_filter(image, sigma=f / np.sqrt(12.0), mode="constant",
                                               cval=pad_value))
        else:
            raise ValueError(f"unknown context smoothing {mode!r} (box | gaussian)")
    return out
