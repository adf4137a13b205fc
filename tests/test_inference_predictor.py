"""Predictor: output on the input's exact grid, skipping strategies equal to full dense, fold ensemble
= mean, model folders, bad inputs. The network is the real DeepMedic with explicit weights
(tests/fixtures_inference.py), so its probability map is liver-like and known."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_inference import phantom_ct

from livseg_pipeline.inference.predictor import (
    InputError,
    ModelError,
    Predictor,
    check_ct,
    fold_checkpoints,
    load_ensemble,
)
from livseg_pipeline.io.image_io import Geometry, Image, reorient, same_grid


def dsc(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def phantom():
    return phantom_ct()


@pytest.fixture(scope="module")
def grow_and_full(phantom, liver_net, inf_plans):
    img, _ = phantom
    # growth alone (no hand-over to a dense cover on this small phantom)
    grow = Predictor(liver_net, inf_plans, strategy="grow", grow_options={"max_fraction": 1.0}).predict_image(img)
    full = Predictor(liver_net, inf_plans, strategy="full").predict_image(img)
    return grow, full


@pytest.mark.parametrize("orientation", ["LPS", "RAS", "LIP"])
def test_mask_on_input_grid_for_flipped_inputs(phantom, liver_net, inf_plans, orientation):
    img, liver = phantom
    img_o = reorient(img, orientation) if orientation != "LPS" else img
    liver_o = reorient(img.with_array(liver), orientation).array if orientation != "LPS" else liver
    assert img_o.geometry.orientation_code == orientation
    pred = Predictor(liver_net, inf_plans).predict_image(img_o)
    assert pred.mask.array.dtype == np.uint8
    assert same_grid(pred.mask, img_o, tol=1e-6) and pred.mask.geometry == img_o.geometry
    # the liver lands where it is in the input: a flip would put it on the other side (DSC ~ 0)
    assert dsc(pred.mask.array, liver_o) > 0.95


def test_mask_on_input_grid_anisotropic(liver_net, inf_plans):
    img, liver = phantom_ct(shape=(16, 60, 70), spacing=(2.1, 1.9, 7.5), seed=3)
    pred = Predictor(liver_net, inf_plans).predict_image(img)
    assert pred.mask.array.shape == img.array.shape and pred.mask.geometry == img.geometry
    assert dsc(pred.mask.array, liver) > 0.9


def test_grow_equals_full_dense(grow_and_full, phantom):
    grow, full = grow_and_full
    _, liver = phantom
    assert grow.inference["voxels_evaluated"] < full.inference["voxels_evaluated"]
    assert not grow.inference["fell_back_to_dense"]
    assert abs(dsc(grow.mask.array, liver) - dsc(full.mask.array, liver)) <= 0.001
    np.testing.assert_array_equal(grow.mask.array, full.mask.array)
    # the island (a bright "spleen") is in the full map but removed by post-processing
    assert len(full.removed_components_ml) >= 1 and max(full.removed_components_ml) > 1.0


def test_body_strategy_equals_full_probabilities(phantom, liver_net, inf_plans, grow_and_full):
    img, _ = phantom
    body = Predictor(liver_net, inf_plans, strategy="body").predict_image(img)
    _, full = grow_and_full
    # segments entirely outside the (dilated) body are skipped; inside they are the same numbers
    inside = body.probabilities > 0
    np.testing.assert_allclose(body.probabilities[inside], full.probabilities[inside], atol=1e-6)
    np.testing.assert_array_equal(body.mask.array, full.mask.array)


def test_grow_falls_back_when_no_liver(liver_net, inf_plans):
    img, _ = phantom_ct(shape=(20, 40, 40), spacing=(3.0, 3.0, 3.0), island=False)
    arr = img.array.copy()
    arr[arr > 90] = 40  # no liver-bright tissue at all
    pred = Predictor(liver_net, inf_plans).predict_image(img.with_array(arr))
    assert pred.inference["fell_back_to_dense"]
    assert pred.inference["segments_evaluated"] == pred.inference["segments_candidates"]
    assert pred.liver_volume_ml < 5


@pytest.mark.timeout(120)
def test_grow_ends_when_growth_reaches_every_seed_without_liver(liver_net, inf_plans):
    # p ~ 0.35 over the whole body: above a growth level of 0.25, below the threshold (0.5), so the
    # first growth swallows every ranked seed and finds no liver; it used to loop for ever here
    img, _ = phantom_ct(shape=(20, 40, 40), spacing=(3.0, 3.0, 3.0), island=False)
    arr = img.array.copy()
    arr[arr > -500] = 72
    pred = Predictor(liver_net, inf_plans, grow_options={"grow_fraction": 0.5}).predict_image(img.with_array(arr))
    assert pred.inference["fell_back_to_dense"]
    assert pred.liver_volume_ml < 5


def test_ensemble_is_mean_on_original_grid(two_fold_model, inf_plans):
    img, _ = phantom_ct(shape=(20, 40, 44), spacing=(2.2, 2.0, 4.0), seed=5)
    img = reorient(img, "RAS")
    nets, plans, paths = load_ensemble(two_fold_model)
    assert sorted(paths) == ["0", "1"]
    singles = [Predictor(n, plans, strategy="full").predict_image(img).probabilities for n in nets]
    ens = Predictor(nets, plans, strategy="full", keep_members=True).predict_image(img)
    np.testing.assert_allclose(ens.probabilities, (singles[0] + singles[1]) / 2, atol=1e-5)
    for a, b in zip(ens.member_probabilities, singles):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.abs(singles[0] - singles[1]).max() > 0.1  # the folds really differ


def test_model_folder_errors(tmp_path, two_fold_model):
    empty = tmp_path / "Dataset001_X" / "paper"
    (empty / "fold_0").mkdir(parents=True)
    with pytest.raises(ModelError, match="holds no checkpoints") as e:
        fold_checkpoints(empty)
    assert str(empty) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ModelError, match="fold_3"):
        fold_checkpoints(two_fold_model, ["3"])
    bad = tmp_path / "m" / "fold_0"
    bad.mkdir(parents=True)
    (bad / "checkpoint_best.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="checkpoint_best.pth"):
        load_ensemble(tmp_path / "m")


def test_bad_inputs_are_refused_in_one_line():
    g = Geometry((1.0, 1.0, 1.0))
    flat = Image(np.full((1, 30, 30), -1000, np.int16), g, "flat.nii.gz")
    with pytest.raises(InputError, match="flat.nii.gz: is 2D"):
        check_ct(flat)
    mr = Image(np.random.default_rng(0).uniform(0, 800, (10, 30, 30)).astype(np.float32), g, "t1.nii.gz")
    with pytest.raises(InputError, match="t1.nii.gz: intensities .* do not look like CT"):
        check_ct(mr)
    check_ct(phantom_ct(shape=(10, 30, 30))[0])
