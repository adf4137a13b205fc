"""The body mask and the paper's crop: keep the whole abdomen in every axial slice.

The body is the largest 3D connected region above an HU threshold (air, lung and the foam mattress
are below it; the CT table is a separate component and is dropped). Holes inside each axial slice
(lungs, bowel gas) are filled, so the mask is the body's outline. The crop box is the x/y bounding box
of the body over *all* slices plus a margin, united with the liver's box when a label is given (the
crop never removes a liver voxel), and the full z range is kept.

Boxes are ``[[z0, z1], [y0, y1], [x0, x1]]`` with exclusive upper bounds, in array order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from livseg_pipeline.utils.components import label_components

Box = list[list[int]]

# In-plane 4-connectivity inside a slice, nothing across slices: fills holes slice by slice.
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def body_mask(array: np.ndarray, threshold: float, spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0),
              working_spacing_mm: float = 0.0, fill_holes: bool = True, dilate_mm: float = 0.0) -> np.ndarray:
    """Boolean mask ``(z, y, x)`` of the patient's body in ``array``.

    ``threshold`` is in the array's units: HU on a raw CT, or the normalized value of an HU threshold on
    a preprocessed volume (see :func:`livseg_pipeline.preprocessing.intensity.body_threshold_normalized`).
    With ``working_spacing_mm`` > the in-plane spacing, the mask is found on an in-plane subsampled grid
    (every k-th voxel) and copied back to full resolution: for a bounding box this is ample and several
    times faster. ``dilate_mm`` grows the mask in-plane and through slices (a safety margin for skipping
    voxels at inference). An array with nothing above ``threshold`` gives an all-False mask.

    >>> a = np.full((3, 9, 9), -1000.0); a[:, 2:7, 2:7] = 40.0; a[:, 4, 4] = -900.0  # body with a "lung"
    >>> a[:, 8, :] = 100.0                                                         # the table
    >>> m = body_mask(a, -500.0)
    >>> int(m.sum()), bool(m[1, 4, 4]), bool(m[1, 8, 3])
    (75, True, False)
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"body_mask expects a 3D array, got shape {array.shape}")
    sz, sy, sx = (float(s) for s in spacing_zyx)
    step_y = max(1, int(working_spacing_mm // sy)) if working_spacing_mm > 0 else 1
    step_x = max(1, int(working_spacing_mm // sx)) if working_spacing_mm > 0 else 1
    small = array[:, ::step_y, ::step_x] > threshold
    labels, n = label_components(small, 6)
    if n == 0:
        return np.zeros(array.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = labels == int(np.argmax(sizes))
    del labels
    if fill_holes:
        # Pad z with empty slices: the z faces must not count as "outside" for in-plane holes.
        padded = np.pad(mask, ((1, 1), (0, 0), (0, 0)))
        mask = ndimage.binary_fill_holes(padded, structure=_IN_PLANE)[1:-1]
    if step_y > 1 or step_x > 1:
        mask = np.repeat(np.repeat(mask, step_y, axis=1), step_x, axis=2)[:, :array.shape[1], :array.shape[2]]
    return dilate_mask(mask, spacing_zyx, dilate_mm)


def dilate_mask(mask: np.ndarray, spacing_zyx: Sequence[float], dilate_mm: float) -> np.ndarray:
    """``mask`` grown by ``dilate_mm`` along each axis (a box of ``ceil(dilate_mm / spacing)`` voxels
    per side; separable running maxima). ``dilate_mm`` <= 0 returns ``mask`` itself.

    >>> m = np.zeros((1, 1, 9), bool); m[0, 0, 4] = True
    >>> dilate_mask(m, (1.0, 1.0, 1.5), 3.0).astype(int).tolist()
    [[[0, 0, 1, 1, 1, 1, 1, 0, 0]]]
    """
    if dilate_mm <= 0:
        return mask
    for axis, s in enumerate(spacing_zyx):
        r = int(np.ceil(dilate_mm / float(s)))
        if r > 0:
            mask = ndimage.maximum_filter1d(mask.view(np.uint8), 2 * r + 1, axis=axis).view(bool)
    return mask


def body_box(array: np.ndarray, threshold: float, spacing_zyx: Sequence[float],
             working_spacing_mm: float = 2.0) -> Box | None:
    """Bounding box of :func:`body_mask`, found on an in-plane grid of ~``working_spacing_mm`` and
    widened to be conservative: it always holds the full-resolution body's box and exceeds it by
    less than one working voxel. ``None`` when there is no body.

    >>> a = np.full((2, 50, 50), -1000.0); a[:, 11:38, 7:42] = 0.0
    >>> body_box(a, -500, (1.0, 0.5, 0.5), working_spacing_mm=2.0)
    [[0, 2], [9, 40], [5, 44]]
    """
    sy, sx = float(spacing_zyx[1]), float(spacing_zyx[2])
    steps = [1, max(1, int(working_spacing_mm // sy)), max(1, int(working_spacing_mm // sx))]
    small = body_mask(array[:, ::steps[1], ::steps[2]], threshold, fill_holes=False)
    box = bounding_box(small)
    if box is None:
        return None
    # A sampled voxel stands for the (step - 1) unsampled ones before it and after it.
    return [[max(0, lo * st - st + 1), min(n, (hi - 1) * st + st)] if st > 1 else [lo, hi]
            for (lo, hi), st, n in zip(box, steps, array.shape)]


def bounding_box(mask: np.ndarray) -> Box | None:
    """``[[lo, hi), ...]`` per axis of the True voxels, or ``None`` for an empty mask.

    >>> m = np.zeros((4, 5, 6), bool); m[1:3, 2, 3:5] = True
    >>> bounding_box(m)
    [[1, 3], [2, 3], [3, 5]]
    """
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            return None
        box.append([int(hit[0]), int(hit[-1]) + 1])
    return box


def union_box(a: Box | None, b: Box | None) -> Box | None:
    """Smallest box holding both (``None`` counts as empty).

    >>> union_box([[0, 2], [5, 6]], [[1, 4], [0, 1]])
    [[0, 4], [0, 6]]
    """
    if a is None:
        return b
    if b is None:
        return a
    return [[min(p[0], q[0]), max(p[1], q[1])] for p, q in zip(a, b)]


def crop_box(shape_zyx: Sequence[int], spacing_zyx: Sequence[float], body_box: Box | None,
             label_box: Box | None = None, margin_mm: float = 10.0, keep_full_z: bool = True) -> Box:
    """The crop of the paper: body box + ``margin_mm`` in x/y (in z too when not ``keep_full_z``),
    united with the liver box, clipped to the image. No body found -> the whole image.

    >>> crop_box((10, 100, 100), (2.0, 1.0, 1.0), [[2, 8], [20, 80], [30, 70]], margin_mm=5)
    [[0, 10], [15, 85], [25, 75]]
    >>> crop_box((10, 100, 100), (2.0, 1.0, 1.0), [[2, 8], [20, 80], [30, 70]], [[3, 9], [50, 95], [40, 60]],
    ...          margin_mm=5)
    [[0, 10], [15, 95], [25, 75]]
    """
    shape = [int(s) for s in shape_zyx]
    if body_box is None:
        box = [[0, s] for s in shape]
    else:
        box = []
        for axis, ((lo, hi), n, sp) in enumerate(zip(body_box, shape, spacing_zyx)):
            if axis == 0 and keep_full_z:
                box.append([0, n])
                continue
            m = int(np.ceil(margin_mm / float(sp) - 1e-6))
            box.append([max(0, lo - m), min(n, hi + m)])
    box = union_box(box, label_box)
    return [[max(0, lo), min(n, hi)] for (lo, hi), n in zip(box, shape)]


def box_slices(box: Box) -> tuple[slice, ...]:
    """Numpy index for a box."""
    return tuple(slice(lo, hi) for lo, hi in box)
