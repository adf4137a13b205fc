"""Dense inference geometry: small and large segments agree, and every segment sees exactly the
inputs that livseg_pipeline.network.segments.extract_all_pathways defines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from livseg_pipeline.experiment_planning.plans import load_preset
from livseg_pipeline.inference.dense import (
    SegmentPredictor,
    make_source,
    predict_preprocessed,
    segments_touching,
)
from livseg_pipeline.network.segments import extract_all_pathways
from livseg_pipeline.preprocessing.context import context_volumes


class TinyThreePathway(nn.Module):
    """Geometry stand-in with the real call signature: 10 valid 3^3 convs per pathway (receptive
    radius 10 at each pathway's resolution), coarse outputs repeated x f onto the fine grid. Used only
    for the geometry tests; the model tests use the real DeepMedic."""

    def __init__(self, factors=(1, 5, 15), width: int = 2) -> None:
        super().__init__()
        self.factors = factors
        torch.manual_seed(0)
        self.paths = nn.ModuleList(
            nn.Sequential(*[nn.Sequential(nn.Conv3d(1 if i == 0 else width, width, 3), nn.Tanh())
                            for i in range(10)]) for _ in factors)
        self.head = nn.Conv3d(width * len(factors), 1, 1)
        for m in self.modules():  # keep the signal alive through 10 layers
            if isinstance(m, nn.Conv3d):
                nn.init.normal_(m.weight, std=(1.5 / m.weight[0].numel()) ** 0.5)

    def forward(self, *xs):
        outs = []
        for f, path, x in zip(self.factors, self.paths, xs):
            y = path(x)
            for ax in (2, 3, 4):
                y = y.repeat_interleave(f, dim=ax)
            outs.append(y)
        return self.head(torch.cat(outs, 1))


@pytest.fixture(scope="module")
def plans():
    return load_preset("cpu_demo")


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(1)
    return (rng.standard_normal((20, 31, 29)) * 0.3).astype(np.float32)


def test_small_and_large_segments_agree(plans, volume):
    net = TinyThreePathway()
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


def test_body_mask_skips_only_empty_segments(plans, volume):
    net = TinyThreePathway()
    body = np.zeros(volume.shape, bool)
    body[2:10, 3:12, 20:25] = True
    starts = segments_touching(body, 15)
    assert sorted(starts) == [(0, 0, 15)]
    full = predict_preprocessed(net, volume, plans, "cpu", segment_size=15, batch_size=6)
    skip = predict_preprocessed(net, volume, plans, "cpu", segment_size=15, batch_size=6, body_mask=body)
    np.testing.assert_allclose(skip[:15, :15, 15:30], full[:15, :15, 15:30], atol=1e-6)
    assert not skip[15:].any() and not skip[:, 15:].any() and not skip[:, :, :15].any()


def test_predictor_evaluates_each_segment_once(plans, volume):
    runner = SegmentPredictor(TinyThreePathway().eval(), make_source(volume, plans, 15), "cpu")
    runner.run([(0, 0, 0), (0, 0, 0), (15, 0, 0)])
    runner.run([(15, 0, 0)])
    assert runner.done == {(0, 0, 0), (15, 0, 0)}
