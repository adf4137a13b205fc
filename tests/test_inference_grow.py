"""Region growing over segments on synthetic probability maps (no network): it follows 26-connected
structures across faces, edges and corners, and never visits what is not connected."""

from __future__ import annotations

import numpy as np

from livseg_pipeline.inference.grow import grow_region


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
