"""Post-processing on analytic shapes: island removed, liver joined by a thin bridge kept minus the
bridge, anisotropic spacing handled in mm, removed volumes reported."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from livseg_pipeline.inference.postprocessing import (
    ellipsoid_element,
    erode,
    postprocess,
    threshold_only,
)


def ball(shape, centre_mm, radius_mm, spacing_zyx):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing_zyx)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre_mm)) <= radius_mm ** 2


@pytest.fixture(scope="module")
def scene():
    """Liver: ball r 30 mm; island: ball r 10 mm, 25 mm from the liver surface, joined to it by a
    straight bridge 2 mm thick; a free island elsewhere; spacing 0.8 x 0.8 x 2.0 mm."""
    sp = (2.0, 0.8, 0.8)
    shape = (50, 110, 160)
    liver = ball(shape, (50, 44, 40), 30, sp)
    island = ball(shape, (50, 44, 105), 10, sp)
    zz, yy, xx = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, sp)], indexing="ij")
    bridge = (np.abs(zz - 50) <= 1.0) & (np.abs(yy - 44) <= 1.0) & (xx >= 40) & (xx <= 105)
    free = ball(shape, (20, 20, 120), 6, sp)
    prob = np.where(liver | island | bridge | free, 0.9, 0.05).astype(np.float32)
    return sp, liver, island, bridge & ~liver & ~island, free, prob


def test_bridged_island_and_free_island_removed_liver_kept(scene):
    sp, liver, island, bridge, free, prob = scene
    r = postprocess(prob, sp, threshold=0.5, erosion_radius_mm=4.2, connectivity=26)
    m = r.mask.astype(bool)
    assert r.mask.dtype == np.uint8 and r.core_found
    assert m[liver].all()                       # the whole liver is kept (no rounding off)
    assert not m[island].any() and not m[free].any()
    # the bridge is gone but for a stub within the erosion radius of the liver surface
    kept_bridge = bridge & m
    assert kept_bridge.sum() < 0.1 * bridge.sum()
    assert not (m & ~liver & ~ndimage.binary_dilation(liver, iterations=6)).any()
    voxel_ml = np.prod(sp) / 1000
    expect_free = free.sum() * voxel_ml
    assert any(abs(v - expect_free) < 1e-6 for v in r.removed_components_ml)
    assert r.removed_ml == pytest.approx(((island | bridge | free) & ~m).sum() * voxel_ml)
    assert r.kept_ml == pytest.approx(m.sum() * voxel_ml)


def test_reconstruction_mode_keeps_what_is_connected(scene):
    sp, liver, island, bridge, free, prob = scene
    m = postprocess(prob, sp, 0.5, 4.2, 26, mode="reconstruction").mask.astype(bool)
    assert m[liver].all() and m[island].all() and m[bridge].all() and not m[free].any()


@pytest.mark.parametrize("sp", [(2.0, 0.7, 0.7), (1.0, 1.3, 5.0), (0.5, 2.0, 1.1)])
def test_erosion_is_ellipsoid_in_voxels_for_anisotropic_spacing(sp):
    rng = np.random.default_rng(0)
    mask = ndimage.binary_opening(rng.random((20, 37, 43)) > 0.25, iterations=1)
    mask[3:17, 5:30, 4:40] = True      # a solid block that survives
    ref = ndimage.binary_erosion(mask, structure=ellipsoid_element(4.2, sp), border_value=0)
    assert ref.any()
    np.testing.assert_array_equal(erode(mask, 4.2, sp), ref)
    if sp == (2.0, 0.7, 0.7):
        assert ellipsoid_element(4.2, sp).shape == (5, 13, 13)


def test_everything_eroded_falls_back_to_largest_component():
    p = np.zeros((10, 20, 20), np.float32)
    p[4:6, 2:10, 2:10] = 0.9   # 2 voxels thick: nothing survives a 4 mm erosion at 1 mm
    p[4:5, 15:17, 15:17] = 0.9
    r = postprocess(p, (1, 1, 1), 0.5, 4.0)
    assert not r.core_found and r.mask.sum() == 2 * 8 * 8 and len(r.removed_components_ml) == 1


def test_empty_and_threshold_rule():
    p = np.full((5, 5, 5), 0.5, np.float16)
    assert threshold_only(p, 0.5).all() and not threshold_only(p, 0.51).any()
    r = postprocess(np.zeros((5, 5, 5)), (1, 1, 1))
    assert r.mask.sum() == 0 and r.removed_components_ml == []


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_label_components_equals_scipy(connectivity):
    from livseg_pipeline.inference.postprocessing import connectivity_structure
    from livseg_pipeline.utils.components import label_components

    mask = np.random.default_rng(1).random((12, 30, 33)) > 0.88
    got, n = label_components(mask, connectivity)
    want, m = ndimage.label(mask, connectivity_structure(connectivity))
    assert n == m > 10
    np.testing.assert_array_equal(got, want)
