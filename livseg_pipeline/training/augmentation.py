"""Augmentation of one training sample: the three pathway inputs and the label, kept consistent.

The paper: one global HU shift per image ~ N(-40 HU, 40 HU), flips along x and y with p = 0.5, and
elastic deformation. Every random draw comes from the ``rng`` passed in, so a batch is a pure function
of its seed (exact resume, same batches whatever the number of loader workers).

* **Intensity shift.** Preprocessed volumes are already clipped to ``intensity_range`` (the HU window),
  while the paper shifts HU before clipping. A voxel strictly inside the window therefore moves by the
  shift and is clipped again. A voxel sitting *at* a window end stands for HU beyond it (air, fat below
  -200 HU, bone, dense contrast); its true HU is lost, and we treat it as far beyond the end: it stays
  at its end when the shift points inward (low end for a positive shift, high end for a negative one).
  This is exact for every voxel whose HU was inside the window or more than ``|shift|`` beyond it, and
  keeps the values inside the range the network sees at inference. The coarse pathways get the same
  per-voxel rule on their anti-aliased values (exact in homogeneous regions, approximate where a box
  mixes clipped and unclipped voxels).
* **Flips.** Flipping the extracted inputs along an axis equals extracting them from the flipped
  volume, because the pathway grids are symmetric about the output segment's centre and the
  anti-aliasing box is centred with odd factors (1, 5, 15).
* **Elastic.** The fine input (with a margin) and the label on the same grid are deformed with
  batchgenerators' coordinate mesh and interpolation; the coarse inputs are not deformed: the field is
  smooth (sigma 9-13 fine voxels) with displacements of about a fine voxel, well under one coarse voxel
  (5 or 15 fine voxels), and deforming them consistently would mean deforming a 315^3 fine region.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from batchgenerators.augmentations.utils import create_zero_centered_coordinate_mesh, interpolate_img
from scipy.ndimage import gaussian_filter

# axis of a (z, y, x) array for each plans axis name
AXIS = {"z": 0, "y": 1, "x": 2}


def intensity_shift(x: np.ndarray, shift: float, low: float, high: float, eps: float = 1e-6) -> np.ndarray:
    """Shift normalized intensities by ``shift`` and clip to ``[low, high]``; voxels at the end the
    shift moves away from stay there (they stand for HU beyond the window).

    >>> [round(float(v), 3) for v in intensity_shift(np.float32([-0.2, -0.1, 0.0, 0.19, 0.2]), -0.04, -0.2, 0.2)]
    [-0.2, -0.14, -0.04, 0.15, 0.2]
    >>> [round(float(v), 3) for v in intensity_shift(np.float32([-0.2, 0.0, 0.18]), 0.04, -0.2, 0.2)]
    [-0.2, 0.04, 0.2]
    """
    out = np.clip(x + np.float32(shift), low, high).astype(x.dtype, copy=False)
    if shift > 0:
        out[x <= low + eps] = low
    elif shift < 0:
        out[x >= high - eps] = high
    return out


def elastic_coordinates(shape: Sequence[int], alpha: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Sampling coordinates (3, *shape), zero-centred, plus a smooth random displacement.

    Same field as batchgenerators' ``elastic_deform_coordinates`` (uniform noise in [-1, 1], Gaussian
    filtered with ``sigma``, times ``alpha``) but drawn from ``rng`` instead of numpy's global state.
    """
    coords = create_zero_centered_coordinate_mesh(shape)
    for d in range(len(shape)):
        noise = rng.random(tuple(shape)) * 2.0 - 1.0
        coords[d] += gaussian_filter(noise, sigma, mode="constant", cval=0.0, truncate=3.0) * alpha
    return coords


def elastic_deform(image: np.ndarray, label: np.ndarray, out_shape: Sequence[int], alpha: float, sigma: float,
                   rng: np.random.Generator, pad_value: float) -> tuple[np.ndarray, np.ndarray]:
    """Deform ``image`` and ``label`` (same grid, larger than ``out_shape`` by a margin) and return the
    centred ``out_shape`` crop of both. Image: cubic spline; label: linear then > 0.5 (batchgenerators)."""
    coords = elastic_coordinates(out_shape, alpha, sigma, rng)
    for d in range(3):
        coords[d] += (image.shape[d] - 1) / 2.0
    img = interpolate_img(image, coords, order=3, mode="constant", cval=pad_value)
    lab = interpolate_img(label, coords, order=1, mode="constant", cval=0, is_seg=True)
    return img.astype(np.float32, copy=False), lab


def flip_axes(arrays: Sequence[np.ndarray], axes: Sequence[int]) -> list[np.ndarray]:
    """Flip every array along the given spatial axes (copies, contiguous)."""
    if not axes:
        return list(arrays)
    return [np.ascontiguousarray(np.flip(a, axis=tuple(axes))) for a in arrays]


def center_crop(a: np.ndarray, size: int) -> np.ndarray:
    off = [(n - size) // 2 for n in a.shape]
    return a[off[0]: off[0] + size, off[1]: off[1] + size, off[2]: off[2] + size]
