"""The paper's post-processing of a liver probability map, on the original (often anisotropic) grid.

Tang et al. 2020: threshold; erode "to disconnect the regions with weak connection"; keep the largest
connected region; dilate it "back to its original size". Here:

1. ``mask = p >= threshold``
2. erosion by a ball of ``radius_mm`` (an ellipsoid in voxels when the spacing is anisotropic:
   every voxel offset within ``radius_mm``); outside the volume counts as background (as
   ``scipy.ndimage.binary_erosion`` does);
3. the largest ``connectivity``-connected component of the eroded mask is kept (the "core");
4. it is dilated back by the box enclosing that ball (half-widths ``ceil(radius / spacing)`` voxels
   per axis, so that voxel rounding never leaves a hole in the surface) **inside the thresholded
   mask**, and only the part connected to the core is kept.

A bridge thinner than ``2 * radius`` is cut, the island beyond it dropped, and the liver kept. The box
(rather than the ball) gives the convex corners of the liver back, which a ball opening would round
off; what is still trimmed are liver parts thinner than the ball that reach more than ``radius``
beyond the core, which is why whether post-processing helps is measured on the cross-validation
predictions.
``mode="reconstruction"`` instead grows the core back without a distance limit (geodesic
reconstruction inside the thresholded mask): nothing of the liver is trimmed, but islands joined to it
come back too. Both work on the bounding box of the mask only, so they take about a second on a
512 x 512 x 130 CT.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from livseg_pipeline.utils.components import label_components

MODES = ("paper", "reconstruction")


@dataclass
class PostprocessingResult:
    mask: np.ndarray                       # uint8 0/1, same shape as the input
    removed_components_ml: list[float] = field(default_factory=list)  # connected parts removed, largest first
    kept_ml: float = 0.0
    thresholded_ml: float = 0.0
    core_found: bool = True                # False: the erosion removed everything; largest component kept

    @property
    def removed_ml(self) -> float:
        return float(sum(self.removed_components_ml))

    def summary(self) -> dict:
        return {"kept_ml": round(self.kept_ml, 2), "thresholded_ml": round(self.thresholded_ml, 2),
                "removed_ml": round(self.removed_ml, 2),
                "removed_components_ml": [round(v, 2) for v in self.removed_components_ml],
                "core_found": self.core_found}


def connectivity_structure(connectivity: int) -> np.ndarray:
    """3x3x3 neighbourhood for 6-, 18- or 26-connectivity.

    >>> [int(connectivity_structure(c).sum()) - 1 for c in (6, 18, 26)]
    [6, 18, 26]
    """
    rank = {6: 1, 18: 2, 26: 3}.get(int(connectivity))
    if rank is None:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    return ndimage.generate_binary_structure(3, rank)


def ellipsoid_element(radius_mm: float, spacing_zyx) -> np.ndarray:
    """Boolean structuring element of all voxel offsets within ``radius_mm``.

    >>> ellipsoid_element(2.0, (2.0, 1.0, 1.0)).shape
    (3, 5, 5)
    """
    half = [int(np.floor(radius_mm / s + 1e-9)) for s in spacing_zyx]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing_zyx)], indexing="ij")
    return sum(g ** 2 for g in grids) <= radius_mm ** 2 + 1e-9


def _bbox(mask: np.ndarray, margin) -> tuple[slice, ...] | None:
    if not mask.any():
        return None
    sl = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        nz = np.flatnonzero(mask.any(axis=other))
        sl.append(slice(max(0, int(nz[0]) - margin[ax]), min(mask.shape[ax], int(nz[-1]) + 1 + margin[ax])))
    return tuple(sl)


def erode(mask: np.ndarray, radius_mm: float, spacing_zyx) -> np.ndarray:
    """Erosion by the ball of ``radius_mm`` (outside the array is background); exactly
    ``binary_erosion(mask, ellipsoid_element(radius_mm, spacing_zyx))``.

    The ball is a union of x-runs, one per (dz, dy) offset, so the erosion is the AND of shifted
    running minima along x: the run of half-width ``w + 1`` is the AND of the run of ``w`` shifted by
    one voxel either way (``w`` >= 1), and the shifted copies are ANDed as bits packed along x (8 voxels a byte).
    IRCAD 1.1's liver box (98 x 269 x 340, 105 offsets): 0.7 s with one pass of
    ``minimum_filter1d`` per run length and byte masks, 0.07 s like this (one thread).
    """
    el = ellipsoid_element(radius_mm, spacing_zyx)
    hz, hy, hx = (n // 2 for n in el.shape)
    Z, Y, X = mask.shape
    padded = np.pad(np.asarray(mask, dtype=bool), ((hz, hz), (hy, hy), (hx, hx)))
    widths: dict[tuple[int, int], int] = {}
    for dz in range(-hz, hz + 1):
        for dy in range(-hy, hy + 1):
            row = el[dz + hz, dy + hy]
            if row.any():
                widths[(dz, dy)] = hx - int(np.argmax(row))   # the row is symmetric: offsets -w..w
    packed: dict[int, np.ndarray] = {}
    run, w = padded, 0              # run[..., i] = AND of padded[..., i .. i + 2w]
    for want in sorted(set(widths.values())):
        while w < want:
            # runs of 2w+1 starting at i and i+2 cover i .. i+2w+2 once they overlap (w >= 1)
            run = run[..., :-2] & run[..., 2:] if w else run[..., :-2] & run[..., 1:-1] & run[..., 2:]
            w += 1
        # output voxel x reads padded[hx + x - w .. hx + x + w] = run[..., hx - w + x]
        packed[w] = np.packbits(run[..., hx - w: hx - w + X], axis=2)
    out = None
    for (dz, dy), w in widths.items():
        part = packed[w][hz + dz: hz + dz + Z, hy + dy: hy + dy + Y]
        out = part.copy() if out is None else np.bitwise_and(out, part, out=out)
    if out is None:
        return np.zeros(mask.shape, dtype=bool)
    return np.unpackbits(out, axis=2, count=X).view(bool)


def box_half_widths(radius_mm: float, spacing_zyx) -> tuple[int, int, int]:
    """Voxels per axis of the box enclosing the ball of ``radius_mm`` (rounded up).

    >>> box_half_widths(4.2, (1.6, 0.57, 0.57)), box_half_widths(4.0, (2.0, 1.0, 1.0))
    ((3, 8, 8), (2, 4, 4))
    """
    return tuple(int(np.ceil(radius_mm / s - 1e-9)) for s in spacing_zyx)  # type: ignore[return-value]


def dilate_within(core: np.ndarray, limit: np.ndarray, radius_mm: float, spacing_zyx) -> np.ndarray:
    """Dilation of ``core`` by the box enclosing the ball of ``radius_mm``, intersected with ``limit``
    (separable running maximum: fast whatever the radius)."""
    size = tuple(2 * h + 1 for h in box_half_widths(radius_mm, spacing_zyx))
    grown = ndimage.maximum_filter(core.view(np.uint8), size=size, mode="constant", cval=0)
    return grown.astype(bool) & limit


def keep_connected_to(mask: np.ndarray, seed: np.ndarray, connectivity: int) -> np.ndarray:
    """The components of ``mask`` that touch ``seed`` (geodesic reconstruction of seed in mask)."""
    labels, n = label_components(mask, connectivity)
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    hit = np.unique(labels[seed & mask])
    hit = hit[hit > 0]
    return np.isin(labels, hit)


def largest_component(mask: np.ndarray, connectivity: int) -> np.ndarray:
    labels, n = label_components(mask, connectivity)
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def component_volumes_ml(mask: np.ndarray, voxel_ml: float, connectivity: int) -> list[float]:
    labels, n = label_components(mask, connectivity)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    return sorted((float(s) * voxel_ml for s in sizes), reverse=True)


def postprocess(probabilities: np.ndarray, spacing_zyx, threshold: float = 0.5, erosion_radius_mm: float = 4.2,
                connectivity: int = 26, mode: str = "paper") -> PostprocessingResult:
    """Threshold and post-process a probability map (or a 0/1 mask with ``threshold`` <= 1).

    >>> p = np.zeros((20, 20, 40), np.float32)
    >>> p[4:16, 4:16, 2:16] = 0.9; p[9:11, 9:11, 16:26] = 0.8; p[6:14, 6:14, 26:34] = 0.7
    >>> r = postprocess(p, (1, 1, 1), erosion_radius_mm=2.0)
    >>> bool(r.mask[4:16, 4:16, 2:16].all()), bool(r.mask[:, :, 18:].any()), len(r.removed_components_ml)
    (True, False, 1)
    """
    if mode not in MODES:
        raise ValueError(f"post-processing mode must be one of {MODES}, got {mode!r}")
    spacing_zyx = tuple(float(s) for s in spacing_zyx)
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    connectivity_structure(connectivity)   # validates before any work
    thresholded = _at_least(probabilities, threshold)
    out = np.zeros(thresholded.shape, dtype=np.uint8)
    n_thr = int(np.count_nonzero(thresholded))
    if n_thr == 0:
        return PostprocessingResult(out, [], 0.0, 0.0, core_found=False)
    # work in the mask's bounding box; one voxel of margin keeps "outside = background" exact
    box = _bbox(thresholded, (1, 1, 1))
    m = thresholded[box]
    core = largest_component(erode(m, erosion_radius_mm, spacing_zyx), connectivity)
    core_found = bool(core.any())
    if not core_found:  # nothing survives the erosion: fall back to the largest component
        kept = largest_component(m, connectivity)
    elif mode == "paper":
        kept = keep_connected_to(dilate_within(core, m, erosion_radius_mm, spacing_zyx), core, connectivity)
    else:
        kept = keep_connected_to(m, core, connectivity)
    out[box] = kept
    removed = component_volumes_ml(m & ~kept, voxel_ml, connectivity)
    return PostprocessingResult(out, removed, float(np.count_nonzero(kept)) * voxel_ml, n_thr * voxel_ml,
                                core_found)


def _at_least(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    # compare in float32 whatever the storage (float16 CV files): one rule for sweep and prediction
    p = np.asarray(probabilities)
    if p.dtype != np.float32:
        p = p.astype(np.float32)
    return p >= np.float32(threshold)


def threshold_only(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The thresholded mask (uint8) when post-processing is off."""
    return _at_least(probabilities, threshold).view(np.uint8)
