"""Where the three pathway inputs of one output segment come from.

An output segment is the cube of fine voxels ``[s, s + S)`` per axis (``S`` a multiple of every
pathway factor). Pathway ``k`` with down-sample factor ``f`` sees ``S // f + 2 * R`` voxels
(``R = layers * (kernel - 1) / 2 = 10`` for 10 layers of 3x3x3) of the anti-aliased volume, taken
every ``f`` fine voxels, at fine positions

    s + (f - 1) // 2 + f * (i - R),  i = 0 .. S // f + 2R - 1

so coarse output voxel ``j`` sits at the centre of fine block ``[s + f j, s + f (j + 1))`` and its
``x f`` nearest up-sampling lands exactly on the fine output grid. Because the coarse grid only
depends on ``s mod f``, dense inference with segments starting at multiples of ``max(f)`` gives the
same result whatever the segment size.

>>> pathway_input_sizes(15, (1, 5, 15))
[35, 23, 21]
>>> pathway_input_sizes(45, (1, 5, 15)), pathway_input_sizes(75, (1, 5, 15))
([65, 29, 23], [95, 35, 25])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def receptive_radius(num_layers: int = 10, kernel_size: int = 3) -> int:
    """Voxels of context each side of an output voxel, at the pathway's own resolution.

    >>> receptive_radius(10, 3)  # receptive field 2 * 10 + 1 = 21
    10
    """
    return num_layers * (kernel_size - 1) // 2


def pathway_input_sizes(output_size: int, factors: Sequence[int], radius: int = 10) -> list[int]:
    for f in factors:
        if output_size % f:
            raise ValueError(f"output size {output_size} is not a multiple of pathway factor {f}")
    return [output_size // f + 2 * radius for f in factors]


def pathway_positions(start: int, output_size: int, factor: int, radius: int = 10) -> np.ndarray:
    """Fine-grid indices (one axis) sampled by a pathway for the output segment at ``start``.

    >>> pathway_positions(0, 15, 15, radius=1).tolist()
    [-8, 7, 22]
    """
    n = output_size // factor + 2 * radius
    return start + (factor - 1) // 2 + factor * (np.arange(n) - radius)


def extract_pathway_input(volume: np.ndarray, start_zyx: Sequence[int], output_size: int, factor: int,
                          pad_value: float, radius: int = 10) -> np.ndarray:
    """The input cube of one pathway from ``volume`` (the fine volume for factor 1, the volume
    anti-aliased for ``factor`` otherwise); positions outside the volume get ``pad_value``."""
    n = output_size // factor + 2 * radius
    out = np.full((n, n, n), pad_value, dtype=volume.dtype)
    idx, dst = [], []
    for ax in range(3):
        pos = pathway_positions(int(start_zyx[ax]), output_size, factor, radius)
        inside = (pos >= 0) & (pos < volume.shape[ax])
        if not inside.any():
            return out
        lo, hi = int(np.argmax(inside)), int(len(inside) - np.argmax(inside[::-1]))
        idx.append(slice(int(pos[lo]), int(pos[hi - 1]) + 1, factor))
        dst.append(slice(lo, hi))
    out[tuple(dst)] = volume[tuple(idx)]
    return out


def extract_all_pathways(volumes: Sequence[np.ndarray], factors: Sequence[int], start_zyx: Sequence[int],
                         output_size: int, pad_value: float, radius: int = 10) -> list[np.ndarray]:
    """One input cube per pathway; ``volumes[k]`` is the volume anti-aliased for ``factors[k]``."""
    return [extract_pathway_input(v, start_zyx, output_size, f, pad_value, radius)
            for v, f in zip(volumes, factors)]
