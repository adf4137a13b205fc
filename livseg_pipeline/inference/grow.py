"""Region-growing inference: evaluate only the segments reachable from the liver.

Post-processing keeps the largest connected component of ``p >= threshold`` (the liver). A segment
that no path of ``p >= threshold`` voxels links to the liver cannot change that component, so it
need not be evaluated. Growing finds every such path:

1. seeds: the body segments with the most liver-like voxels (soft tissue HU on the patient's right),
   best first, two at a time (up to eight if the first ones find no liver);
2. after a segment is evaluated, each of its six faces (the outer ``face_depth`` voxel layers), twelve
   edges and eight corners is looked at; if any voxel there has ``p >= grow_threshold`` (a fraction
   of the decision threshold), the neighbouring segment across it is queued;
3. the queue is worked off in batches until empty.

The result is identical to dense inference (with the same body skip) on every segment connected to
the seeds through ``p >= grow_threshold``; all other segments are left at probability 0. If the grown
region holds less than ``min_liver_ml`` of ``p >= threshold`` (a seed missed the liver, or no liver in
the scan), every remaining body segment is evaluated: the result then equals dense inference exactly.
With several networks (a fold ensemble) the faces are judged on the members' mean, so the growth
is exact for the ensemble's probability map.
"""

from __future__ import annotations

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
from livseg_pipeline.preprocessing.intensity import hu_to_normalized


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


def _face_neighbours(block: np.ndarray, start: Start, segment_size: int, depth: int, level: float) -> list[Start]:
    """Neighbours (across faces, edges and corners: 26-connected components may cross a segment
    boundary at an edge or a corner only) whose border region of ``block`` holds a voxel >= level."""
    S = segment_size
    near = {-1: slice(0, depth), 0: slice(None), 1: slice(S - depth, S)}
    out = []
    for off in _OFFSETS:
        if block[tuple(near[d] for d in off)].max() >= level:
            out.append(tuple(int(s + d * S) for s, d in zip(start, off)))
    return out


def grow_region(evaluate: Callable[[list[Start]], Sequence[Start]], block: Callable[[Start], np.ndarray],
                seeds: Sequence[Start], allowed: set[Start], segment_size: int, batch_size: int, level: float,
                face_depth: int = 2) -> set[Start]:
    """Breadth-first growth over segments: ``evaluate(batch)`` computes segments (returns those newly
    computed), ``block(start)`` gives a computed segment's probabilities; a face holding a voxel
    ``>= level`` queues the neighbour across it if it is ``allowed``. Returns the segments visited.

    ``batch_size <= 0`` evaluates whole waves (everything queued so far) at once, so that a box
    engine can merge a wave's segments into a few large boxes."""
    visited: set[Start] = set()
    queue = list(dict.fromkeys(seeds))
    queued = set(queue)
    while queue:
        take = len(queue) if batch_size <= 0 else batch_size
        batch, queue = queue[:take], queue[take:]
        evaluate(batch)
        for start in batch:
            visited.add(start)
            for nb in _face_neighbours(block(start), start, segment_size, face_depth, level):
                if nb in allowed and nb not in queued:
                    queued.add(nb)
                    queue.append(nb)
    return visited


def predict_grow(networks: torch.nn.Module | Sequence[torch.nn.Module], image: np.ndarray, plans,
                 device: torch.device | str = "cpu", segment_size: int | None = None, batch_size: int | None = None,
                 body_mask: np.ndarray | None = None, threshold: float = 0.5, grow_fraction: float = 0.5,
                 face_depth: int = 2, num_seeds: int = 2, max_seeds: int = 8, min_liver_ml: float = 150.0,
                 max_fraction: float = 0.4,
                 progress=None, stand_in_probabilities: np.ndarray | None = None, engine: str = "boxes",
                 dry_run: bool = False) -> GrowResult:
    """Probabilities of the segments connected to the liver (see the module docstring).

    ``grow_threshold = grow_fraction * threshold``. Once the evaluated cells would pass
    ``max_fraction`` of the candidates, every remaining candidate is evaluated at once (one cover of
    large boxes costs less than more thin waves). Returns the runner (``runner.result()`` = mean
    probability, ``runner.member_results()`` = per network) and counts.

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
            grow_region(evaluate, runner.segment_mean, seeds, set(candidates), S, B, level, face_depth)
    fell_back = found_ml() < min_liver_ml
    if fell_back:
        runner.run(candidates, progress)
    return GrowResult(runner, len(runner.done), len(candidates), fell_back)
