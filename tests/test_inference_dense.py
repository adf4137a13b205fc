"""Dense inference geometry with the real DeepMedic (random weights): small and large segments
agree, every segment sees exactly the inputs that livseg_pipeline.network.segments defines, and the
body mask skips only segments without body voxels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_inference import small_plans
from torch import nn

from livseg_pipeline.inference.dense import (
    SegmentPredictor,
    make_source,
    predict_preprocessed,
    segments_touching,
)
from livseg_pipeline.network.segments import extract_all_pathways
from livseg_pipeline.preprocessing.context import context_volumes


def random_deepmedic(plans, seed: int = 0) -> nn.Module:
    """The real network of the plans with random weights and non-trivial batch-norm statistics, so
    that every pathway (fine and coarse) changes the output."""
    from livseg_pipeline.network.deepmedic import DeepMedic

    torch.manual_seed(seed)
    net = DeepMedic.from_plans(plans).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.05, 0.05)
                m.running_var.uniform_(0.05, 0.2)
    return net


@pytest.fixture(scope="module")
def plans():
    return small_plans()


@pytest.fixture(scope="module")
def net(plans):
    return random_deepmedic(plans)


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(1)
    return (rng.standard_normal((20, 31, 29)) * 0.3).astype(np.float32)


def test_small_and_large_segments_agree(plans, volume, net):
    p15 = predict_preprocessed(net, volume, plans, "cpu", segment_size=15, batch_size=6)
    p45 = predict_preprocessed(net, volume, plans, "cpu", segment_size=45, batch_size=1)
    assert p15.shape == volume.shape and p15.dtype == np.float32
    np.testing.assert_allclose(p15, p45, atol=2e-6)
    assert p15.std() > 1e-3  # the inputs actually vary the output


def test_segment_inputs_match_reference_extraction(plans, volume):
    pad = plans.preprocessing.intensity_range[0]
    src = make_source(volume, plans, 15)
    vols = context_volumes(volume, plans.network.pathway_factors, pad)
    for start in [(0, 0, 0), (15, 15, 15), (15, 30, 15)]:
        ours = src.inputs([start])
        ref = extract_all_pathways(vols, plans.network.pathway_factors, start, 15, pad)
        for a, b in zip(ours, ref):
            np.testing.assert_array_equal(a[0, 0], b)


def test_body_mask_skips_only_empty_segments(plans, volume, net):
    body = np.zeros(volume.shape, bool)
    body[2:10, 3:12, 20:25] = True
    starts = segments_touching(body, 15)
    assert sorted(starts) == [(0, 0, 15)]
    full = predict_preprocessed(net, volume, plans, "cpu", segment_size=15, batch_size=6)
    skip = predict_preprocessed(net, volume, plans, "cpu", segment_size=15, batch_size=6, body_mask=body)
    np.testing.assert_allclose(skip[:15, :15, 15:30], full[:15, :15, 15:30], atol=1e-6)
    assert not skip[15:].any() and not skip[:, 15:].any() and not skip[:, :, :15].any()


def test_predictor_evaluates_each_segment_once(plans, volume, net):
    runner = SegmentPredictor(net, make_source(volume, plans, 15), "cpu")
    runner.run([(0, 0, 0), (0, 0, 0), (15, 0, 0)])
    runner.run([(15, 0, 0)])
    assert runner.done == {(0, 0, 0), (15, 0, 0)}
