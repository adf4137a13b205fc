"""Preprocessing on analytic volumes and phantoms: intensity mapping, label volume, crop, grids."""

from __future__ import annotations

import numpy as np
import pytest

from livseg_pipeline.experiment_planning.plans import load_preset
from livseg_pipeline.io.image_io import Geometry, Image, reorient, same_grid
from livseg_pipeline.preprocessing.cropping import body_box, body_mask, bounding_box, crop_box
from livseg_pipeline.preprocessing.intensity import hu_scale, normalize_hu
from livseg_pipeline.preprocessing.preprocessor import (
    PreprocessingError,
    load_preprocessed_case,
    original_image,
    preprocess_case,
    preprocessed_body_mask,
    restore_to_original,
    save_preprocessed_case,
)
from livseg_pipeline.preprocessing.resampling import resample_mask, target_grid


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def synthetic_ct(shape_zyx=(40, 96, 112), spacing=(0.8, 0.8, 2.5), origin=(-40.0, -30.0, 12.0)):
    """Air, an elliptic body (40 HU) with a lung-like hole, a table, and an ellipsoidal 'liver' (120 HU)
    on the patient's right (low x in LPS)."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in shape_zyx], indexing="ij")
    sx, sy, sz = spacing
    X, Y, Z = x * sx, y * sy, z * sz
    cx, cy = shape_zyx[2] * sx / 2, shape_zyx[1] * sy / 2
    ct = np.full(shape_zyx, -1000, np.int16)
    body = ((X - cx) / (0.30 * shape_zyx[2] * sx)) ** 2 + ((Y - cy) / (0.25 * shape_zyx[1] * sy)) ** 2 <= 1
    ct[body] = 40
    ct[body & (((X - cx - 15) / 8) ** 2 + ((Y - cy + 5) / 6) ** 2 <= 1)] = -850          # lung
    ct[(Y > 0.92 * shape_zyx[1] * sy) & (Y < 0.95 * shape_zyx[1] * sy)] = 300         # table
    liver = (((X - cx + 12) / 14) ** 2 + ((Y - cy) / 11) ** 2 + ((Z - shape_zyx[0] * sz / 2) / 30) ** 2) <= 1
    ct[liver] = 120
    geom = Geometry(spacing, origin)
    return Image(ct, geom, "synthetic.nii.gz"), Image(liver.astype(np.uint8), geom, "synthetic_label.nii.gz")


# ----------------------------------------------------------------------------------------------
# Intensities
# ----------------------------------------------------------------------------------------------
def test_intensity_mapping_exact_at_window_points_and_clipped_outside():
    plans = load_preset("paper")
    pp = plans.preprocessing
    hu = np.array([-3000, -1000, -201, -200, -100, 0, 100, 200, 201, 3000], np.int16)
    out = normalize_hu(hu, pp.hu_window, pp.intensity_range)
    assert out.dtype == np.float32
    assert out[3] == np.float32(-0.2) and out[5] == np.float32(0.0) and out[7] == np.float32(0.2)
    assert np.all(out[:4] == np.float32(-0.2)) and np.all(out[7:] == np.float32(0.2))
    np.testing.assert_allclose(out[4], -0.1, atol=1e-7)
    np.testing.assert_allclose(out[6], 0.1, atol=1e-7)
    assert hu_scale(pp.hu_window, pp.intensity_range) == pytest.approx(0.001)


def test_preprocessed_intensities_are_the_mapped_hu():
    """A homogeneous region keeps its exact mapped value through resampling and the median."""
    ct, label = synthetic_ct()
    plans = load_preset("paper")
    arrays, props = preprocess_case(ct, label, plans)
    img = arrays["image"]
    assert img.dtype == np.float32 and img.min() >= -0.2 and img.max() <= 0.2
    inside = arrays["label"] > 0
    core = np.percentile(img[inside], 50)
    assert core == np.float32(0.12)                 # 120 HU -> 0.12
    assert np.float32(-0.2) in img and np.float32(0.04) in img  # air (clipped) and body (40 HU)


# ----------------------------------------------------------------------------------------------
# Label resampling and the round trip
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spacing", [(0.7, 0.7, 2.5), (1.9, 1.9, 1.0), (0.57, 0.57, 1.6)])
def test_label_volume_kept_within_2_percent(spacing):
    ct, label = synthetic_ct(spacing=spacing, shape_zyx=(int(100 / spacing[2]), int(80 / spacing[1]),
                                                        int(90 / spacing[0])))
    geom_out, shape_out = target_grid(label.geometry, label.array.shape, (1.4, 1.4, 1.4))
    res = resample_mask(label.array, label.geometry, geom_out, shape_out)
    v0 = label.array.sum() * label.voxel_volume_ml
    v1 = res.sum() * 1.4 ** 3 / 1000
    assert res.dtype == np.uint8 and set(np.unique(res)) <= {0, 1}
    assert abs(v1 - v0) / v0 < 0.02, (v0, v1)


@pytest.mark.parametrize("orientation", ["LPS", "RAS", "LIP", "SAR"])
def test_restore_lands_on_exact_original_grid(orientation):
    """Flipped and permuted (and anisotropic) inputs come back on their own grid, label intact."""
    ct, label = synthetic_ct()
    ct_o, label_o = reorient(ct, orientation), reorient(label, orientation)
    arrays, props = preprocess_case(ct_o, label_o, load_preset("paper"))
    assert props["orientation_changed"] == (orientation != "LPS")
    assert props["preprocessed"]["direction"] == [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    back = original_image(arrays["label"].astype(np.float32), props)
    assert same_grid(back, label_o, tol=1e-6)
    assert back.array.shape == label_o.array.shape
    assert dice(back.array >= 0.5, label_o.array) > 0.97
    # nearest neighbour keeps the dtype; probabilities outside the crop get the fill value
    near = restore_to_original(arrays["label"], props, order=0)
    assert near.dtype == np.uint8 and near.shape == label_o.array.shape


def test_restore_rejects_wrong_shape():
    ct, label = synthetic_ct()
    arrays, props = preprocess_case(ct, None, load_preset("cpu_demo"))
    assert "label" not in arrays
    with pytest.raises(ValueError, match="preprocessed shape"):
        restore_to_original(arrays["image"][1:], props)


def test_label_on_other_grid_is_a_clear_error():
    ct, label = synthetic_ct()
    other = Image(label.array, Geometry((1.0, 1.0, 1.0)), "lab.nii.gz")
    with pytest.raises(PreprocessingError, match="lab.nii.gz: label grid differs"):
        preprocess_case(ct, other, load_preset("paper"))


def test_inputs_are_not_modified():
    ct, label = synthetic_ct()
    before = ct.array.copy(), label.array.copy()
    preprocess_case(ct, label, load_preset("paper"))
    assert np.array_equal(ct.array, before[0]) and np.array_equal(label.array, before[1])


# ----------------------------------------------------------------------------------------------
# Body mask and crop
# ----------------------------------------------------------------------------------------------
def test_body_mask_drops_table_and_fills_lungs():
    ct, _ = synthetic_ct()
    m = body_mask(ct.array, -500, ct.spacing_zyx)
    table_rows = ct.array[:, :, 56] == 300
    assert not m[:, :, 56][table_rows].any()
    lung = ct.array == -850
    assert lung.any() and m[lung].all()
    exact = bounding_box(m)
    fast = body_box(ct.array, -500, ct.spacing_zyx, working_spacing_mm=2.0)   # 2 mm: every 2nd voxel
    for (lo, hi), (flo, fhi) in zip(exact, fast):
        assert lo - 2 < flo <= lo and hi <= fhi < hi + 2


def test_crop_keeps_full_z_and_whole_body_in_every_slice():
    ct, label = synthetic_ct()
    _, props = preprocess_case(ct, label, load_preset("paper"))
    box = props["crop_box_zyx"]
    assert box[0] == [0, ct.array.shape[0]]
    body = bounding_box(body_mask(ct.array, -500, ct.spacing_zyx))
    for axis in (1, 2):
        assert box[axis][0] <= body[axis][0] and box[axis][1] >= body[axis][1]
    # the crop is real: the table rows and air margins are gone
    assert box[1][1] < 88 and box[2][0] > 0 and box[2][1] < ct.array.shape[2]


def test_crop_never_cuts_a_label_outside_the_body():
    """The liver box is united with the body box even if the label reaches beyond the body."""
    ct, label = synthetic_ct()
    lab = label.array.copy()
    lab[5, 2, 3] = 1                     # a label voxel in the air, far from the body
    box = crop_box(ct.array.shape, ct.spacing_zyx, bounding_box(body_mask(ct.array, -500, ct.spacing_zyx)),
                   bounding_box(lab > 0), margin_mm=0)
    assert box[1][0] <= 2 and box[2][0] <= 3


def test_no_body_means_no_crop():
    img = Image(np.full((6, 20, 20), -1000, np.int16), Geometry((2.0, 2.0, 2.0)), "air.nii.gz")
    arrays, props = preprocess_case(img, None, load_preset("paper"))
    assert props["body_found"] is False and props["crop_box_zyx"] == [[0, 6], [0, 20], [0, 20]]
    assert np.all(arrays["image"] == np.float32(-0.2))


def _phantom_cohort():
    cohort = [dict(seed=s) for s in range(8)]
    cohort += [dict(seed=100 + i, hard=h) for i, h in enumerate(("low_contrast", "dense_lesion",
                                                                  "abnormal_position", "abnormal_position"))]
    cohort += [dict(seed=200, orientation="RAS"), dict(seed=201, orientation="LIP")]
    return cohort


def test_body_crop_alone_never_removes_a_liver_voxel_on_the_phantom_cohort():
    """At inference there is no label: the body-based crop by itself must keep the whole liver."""
    from livseg_pipeline.phantom.generator import generate_phantom

    c = load_preset("paper").preprocessing.crop
    for kw in _phantom_cohort():
        ph = generate_phantom(size_scale=0.25, **kw)
        ct, lab = reorient(ph.ct, "LPS"), reorient(ph.label, "LPS")
        body = body_box(ct.array, c.body_threshold_hu, ct.spacing_zyx, c.body_mask_spacing_mm)
        box = crop_box(ct.array.shape, ct.spacing_zyx, body, None, c.margin_mm, c.keep_full_z)
        inside = np.zeros(lab.array.shape, bool)
        inside[tuple(slice(lo, hi) for lo, hi in box)] = True
        assert lab.array.any()
        assert not (lab.array.astype(bool) & ~inside).any(), f"crop cuts the liver of phantom {kw}"


def test_phantom_preprocess_keeps_liver_and_restores():
    from livseg_pipeline.phantom.generator import generate_phantom

    ph = generate_phantom(7, size_scale=0.5, orientation="RAS")
    plans = load_preset("cpu_demo")
    plans.preprocessing.target_spacing_mm = [3.0, 3.0, 3.0]   # small and quick
    arrays, props = preprocess_case(ph.ct, ph.label, plans)
    assert abs(props["liver_volume_change_pct"]) < 2.0
    back = restore_to_original(arrays["label"].astype(np.float32), props)
    assert dice(back >= 0.5, ph.label.array) > 0.95
    # the body mask kept by preprocessing, dilated, is the one inference would find again
    kept, _ = preprocess_case(ph.ct, None, plans, keep_body_mask=True)
    assert "body" not in arrays and kept["body"].any()
    np.testing.assert_array_equal(preprocessed_body_mask(kept["image"], plans, 5.0, body=kept["body"]),
                                  preprocessed_body_mask(kept["image"], plans, 5.0))


# ----------------------------------------------------------------------------------------------
# Storage
# ----------------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    ct, label = synthetic_ct()
    arrays, props = preprocess_case(ct, label, load_preset("paper"))
    save_preprocessed_case(tmp_path, "case_7", arrays, props)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_7.json", "case_7.npz"]
    a2, p2 = load_preprocessed_case(tmp_path, "case_7")
    assert np.array_equal(a2["image"], arrays["image"]) and np.array_equal(a2["label"], arrays["label"])
    assert a2["image"].dtype == np.float32 and a2["label"].dtype == np.uint8
    assert p2["case_id"] == "case_7" and p2["crop_box_zyx"] == props["crop_box_zyx"]
    # properties alone are enough to restore
    assert restore_to_original(a2["label"], p2, order=0).shape == ct.array.shape
    with pytest.raises(FileNotFoundError, match="case_8"):
        load_preprocessed_case(tmp_path, "case_8")
    (tmp_path / "case_7.npz").write_bytes(b"not a zip")
    with pytest.raises(PreprocessingError, match="case_7.npz"):
        load_preprocessed_case(tmp_path, "case_7")


def test_oblique_and_nan_inputs():
    """An oblique scan keeps its (nearest-LPS) rotation and comes back on its grid; NaN voxels are
    treated as air instead of spreading through interpolation and the median."""
    ct, label = synthetic_ct(shape_zyx=(20, 60, 70), spacing=(1.2, 1.2, 3.0))
    a = np.deg2rad(10.0)
    rot = (np.cos(a), -np.sin(a), 0.0, np.sin(a), np.cos(a), 0.0, 0.0, 0.0, 1.0)
    geom = Geometry(ct.spacing, ct.geometry.origin, rot)
    hu = ct.array.astype(np.float32)
    hu[0, 30, 30:39] = np.nan                       # inside the body, so inside the crop
    ct_o, lab_o = Image(hu, geom, "oblique.nii.gz"), Image(label.array, geom, "oblique_label.nii.gz")
    arrays, props = preprocess_case(ct_o, lab_o, load_preset("paper"))
    assert props["nonfinite_voxels"] == 9 and np.isfinite(arrays["image"]).all()
    assert np.allclose(props["preprocessed"]["direction"], rot)
    back = original_image(arrays["label"].astype(np.float32), props)
    assert same_grid(back, lab_o, tol=1e-6)
    assert dice(back.array >= 0.5, lab_o.array) > 0.95


@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
def test_sparse_resampling_equals_full_resampling(interpolation):
    """Only the box the nonzero voxels reach is resampled; the result is the full resampling's,
    for flipped, oblique and anisotropic grids and support at the array's edge."""
    from livseg_pipeline.preprocessing.resampling import resample, resample_sparse

    rng = np.random.default_rng(0)
    src = Geometry((1.4, 1.4, 1.4), (-20.0, -15.0, -10.0))
    c, s = np.cos(0.3), np.sin(0.3)
    outs = [Geometry((0.7, 0.6, 2.5), (-25.0, -18.0, -12.0)),
            Geometry((0.8, 0.8, 1.6), (30.0, 25.0, -12.0), (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)),
            Geometry((0.9, 1.1, 2.0), (-22.0, -30.0, -14.0), (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))]
    for out in outs:
        for box in [(slice(5, 9), slice(8, 14), slice(10, 13)), (slice(0, 3), slice(0, 30), slice(25, 30))]:
            a = np.zeros((20, 30, 30), np.float32)
            a[box] = rng.uniform(0.1, 1.0, a[box].shape)
            full = resample(a, src, out, (24, 70, 80), interpolation, 0.0)
            sparse = resample_sparse(a, src, out, (24, 70, 80), interpolation)
            assert full.any()
            # the sub-grid's origin is recomputed in mm: float rounding of one ulp at most
            np.testing.assert_allclose(sparse, full, rtol=0, atol=1e-6)
    empty = resample_sparse(np.zeros((4, 4, 4), np.float32), src, outs[0], (5, 6, 7))
    assert empty.shape == (5, 6, 7) and not empty.any()
