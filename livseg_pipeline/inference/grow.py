"""Region-growing inference: evaluate only the segments reachable from the liver.

Post-processing keeps the largest connected component of ``p >= threshold`` (the liver). A segment
that no path of ``p >= threshold`` voxels links to the liver cannot change that component, so it
need not be evaluated. Growing finds every such path:

1. seeds: the body segments with the most liver-like voxels (soft tissue HU on the patient's right),
   best first, two at a time (up to eight if the first ones find no liver);
2. after a segment is evaluated, the segments the liver's component may reach are queued: for the
   predictor, which thresholds on the original grid, by :class:`OriginalGridRule` (or, for oblique
   original grids, the face rule with :func:`exact_face_depth`); otherwise by the face rule: each of
   the segment's six faces (the outer ``face_depth`` voxel layers), twelve edges and eight corners is
   looked at, and a voxel ``>= threshold`` there queues the neighbouring segment across it;
3. the queue is worked off (whole waves for the box engine) until empty.

Why this is exact: the liver's component ``K`` of ``p >= t``, computed with the unevaluated voxels
at 0, is also a component of the true map if no voxel next to ``K`` is unevaluated (every voxel
next to ``K`` then has its true value, and is in ``K`` or below ``t``). On the preprocessed grid
that needs one layer (``face_depth`` 1, the default). The predictor thresholds on the ORIGINAL grid
after linear resampling, where a gap of one preprocessed voxel below ``t`` can be bridged (slices
thicker than the preprocessed spacing); :class:`OriginalGridRule` checks that condition on the
original grid's own voxels, :func:`exact_face_depth` covers it with worst-case face layers (3, 2, 2
for IRCAD 1.1). The one residual risk is global: a false
positive region larger than the liver and not connected to it would be kept by dense inference and
never found here (dense inference is then wrong anyway).

If the grown region holds less than ``min_liver_ml`` of ``p >= threshold`` (a seed missed the liver,
or no liver in the scan), every remaining body segment is evaluated: the result then equals dense
inference exactly. With several networks (a fold ensemble) the faces are judged on the members'
mean, so the growth is exact for the ensemble's probability map.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from livseg_pipeline.inference.dense import (
    SegmentPredictor,
    Start,
    candidate_segments,
    default_cell_size,
    make_runner,
    padded_shape,
)
from livseg_pipeline.io.image_io import Geometry
from livseg_pipeline.preprocessing.intensity import hu_to_normalized
from livseg_pipeline.preprocessing.resampling import index_to_index


@dataclass
class GrowResult:
    runner: SegmentPredictor
    evaluated: int
    candidates: int
    fell_back: bool          # True: the grown region was too small, everything was evaluated

    def summary(self) -> dict:
        return {"segments_evaluated": self.evaluated, "segments_candidates": self.candidates,
                "fell_back_to_dense": self.fell_back}


def seed_order(image: np.ndarray, plans, candidates: Sequence[Start], segment_size: int,
               body_mask: np.ndarray | None = None, tissue_hu: tuple[float, float] = (30.0, 180.0)) -> list[Start]:
    """Candidate segments sorted by their count of liver-like voxels (soft tissue, patient's right).

    The arrays are in LPS, so the patient's right is low x; the body's x-centre splits the halves.
    """
    pp = plans.preprocessing
    lo, hi = (hu_to_normalized(h, pp.hu_window, pp.intensity_range) for h in tissue_hu)
    tissue = (image >= lo) & (image <= hi)
    if body_mask is not None:
        tissue &= body_mask
        xs = np.flatnonzero(body_mask.any(axis=(0, 1)))
        centre = (int(xs[0]) + int(xs[-1])) // 2 if len(xs) else image.shape[2] // 2
    else:
        centre = image.shape[2] // 2
    tissue[:, :, centre:] = False
    S = segment_size
    pz, py, px = padded_shape(image.shape, S)
    t = np.zeros((pz, py, px), dtype=np.uint8)
    t[: image.shape[0], : image.shape[1], : image.shape[2]] = tissue
    counts = t.reshape(pz // S, S, py // S, S, px // S, S).sum(axis=(1, 3, 5), dtype=np.int64)
    return sorted(candidates, key=lambda s: -int(counts[s[0] // S, s[1] // S, s[2] // S]))


_OFFSETS = [(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dz, dy, dx) != (0, 0, 0)]


def _face_neighbours(block: np.ndarray, start: Start, segment_size: int, depth: Sequence[int],
                     level: float) -> list[Start]:
    """Neighbours (across faces, edges and corners: 26-connected components may cross a segment
    boundary at an edge or a corner only) whose border region of ``block`` (``depth[a]`` voxel
    layers deep along axis ``a``) holds a voxel >= level."""
    S = segment_size
    near = [{-1: slice(0, d), 0: slice(None), 1: slice(S - d, S)} for d in depth]
    out = []
    for off in _OFFSETS:
        if block[tuple(near[a][d] for a, d in enumerate(off))].max() >= level:
            out.append(tuple(int(s + d * S) for s, d in zip(start, off)))
    return out


def _depths(face_depth: int | Sequence[int]) -> tuple[int, int, int]:
    d = (int(face_depth),) * 3 if np.isscalar(face_depth) else tuple(int(v) for v in face_depth)  # type: ignore[arg-type]
    if len(d) != 3 or min(d) < 1:
        raise ValueError(f"face depth must be one or three positive voxel counts, got {face_depth}")
    return d  # type: ignore[return-value]


def exact_face_depth(original: Geometry, preprocessed: Geometry) -> tuple[int, int, int]:
    """Border layers ``(z, y, x)`` of a cell that make growth exact for a mask thresholded on the
    ORIGINAL grid after linear resampling (what :class:`~livseg_pipeline.inference.predictor.Predictor`
    does).

    An original voxel ``v`` with ``p(v) >= t`` has a stencil voxel ``c`` with ``p(c) >= t`` less than
    one preprocessed voxel away per axis; a 26-neighbour ``w`` of ``v`` lies ``r_a`` preprocessed voxels
    away along axis ``a`` at most (``r_a = sum_i |A_ai|``, ``A`` the map from original to preprocessed
    voxel indices), and its stencil less than one voxel from it. So a value not yet computed can join
    the liver's component only if it lies less than ``2 + r_a`` voxels from some ``c``: queueing the
    neighbour across a face whose outer ``ceil(2 + r_a) - 1`` layers hold a voxel ``>= t`` evaluates
    every such value before the growth ends. A coarse original axis needs more layers: a gap of one
    preprocessed voxel below ``t`` is bridged by the resampling when the original spacing exceeds
    the preprocessed one.

    >>> exact_face_depth(Geometry((0.57, 0.57, 1.6)), Geometry((1.4, 1.4, 1.4)))   # IRCAD 1.1
    (3, 2, 2)
    >>> exact_face_depth(Geometry((0.8, 0.8, 5.0)), Geometry((1.4, 1.4, 1.4)))     # 5 mm slices
    (5, 2, 2)
    """
    # original voxel steps in preprocessed voxels, x/y/z order: rows preprocessed axes, columns original
    a, _ = index_to_index(original, preprocessed)
    reach = np.abs(a).sum(axis=1)
    depth = [int(math.ceil(2.0 + r - 1e-9)) - 1 for r in reach]
    return depth[2], depth[1], depth[0]


class OriginalGridRule:
    """Which cells the mask thresholded on the ORIGINAL grid needs, from the values themselves.

    For an original grid whose axes are parallel to the preprocessed grid's (any spacing, offset or
    flip; what reorientation to LPS leaves for ordinary CTs), linear resampling is separable: the
    original voxels lie on a lattice of preprocessed positions ``x_i = A i + b`` per axis. After a
    cell is computed, the resampled probability ``P`` of every original voxel whose interpolation
    reads the cell is computed exactly as the restore will (trilinear; unevaluated voxels 0). For
    each voxel with ``P >= t``, every cell read by it or by any of its 26 neighbours is needed: the
    growth then ends with no unevaluated value next to the thresholded mask, the condition for the
    liver's component to be exact (module docstring). A voxel's value is final once its last cell
    is computed, and that cell's check sees it. This queues fewer cells than the face depths of
    :func:`exact_face_depth`, which assume the worst values (IRCAD 1.1: 2.43 instead of 2.58 TFLOP).
    """

    def __init__(self, original: Geometry, original_shape_zyx: Sequence[int], preprocessed: Geometry,
                 volume_shape_zyx: Sequence[int], cell_size: int, threshold: float) -> None:
        A, b = index_to_index(original, preprocessed)
        if np.abs(A - np.diag(np.diag(A))).max() > 1e-6 * np.abs(A).max():
            raise ValueError("OriginalGridRule needs an original grid with axes parallel to the preprocessed one")
        self.cell = int(cell_size)
        # a little below t: resampling rounds differently from this computation
        self.level = float(threshold) - 1e-4
        self.axes = [_AxisLattice(float(A[a, a]), float(b[a]), int(original_shape_zyx[2 - a]),
                                  int(volume_shape_zyx[2 - a]), self.cell) for a in (2, 1, 0)]

    @classmethod
    def maybe(cls, original: Geometry, original_shape_zyx: Sequence[int], preprocessed: Geometry,
              volume_shape_zyx: Sequence[int], cell_size: int, threshold: float) -> OriginalGridRule | None:
        """The rule, or None for an oblique original grid (use :func:`exact_face_depth` there)."""
        try:
            return cls(original, original_shape_zyx, preprocessed, volume_shape_zyx, cell_size, threshold)
        except ValueError:
            return None

    def needed(self, start: Start, values: Callable[[tuple[slice, slice, slice]], np.ndarray]) -> list[Start]:
        """Cells (starts) needed because of the cell at ``start``; ``values(slices)`` gives the current
        probabilities (0 where not computed) of a region of the volume."""
        per_axis = [ax.at(s // self.cell) for ax, s in zip(self.axes, start)]
        if any(p is None for p in per_axis):
            return []
        (wz, sz, mz), (wy, sy, my), (wx, sx, mx) = per_axis    # type: ignore[misc]
        block = values((sz, sy, sx))
        p = np.einsum("ak,bl,cm,klm->abc", wz, wy, wx, block, optimize=True)
        hot = p >= self.level
        if not hot.any():
            return []
        out = []
        for cz, vz in mz.items():
            hz = hot[vz].any(axis=0)
            if not hz.any():
                continue
            for cy, vy in my.items():
                hzy = hz[vy].any(axis=0)
                if not hzy.any():
                    continue
                for cx, vx in mx.items():
                    if hzy[vx].any():
                        out.append((cz * self.cell, cy * self.cell, cx * self.cell))
        return [c for c in out if c != tuple(start)]


class _AxisLattice:
    """One axis of :class:`OriginalGridRule`: original positions, their interpolation weights and the
    cells their neighbourhoods read, per cell index of the preprocessed volume."""

    def __init__(self, scale: float, offset: float, n_original: int, n_volume: int, cell: int) -> None:
        pos = scale * np.arange(n_original, dtype=float) + offset
        # outside [-0.5, n - 0.5] the resampling gives its fill (0) and reads nothing
        inside = (pos >= -0.5 - 1e-6) & (pos <= n_volume - 0.5 + 1e-6)
        c = np.clip(pos, 0.0, n_volume - 1.0)
        lo = np.minimum(np.floor(c), max(n_volume - 2, 0)).astype(int)
        hi = np.minimum(lo + 1, n_volume - 1)
        self.inside, self.lo, self.hi, self.frac = inside, lo, hi, c - lo
        self.n_volume, self.cell = n_volume, cell
        # voxels read by an original voxel and its two neighbours along this axis (inside ones only)
        big = np.iinfo(np.int64).max
        lo_in = np.where(inside, lo, big)
        hi_in = np.where(inside, hi, -1)
        first = np.minimum(lo_in, np.minimum(np.r_[big, lo_in[:-1]], np.r_[lo_in[1:], big]))
        last = np.maximum(hi_in, np.maximum(np.r_[-1, hi_in[:-1]], np.r_[hi_in[1:], -1]))
        self.need_first, self.need_last = first // cell, last // cell
        self._cache: dict[int, tuple | None] = {}

    def at(self, k: int) -> tuple | None:
        """For cell ``k``: interpolation weights (positions x block voxels), the block's slice, and per
        needed cell index the positions (mask) whose neighbourhoods read it; None if no original
        voxel reads the cell."""
        if k not in self._cache:
            s0, s1 = k * self.cell, min((k + 1) * self.cell, self.n_volume) - 1
            reads = self.inside & (self.lo + 1 >= s0) & (self.lo <= s1)
            idx = np.flatnonzero(reads)
            if len(idx) == 0:
                self._cache[k] = None
            else:
                lo, hi, f = self.lo[idx], self.hi[idx], self.frac[idx]
                base, top = int(lo.min()), int(hi.max())
                w = np.zeros((len(idx), top - base + 1))
                w[np.arange(len(idx)), lo - base] += 1.0 - f
                w[np.arange(len(idx)), hi - base] += f
                first, last = self.need_first[idx], self.need_last[idx]
                masks = {int(c): (first <= c) & (c <= last) for c in range(int(first.min()), int(last.max()) + 1)}
                self._cache[k] = (w, slice(base, top + 1), masks)
        return self._cache[k]


def grow_region(evaluate: Callable[[list[Start]], Sequence[Start]], block: Callable[[Start], np.ndarray],
                seeds: Sequence[Start], allowed: set[Start], segment_size: int, batch_size: int, level: float,
                face_depth: int | Sequence[int] = 2,
                neighbours: Callable[[Start], Sequence[Start]] | None = None) -> set[Start]:
    """Breadth-first growth over segments: ``evaluate(batch)`` computes segments (returns those newly
    computed), ``block(start)`` gives a computed segment's probabilities; a face holding a voxel
    ``>= level`` queues the neighbour across it if it is ``allowed``. Returns the segments visited.
    ``neighbours(start)``, if given, replaces the face rule (e.g. :class:`OriginalGridRule`); it is
    asked after the whole batch holding ``start`` is computed.

    ``batch_size <= 0`` evaluates whole waves (everything queued so far) at once, so that a box
    engine can merge a wave's segments into a few large boxes."""
    depth = _depths(face_depth)
    if neighbours is None:
        def neighbours(start: Start) -> Sequence[Start]:
            return _face_neighbours(block(start), start, segment_size, depth, level)
    visited: set[Start] = set()
    queue = list(dict.fromkeys(seeds))
    queued = set(queue)
    while queue:
        take = len(queue) if batch_size <= 0 else batch_size
        batch, queue = queue[:take], queue[take:]
        evaluate(batch)
        for start in batch:
            visited.add(start)
            for nb in neighbours(start):
                if nb in allowed and nb not in queued:
                    queued.add(nb)
                    queue.append(nb)
    return visited


def predict_grow(networks: torch.nn.Module | Sequence[torch.nn.Module], image: np.ndarray, plans,
                 device: torch.device | str = "cpu", segment_size: int | None = None, batch_size: int | None = None,
                 body_mask: np.ndarray | None = None, threshold: float = 0.5, grow_fraction: float = 1.0,
                 face_depth: int | Sequence[int] = 1, num_seeds: int = 2, max_seeds: int = 8,
                 min_liver_ml: float = 150.0, max_fraction: float = 0.4, progress=None,
                 stand_in_probabilities: np.ndarray | None = None, engine: str = "boxes",
                 dry_run: bool = False,
                 original_grid: tuple[Geometry, Sequence[int], Geometry] | None = None) -> GrowResult:
    """Probabilities of the segments connected to the liver (see the module docstring).

    Faces are judged at ``grow_fraction * threshold`` over ``face_depth`` voxel layers (one count or
    ``(z, y, x)``); the defaults (1.0, 1) are exact for a mask thresholded on the preprocessed grid,
    :func:`exact_face_depth` for one thresholded after resampling to the original grid. Once the
    evaluated cells would pass ``max_fraction`` of the candidates, every remaining candidate is
    evaluated at once (one cover of large boxes costs less than more thin waves). Returns the runner
    (``runner.result()`` = mean probability, ``runner.member_results()`` = per network) and counts.

    ``original_grid = (original geometry, original shape (z, y, x), preprocessed geometry)``: the
    mask will be thresholded after resampling to that grid; growth then follows
    :class:`OriginalGridRule` (axis-parallel grids) or :func:`exact_face_depth` (oblique ones)
    instead of ``grow_fraction`` and ``face_depth``, and is exact for that mask.

    ``stand_in_probabilities`` (benchmarks only) replaces each evaluated segment's output by this
    preprocessed-grid map before the faces are judged: it lets an untrained network be timed on
    exactly the segments a trained one would visit.
    """
    image = np.asarray(image)
    S = int(segment_size or default_cell_size(plans, engine, "grow"))
    # 0: whole waves at once (see grow_region)
    B = int(plans.inference.batch_size if batch_size is None else batch_size)
    runner = make_runner(networks, image, plans, device, S, max(1, B), engine, dry_run)
    candidates = candidate_segments(image.shape, S, body_mask)
    level = float(grow_fraction) * float(threshold)
    voxel_ml = float(np.prod(plans.preprocessing.target_spacing_mm)) / 1000.0
    if progress is not None:
        progress.total = len(candidates)
        progress.refresh()

    fake = None
    if stand_in_probabilities is not None:
        fake = np.zeros(runner.members[0].shape, np.float32)
        fake[tuple(slice(0, n) for n in stand_in_probabilities.shape)] = stand_in_probabilities

    def evaluate(batch: list[Start]) -> Sequence[Start]:
        if len(runner.done) + len(batch) > max_fraction * len(candidates):
            # growth has spread over much of the body (a weak model, a small volume): computing
            # everything left in one cover is cheaper than more waves; the result is the same
            batch = list(candidates)
        done = runner.run(batch, progress)
        if fake is not None:
            for m in runner.members:
                for z, y, x in done:
                    m[z: z + S, y: y + S, x: x + S] = fake[z: z + S, y: y + S, x: x + S]
        return done

    z, y, x = image.shape
    neighbours = None
    if original_grid is not None:
        original, original_shape, preprocessed = original_grid
        rule = OriginalGridRule.maybe(original, original_shape, preprocessed, image.shape, S, threshold)
        if rule is None:
            level, face_depth = float(threshold), exact_face_depth(original, preprocessed)
        else:
            def neighbours(start: Start) -> list[Start]:
                return rule.needed(start, runner.region_mean)

    def found_ml() -> float:
        return sum(int(np.count_nonzero(runner.segment_mean(s)[: z - s[0], : y - s[1], : x - s[2]] >= threshold))
                   for s in runner.done) * voxel_ml

    # grow from the best seeds; if they miss the liver, from the next ones (up to max_seeds)
    ranked = seed_order(image, plans, candidates, S, body_mask)[: max(num_seeds, max_seeds)]
    while ranked and (not runner.done or found_ml() < min_liver_ml):
        # seeds already reached by an earlier growth are dropped, so every pass consumes the list
        # (a pass whose seeds were all done used to leave it unchanged and loop for ever)
        ranked = [s for s in ranked if s not in runner.done]
        seeds, ranked = ranked[: max(1, num_seeds)], ranked[max(1, num_seeds):]
        if seeds:
            grow_region(evaluate, runner.segment_mean, seeds, set(candidates), S, B, level, face_depth, neighbours)
    fell_back = found_ml() < min_liver_ml
    if fell_back:
        runner.run(candidates, progress)
    return GrowResult(runner, len(runner.done), len(candidates), fell_back)
