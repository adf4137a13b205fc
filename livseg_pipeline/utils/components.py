"""Connected components of 3D masks (connected-components-3d underneath)."""

from __future__ import annotations

import cc3d
import numpy as np


def label_components(mask: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """``(labels, n)`` of the ``connectivity``-connected (6, 18 or 26) components of ``mask``,
    numbered as ``scipy.ndimage.label`` numbers them (raster order; tested). connected-components-3d
    is 4-5x faster than scipy here (IRCAD 1.1's liver box, 98 x 269 x 340: 0.04 s against 0.19 s).

    >>> m = np.zeros((1, 3, 3), bool); m[0, 0, 0] = m[0, 1, 1] = True
    >>> label_components(m, 26)[1], label_components(m, 6)[1]
    (1, 2)
    """
    if int(connectivity) not in (6, 18, 26):
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    labels, n = cc3d.connected_components(np.ascontiguousarray(mask, dtype=bool), connectivity=int(connectivity),
                                          return_N=True)
    return labels, int(n)
