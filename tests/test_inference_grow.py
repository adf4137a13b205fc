"""Region growing over segments on synthetic probability maps (no network): it follows 26-connected
structures across faces, edges and corners, and never visits what is not connected."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from livseg_pipeline.inference.grow import OriginalGridRule, exact_face_depth, grow_region
from livseg_pipeline.io.image_io import Geometry
from livseg_pipeline.preprocessing.resampling import index_to_index, resample


def run(prob: np.ndarray, seeds, S: int = 10, level: float = 0.25):
    grid = {(z, y, x) for z in range(0, prob.shape[0], S) for y in range(0, prob.shape[1], S)
            for x in range(0, prob.shape[2], S)}
    evaluated: list = []
    visited = grow_region(lambda b: evaluated.extend(b) or b,
                          lambda s: prob[s[0]: s[0] + S, s[1]: s[1] + S, s[2]: s[2] + S], seeds, grid, S, 3, level)
    assert len(evaluated) == len(set(evaluated))  # each segment once
    return visited


def test_diagonal_chain_crossing_only_at_corners_is_followed():
    p = np.zeros((30, 30, 30), np.float32)
    i = np.arange(30)
    p[i, i, i] = 0.9
    p[2:5, 22:26, 2:6] = 0.9          # an unconnected blob elsewhere
    visited = run(p, [(0, 0, 0)])
    assert {(0, 0, 0), (10, 10, 10), (20, 20, 20)} <= visited   # through the corners
    assert (0, 20, 0) not in visited                             # the blob is not connected
    # faces are judged on their outer two layers: a neighbour of a face voxel may be visited too,
    # never one further away
    assert all(max(abs(a - b) for a, b in zip(v, (z, z, z))) <= 10 for v in visited for z in [v[0]])


def test_growth_stays_inside_the_structure_and_allowed_segments():
    p = np.zeros((30, 40, 20), np.float32)
    p[3:27, 5:12, 3:8] = 0.6           # spans z segments 0..2 in one (y, x) column
    visited = run(p, [(10, 0, 0)])
    assert visited == {(0, 0, 0), (10, 0, 0), (20, 0, 0), (0, 10, 0), (10, 10, 0), (20, 10, 0)}
    assert run(p * 0.2, [(10, 0, 0)]) == {(10, 0, 0)}   # below the growth level: no growth


def _component_on_original(prob: np.ndarray, pre: Geometry, orig: Geometry, shape, seed_zyx) -> np.ndarray:
    """What the predictor keeps: the 26-connected part of ``resample(p) >= 0.5`` (original grid)
    holding ``seed_zyx``."""
    on_orig = resample(prob, pre, orig, shape, "linear")
    labels, _ = ndimage.label(on_orig >= 0.5, np.ones((3, 3, 3)))
    assert labels[seed_zyx] > 0
    return labels == labels[seed_zyx]


def test_exact_face_depth_follows_a_gap_that_the_coarse_original_grid_bridges():
    # preprocessed 1.4 mm: a liver in cell z 0-14, then ONE voxel layer (z = 14, the cell's outer
    # layer) below the threshold, then an organ in the next cell. The original grid has 1.6 mm slices
    # whose z positions straddle the gap (13.4 and 14.54 in preprocessed voxels): resampled, both are
    # >= 0.5, so on the original grid the organ is joined to the liver.
    S = 15
    p = np.zeros((45, S, S), np.float32)
    p[2:14, 2:13, 2:13] = 1.0
    p[15:40, 2:13, 2:13] = 1.0
    pre = Geometry((1.4, 1.4, 1.4))
    orig = Geometry((0.7, 0.7, 1.6), origin=(0.0, 0.0, 1.4 * (13.4 - 11 * 1.6 / 1.4)))
    shape = (36, 30, 30)
    seed = (4, 15, 15)       # original z 4 lies at preprocessed z ~5.4: inside the liver
    full = _component_on_original(p, pre, orig, shape, seed)
    assert full[25].any()    # the organ (original z 25 ~ preprocessed 29) is in the liver's component

    def grown(depth) -> np.ndarray:
        grid = {(z, 0, 0) for z in range(0, 45, S)}
        seen = grow_region(lambda b: b, lambda s: p[s[0]: s[0] + S], [(0, 0, 0)], grid, S, 0, 0.5,
                           face_depth=depth)
        q = np.zeros_like(p)
        for z, _, _ in seen:
            q[z: z + S] = p[z: z + S]
        return _component_on_original(q, pre, orig, shape, seed)

    depth = exact_face_depth(orig, pre)
    assert depth == (3, 2, 2)
    np.testing.assert_array_equal(grown(depth), full)
    # judging only the outer layer (exact on the preprocessed grid itself) misses the bridged organ
    assert not grown(1)[25].any()
    # the rule that resamples the values sees the bridge too
    q = _grow_with_rule(p, pre, orig, shape, S, [(0, 0, 0)])
    np.testing.assert_array_equal(_component_on_original(q, pre, orig, shape, seed), full)


def _grow_with_rule(p: np.ndarray, pre: Geometry, orig: Geometry, shape, S: int, seeds) -> np.ndarray:
    """Growth with :class:`OriginalGridRule` over all cells of ``p``; returns the computed map."""
    grid = {(z, y, x) for z in range(0, p.shape[0], S) for y in range(0, p.shape[1], S)
            for x in range(0, p.shape[2], S)}
    q = np.zeros_like(p)

    def evaluate(batch):
        for z, y, x in batch:
            q[z: z + S, y: y + S, x: x + S] = p[z: z + S, y: y + S, x: x + S]
        return batch

    rule = OriginalGridRule(orig, shape, pre, p.shape, S, 0.5)
    seen = grow_region(evaluate, None, seeds, grid, S, 0, 0.5, neighbours=lambda s: rule.needed(s, lambda r: q[r]))
    _grow_with_rule.cells = (len(seen), len(grid))
    return q


def test_original_grid_rule_gives_the_full_component_on_random_grids():
    """Random organ-like maps, random axis-parallel original grids (spacing, offset, flips): the
    liver's component on the original grid is the full map's, with fewer cells computed."""
    rng = np.random.default_rng(7)
    S = 10
    evaluated = total = 0
    for _ in range(6):
        p = ndimage.gaussian_filter(rng.random((30, 40, 40)), 3.0)
        p = (((p - p.min()) / (p.max() - p.min())) ** 2).astype(np.float32)   # one peak at 1
        pre = Geometry((1.4, 1.4, 1.4), origin=(0.0, 0.0, 0.0))
        sp = rng.uniform(0.5, 3.2, 3)
        flips = rng.choice([-1.0, 1.0], 3)
        shape = tuple(int(n * 1.4 / s) for n, s in zip((30, 40, 40), sp[::-1]))
        origin = [(-0.5 * 1.4 + rng.uniform(0, 1.0)) if f > 0 else (n - 0.5) * 1.4 - rng.uniform(0, 1.0)
                  for f, n in zip(flips, (40, 40, 30))]
        orig = Geometry(tuple(sp), tuple(origin), (flips[0], 0.0, 0.0, 0.0, flips[1], 0.0, 0.0, 0.0, flips[2]))
        full_orig = resample(p, pre, orig, shape, "linear")
        seed = np.unravel_index(np.argmax(full_orig), shape)
        # growth starts in a cell that the seed voxel's interpolation reads
        A, b = index_to_index(orig, pre)
        at = np.floor(A @ np.array(seed[::-1], float) + b).astype(int)[::-1]
        start = tuple(int(np.clip(v, 0, n - 1)) // S * S for v, n in zip(at, p.shape))
        full = _component_on_original(p, pre, orig, shape, seed)
        q = _grow_with_rule(p, pre, orig, shape, S, [start])
        np.testing.assert_array_equal(_component_on_original(q, pre, orig, shape, seed), full)
        assert 0 < full.sum() < full.size
        evaluated, total = evaluated + _grow_with_rule.cells[0], total + _grow_with_rule.cells[1]
    assert evaluated < total      # cells were left out, and the component is still the full one


def test_original_grid_rule_only_for_axis_parallel_grids():
    pre = Geometry((1.4, 1.4, 1.4))
    c, s = np.cos(0.3), np.sin(0.3)
    tilted = Geometry((1.0, 1.0, 2.0), direction=(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    flipped = Geometry((1.0, 1.0, 2.0), direction=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    assert OriginalGridRule.maybe(tilted, (10, 20, 20), pre, (15, 15, 15), 15, 0.5) is None
    assert OriginalGridRule.maybe(flipped, (10, 20, 20), pre, (15, 15, 15), 15, 0.5) is not None


def test_exact_face_depth_of_oblique_and_equal_grids():
    iso = Geometry((1.4, 1.4, 1.4))
    assert exact_face_depth(iso, iso) == (2, 2, 2)      # a stencil voxel on each side of the step
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    tilted = Geometry((1.4, 1.4, 1.4), direction=(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    # a step along a tilted axis moves along both x and y: (cos + sin) = 1.37 voxels
    assert exact_face_depth(tilted, iso) == (2, 3, 3)
