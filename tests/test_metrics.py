"""Metrics against analytic answers, a brute-force reference and medpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from livseg_pipeline.evaluation.metrics import compute_metrics, dice, surface_distances, surface_mask

SPACING = (2.0, 0.7, 0.9)  # (z, y, x) mm, deliberately anisotropic


def _ball(shape, spacing, centre_mm, radius_mm):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre_mm)) <= radius_mm ** 2


def _blob(seed, shape=(18, 40, 36), sigma=(1.0, 3.0, 3.0), level=0.6):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > np.quantile(field, level)


def _brute_force(a, b, spacing, connectivity=1):
    """Independent reference: medpy-style surfaces on the full grid, all-pairs distances."""
    structure = ndimage.generate_binary_structure(3, connectivity)
    sa = a & ~ndimage.binary_erosion(a, structure)
    sb = b & ~ndimage.binary_erosion(b, structure)
    d = cdist(np.argwhere(sa) * spacing, np.argwhere(sb) * spacing)
    return d.min(axis=1), d.min(axis=0)


def test_concentric_spheres_give_the_radius_difference():
    r, d = 14.0, 5.0
    shape = (26, 70, 56)
    centre = [n * s / 2 for n, s in zip(shape, SPACING)]
    inner, outer = _ball(shape, SPACING, centre, r), _ball(shape, SPACING, centre, r + d)
    m = compute_metrics(outer, inner, SPACING)
    voxel = max(SPACING)
    assert abs(m["hd_mm"] - d) <= voxel
    assert abs(m["msd_mm"] - d) <= voxel
    assert abs(m["hd95_mm"] - d) <= voxel
    assert m["rv"] == pytest.approx((r / (r + d)) ** 3, rel=0.1)
    assert m["vol_ref_ml"] == pytest.approx(4 / 3 * math.pi * (r + d) ** 3 / 1000, rel=0.05)
    assert m["dsc"] == pytest.approx(2 * r ** 3 / (r ** 3 + (r + d) ** 3), rel=0.05)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3])
def test_shifted_cube_hausdorff_is_the_shift(axis, k):
    a = np.zeros((20, 24, 22), bool)
    a[4:12, 5:15, 6:14] = True
    b = np.roll(a, k, axis=axis)
    m = compute_metrics(a, b, SPACING)
    assert m["hd_mm"] == pytest.approx(k * SPACING[axis], rel=1e-12)
    assert m["rv"] == 1.0
    side = a.sum(axis=axis).max()  # cube length along the axis in voxels
    assert m["dsc"] == pytest.approx((side - k) / side)


def test_identical_masks():
    a = _blob(1)
    m = compute_metrics(a, a.astype(np.uint8) * 255, SPACING)
    assert (m["dsc"], m["rv"], m["hd_mm"], m["hd95_mm"], m["msd_mm"]) == (1.0, 1.0, 0.0, 0.0, 0.0)
    assert m["empty"] == "none"


def test_volume_ratio_and_volumes_exact():
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros_like(a)
    a[2:8, 2:8, 2:8] = True   # 216 voxels
    b[3:8, 2:8, 2:8] = True   # 180 voxels
    m = compute_metrics(a, b, SPACING)
    voxel_ml = np.prod(SPACING) / 1000
    assert m["rv"] == 180 / 216
    assert m["vol_ref_ml"] == pytest.approx(216 * voxel_ml, rel=1e-15)
    assert m["vol_pred_ml"] == pytest.approx(180 * voxel_ml, rel=1e-15)
    assert m["dsc"] == 2 * 180 / (216 + 180)


def test_empty_masks_are_flagged_never_zero():
    a = np.zeros((6, 6, 6), bool)
    full = a.copy()
    full[2:4, 2:4, 2:4] = True
    both = compute_metrics(a, a, SPACING)
    assert both["empty"] == "both" and both["dsc"] == 1.0
    assert all(math.isnan(both[k]) for k in ("rv", "msd_mm", "hd_mm", "hd95_mm"))
    no_pred = compute_metrics(full, a, SPACING)
    assert no_pred["empty"] == "prediction" and no_pred["dsc"] == 0.0 and no_pred["rv"] == 0.0
    assert all(math.isinf(no_pred[k]) for k in ("msd_mm", "hd_mm", "hd95_mm"))
    no_ref = compute_metrics(a, full, SPACING)
    assert no_ref["empty"] == "reference" and no_ref["dsc"] == 0.0 and math.isinf(no_ref["rv"])
    assert math.isinf(no_ref["hd_mm"])


@pytest.mark.parametrize("connectivity", [1, 3])
def test_matches_brute_force_including_masks_cut_by_the_array_border(connectivity):
    a, b = _blob(2, shape=(12, 26, 24)), _blob(3, shape=(12, 26, 24))
    assert a[0].any() and a[-1].any()  # the blobs touch the border, whose convention matters
    d_ab, d_ba = _brute_force(a, b, np.asarray(SPACING), connectivity)
    for method in ("kdtree", "edt"):
        got_ab, got_ba = surface_distances(a, b, SPACING, connectivity, method=method)
        np.testing.assert_allclose(np.sort(got_ab), np.sort(d_ab), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.sort(got_ba), np.sort(d_ba), rtol=1e-12, atol=1e-12)
    m = compute_metrics(a, b, SPACING, connectivity)
    assert m["msd_mm"] == pytest.approx(np.concatenate([d_ab, d_ba]).mean(), rel=1e-12)
    assert m["hd_mm"] == pytest.approx(max(d_ab.max(), d_ba.max()), rel=1e-12)
    assert m["hd95_mm"] == pytest.approx(np.percentile(np.concatenate([d_ab, d_ba]), 95), rel=1e-12)


def test_cropping_to_the_masks_changes_nothing():
    a, b = _blob(4, shape=(10, 16, 16)), _blob(5, shape=(10, 16, 16))
    big_a, big_b = np.zeros((30, 50, 40), bool), np.zeros((30, 50, 40), bool)
    big_a[7:17, 20:36, 3:19], big_b[7:17, 20:36, 3:19] = a, b
    small = compute_metrics(a, b, SPACING)
    big = compute_metrics(big_a, big_b, SPACING)
    # Same as the small grid padded with background (the blobs touch the small grid's border,
    # which closes them there just as background does).
    padded = compute_metrics(np.pad(a, 1), np.pad(b, 1), SPACING)
    for key in ("dsc", "rv", "msd_mm", "hd_mm", "hd95_mm", "vol_ref_ml", "vol_pred_ml"):
        assert big[key] == pytest.approx(padded[key], rel=1e-12)
        assert big[key] == pytest.approx(small[key], rel=1e-12)


def test_surface_of_a_solid_cube():
    m = np.zeros((7, 7, 7), bool)
    m[1:6, 1:6, 1:6] = True
    assert surface_mask(m).sum() == 5 ** 3 - 3 ** 3
    assert surface_mask(m, connectivity=3).sum() == 5 ** 3 - 3 ** 3
    m[3, 3, 3] = False  # a one-voxel hole: its 6 face neighbours become surface, with 26 also the edges
    assert surface_mask(m).sum() == 5 ** 3 - 3 ** 3 + 6
    assert surface_mask(m, connectivity=3).sum() == 5 ** 3 - 3 ** 3 + 26


def test_bad_inputs_raise():
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(ValueError, match="shapes differ"):
        compute_metrics(a, np.zeros((4, 4, 5), bool), SPACING)
    with pytest.raises(ValueError, match="spacing"):
        compute_metrics(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="shapes differ"):
        dice(a, a[:2])


medpy_binary = pytest.importorskip("medpy.metric.binary", reason="medpy cannot be imported")


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_agrees_with_medpy(seed):
    """medpy's surface is mask ^ erosion(connectivity 1), the same as ours; its ``hd`` and ``hd95``
    pool both directions like ours. Its directed ``asd`` weighted by the surface sizes is our MSD;
    medpy >= 0.5 ``assd`` is that pooled mean too (medpy < 0.5 returned the mean of the two directed
    means, which differs when the surfaces differ in size, so that is not compared)."""
    ref, pred = _blob(seed), _blob(seed + 100, level=0.55)
    m = compute_metrics(ref, pred, SPACING)
    mb = medpy_binary
    assert m["dsc"] == pytest.approx(mb.dc(pred, ref), rel=1e-12)
    assert m["hd_mm"] == pytest.approx(mb.hd(pred, ref, voxelspacing=SPACING), rel=1e-12)
    assert m["hd95_mm"] == pytest.approx(mb.hd95(pred, ref, voxelspacing=SPACING), rel=1e-12)
    asd_pred_to_ref = mb.asd(pred, ref, voxelspacing=SPACING)
    asd_ref_to_pred = mb.asd(ref, pred, voxelspacing=SPACING)
    n_ref, n_pred = surface_mask(ref).sum(), surface_mask(pred).sum()
    assert n_ref != n_pred  # so the two conventions of "assd" really differ here
    pooled = (n_ref * asd_ref_to_pred + n_pred * asd_pred_to_ref) / (n_ref + n_pred)
    assert m["msd_mm"] == pytest.approx(pooled, rel=1e-12)
    assert m["msd_mm"] != pytest.approx((asd_ref_to_pred + asd_pred_to_ref) / 2, rel=1e-9)
    if _medpy_version() >= (0, 5):
        assert m["msd_mm"] == pytest.approx(mb.assd(pred, ref, voxelspacing=SPACING), rel=1e-12)
    assert m["rv"] == pytest.approx(pred.sum() / ref.sum(), rel=1e-15)


def _medpy_version() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(p) for p in version("medpy").split(".")[:2] if p.isdigit())
