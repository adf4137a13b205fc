"""Cover a set of cells with a few boxes, cheaply for a network of valid convolutions.

A box of ``d = (dz, dy, dx)`` output voxels costs its pathway-1 convolutions on ``d + 2 h_l`` voxels per
layer ``l`` (``h_l`` the halo still to shrink after that layer) plus the 1x1x1 layers on ``d`` (see
:func:`box_cost`). Many small boxes pay the halo many times; one bounding box pays for every empty
voxel inside it. :func:`cover_cells` partitions the cells' bounding box recursively (split the longest
axis where the fewest cells are cut, near the middle) and keeps, at every node, the cheaper of the
node's own bounding box and the best covers of its two halves: a dynamic programme over one binary
space partition. The boxes never overlap and cover every given cell.

>>> cells = np.zeros((4, 4, 4), bool); cells[0, 0, 0] = cells[3, 3, 3] = True
>>> cost = lambda d: float(np.prod(np.add(d, 10)))        # halo 10: two separate cubes are cheaper
>>> sorted(cover_cells(cells, 5, cost))
[((0, 0, 0), (5, 5, 5)), ((15, 15, 15), (5, 5, 5))]
>>> cells[:] = True                                         # a solid block: one box
>>> cover_cells(cells, 5, cost)
[((0, 0, 0), (20, 20, 20))]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Box = tuple[tuple[int, int, int], tuple[int, int, int]]     # (start zyx, size zyx) in voxels


def box_cost(size: Sequence[int], layer_costs: Sequence[float], head_cost: float) -> float:
    """FLOPs of one box: ``layer_costs[l]`` per voxel of layer ``l`` (first layer first) computed on
    ``size + 2 (L - 1 - l)`` voxels per axis, plus ``head_cost`` per output voxel.

    >>> box_cost((1, 1, 1), [1.0, 1.0], 0.0)   # 3^3 + 1^3 voxels
    28.0
    """
    n = len(layer_costs)
    total = 0.0
    for layer, c in enumerate(layer_costs):
        h = 2 * (n - 1 - layer)
        total += c * float(np.prod([s + h for s in size]))
    return total + head_cost * float(np.prod(size))


def _split_position(profile: np.ndarray) -> int:
    """Where to cut an axis: fewest cells on the two planes at the cut, then nearest the middle."""
    n = len(profile)
    lo, hi = max(1, n // 4), min(n - 1, (3 * n) // 4 + 1)
    if hi < lo:
        return n // 2
    return min(range(lo, hi + 1), key=lambda k: (int(profile[k - 1]) + int(profile[k]), abs(2 * k - n)))


def cover_cells(cells: np.ndarray, cell_size: int, cost: Callable[[tuple[int, int, int]], float],
                max_voxels: int | None = None) -> list[Box]:
    """Disjoint boxes (in voxels, on the grid of ``cell_size``) covering every True cell, chosen to
    minimise the summed ``cost(size)``. A box holds at most ``max_voxels`` voxels (memory), unless a
    single cell is larger."""
    cells = np.asarray(cells, dtype=bool)

    def solve(sub: np.ndarray, origin: np.ndarray) -> tuple[float, list[Box]]:
        idx = np.argwhere(sub)
        if len(idx) == 0:
            return 0.0, []
        lo, hi = idx.min(0), idx.max(0) + 1
        sub = sub[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        origin = origin + lo
        size = tuple(int(v) * cell_size for v in sub.shape)
        box = (tuple(int(v) * cell_size for v in origin), size)
        own = cost(size)  # type: ignore[arg-type]
        too_big = max_voxels is not None and int(np.prod(size)) > max_voxels and sub.size > 1
        if (sub.all() and not too_big) or sub.size == 1:
            return own, [box]  # type: ignore[list-item]
        ax = int(np.argmax(sub.shape))
        other = tuple(a for a in range(3) if a != ax)
        k = _split_position(sub.sum(axis=other))
        first = [slice(None)] * 3
        second = [slice(None)] * 3
        first[ax], second[ax] = slice(0, k), slice(k, None)
        shift = np.zeros(3, int)
        shift[ax] = k
        ca, ba = solve(sub[tuple(first)], origin)
        cb, bb = solve(sub[tuple(second)], origin + shift)
        if too_big or ca + cb < own:
            return ca + cb, ba + bb
        return own, [box]  # type: ignore[list-item]

    return solve(cells, np.zeros(3, int))[1]
