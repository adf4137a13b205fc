"""The box engine (coarse pathways once per volume, fine pathway on arbitrary boxes) gives the same
probabilities as the reference segment-by-segment inference, for any cell size, box shape and
position, with one network and with an ensemble; the cover of cells is disjoint and complete."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_inference import small_plans
from test_inference_dense import random_deepmedic

from livseg_pipeline.inference.boxes import BoxRunner, layer_costs
from livseg_pipeline.inference.cover import box_cost, cover_cells
from livseg_pipeline.inference.dense import make_runner, segment_grid


@pytest.fixture(scope="module")
def plans():
    return small_plans()


@pytest.fixture(scope="module")
def nets(plans):
    return [random_deepmedic(plans, seed) for seed in (0, 1)]


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(3)
    return (rng.standard_normal((23, 34, 31)) * 0.3).astype(np.float32)


@pytest.fixture(scope="module")
def reference(plans, volume, nets):
    runner = make_runner(nets, volume, plans, "cpu", 15, 4, engine="segments")
    runner.run(segment_grid(volume.shape, 15))
    return runner.member_results()


@pytest.mark.parametrize("cell", [15, 7, 10])
def test_boxes_equal_segments_for_any_cell_size(plans, volume, nets, reference, cell):
    runner = make_runner(nets, volume, plans, "cpu", cell)
    assert isinstance(runner, BoxRunner)
    runner.run(segment_grid(volume.shape, cell))
    for got, want in zip(runner.member_results(), reference):
        np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(runner.result(), np.mean(reference, axis=0), atol=2e-5)


def test_odd_boxes_at_odd_positions(plans, volume, nets, reference):
    runner = BoxRunner(nets[:1], volume, plans, "cpu", cell_size=1)
    boxes = [((0, 0, 0), (23, 34, 31)), ((3, 7, 11), (1, 1, 1)), ((5, 2, 9), (13, 4, 17)), ((22, 33, 30), (1, 1, 1))]
    for start, size in boxes:
        fresh = BoxRunner(nets[:1], volume, plans, "cpu", cell_size=1)
        fresh.run_boxes([(start, size)])
        sl = tuple(slice(s, s + d) for s, d in zip(start, size))
        np.testing.assert_allclose(fresh.members[0][sl], reference[0][sl], atol=2e-5)
    assert runner.flops() == 0.0


def test_small_boxes_respect_the_memory_cap_and_cells_are_done_once(plans, volume, nets):
    runner = BoxRunner(nets[:1], volume, plans, "cpu", cell_size=5, max_box_voxels=1000)
    starts = segment_grid(volume.shape, 5)
    assert runner.run(starts[:10]) == starts[:10]
    assert runner.run(starts[:10]) == []
    assert all(np.prod(size) <= 1000 for _, size in runner.boxes)


def test_cover_is_disjoint_and_complete():
    rng = np.random.default_rng(0)
    per_layer, head = [1.0] * 10, 2.0
    cost = lambda d: box_cost(d, per_layer, head)  # noqa: E731
    for _ in range(20):
        cells = rng.random((7, 9, 8)) < rng.uniform(0.05, 0.9)
        boxes = cover_cells(cells, 3, cost, max_voxels=500)
        hit = np.zeros((21, 27, 24), np.int32)
        for (z, y, x), (dz, dy, dx) in boxes:
            hit[z: z + dz, y: y + dy, x: x + dx] += 1
            assert dz * dy * dx <= 500 or (dz, dy, dx) == (3, 3, 3)
        assert hit.max() <= 1                                          # disjoint
        covered = hit.reshape(7, 3, 9, 3, 8, 3).max(axis=(1, 3, 5)) > 0
        assert not (cells & ~covered).any()                            # complete
        # never worse than one box per cell
        assert sum(cost(s) for _, s in boxes) <= cells.sum() * cost((3, 3, 3)) + 1e-6


def test_layer_costs_match_the_network(plans, nets):
    per_layer, head = layer_costs(nets[0])
    assert len(per_layer) == 10 and per_layer[0] == 2 * 1 * plans.network.pathway_features[0][0] * 27
    assert head > 0


def _trained_looking(net, seed: int):
    """Batch norms with non-trivial statistics and affine parameters, PReLU slopes in [0, 0.5]."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.2, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(0.0, 0.5)
    return net.eval()


@pytest.mark.parametrize("preset", ["cpu_demo", "paper"])
def test_split_head_equals_the_network_head(preset):
    """FC1 split by pathway with the later batch norms folded gives the network's own logits."""
    import torch

    from livseg_pipeline.experiment_planning.plans import load_preset
    from livseg_pipeline.network.deepmedic import DeepMedic
    from livseg_pipeline.network.split_head import split_head

    net = _trained_looking(DeepMedic.from_plans(load_preset(preset)), seed=0)
    head = split_head(net)
    feats = [torch.randn(1, p.out_channels, 6, 7, 8) for p in net.pathways]
    with torch.inference_mode():
        want = net.head(feats)[0, 0]
        # 1x1x1 layers on oneDNN (CPU) and as matrix products (elsewhere); NCDHW and NDHWC features
        for onednn in (True, False):
            for layout in (torch.contiguous_format, torch.channels_last_3d):
                f = [x.to(memory_format=layout) for x in feats]
                torch.backends.mkldnn.enabled = onednn
                try:
                    got = head.finish(sum(head.term(k, x) for k, x in enumerate(f)))
                finally:
                    torch.backends.mkldnn.enabled = True
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert want.std() > 0.05
    assert split_head(net.train()) is None          # training mode: batch statistics, no folding


@pytest.mark.parametrize("negative_scale", [False, True])
def test_folded_pathway_equals_the_pathway(negative_scale):
    """All batch norms folded (plain outputs into the conv before, residual ones as a shift through
    the biases and a scale into the conv after), the head's too; a norm with a negative scale is
    kept. Pathway outputs and head terms equal the original network's."""
    import torch
    from torch import nn

    from livseg_pipeline.experiment_planning.plans import load_preset
    from livseg_pipeline.network.deepmedic import DeepMedic
    from livseg_pipeline.network.split_head import fold_pathway_norms, split_head

    net = _trained_looking(DeepMedic.from_plans(load_preset("paper")), seed=1)
    if negative_scale:
        with torch.no_grad():
            net.pathways[0].layers[4].norm.weight[3] = -0.7     # reads a residual source
    head, ref_head = split_head(net), split_head(net)
    folded = fold_pathway_norms(net.pathways[0], head)
    n_identity = sum(isinstance(layer.norm, nn.Identity) for layer in folded.layers)
    assert n_identity == (9 if negative_scale else 10)          # the first layer has no norm
    assert head.pre_scale[0] is None                             # the head's norm went into FC1
    assert not any(isinstance(layer.norm, nn.Identity) for layer in net.pathways[0].layers[1:])  # original kept
    x = torch.randn(1, 1, 26, 27, 28)
    with torch.inference_mode():
        want = net.pathways[0](x)
        # pathway outputs carry the head's shift now; through the head they must agree
        torch.testing.assert_close(head.term(0, folded(x)), ref_head.term(0, want), atol=1e-4, rtol=1e-4)
        alone = fold_pathway_norms(net.pathways[0])              # without a head: outputs unchanged
        torch.testing.assert_close(alone(x), want, atol=2e-5, rtol=1e-4)


def test_cells_computed_before_are_not_rewritten(plans, volume, nets):
    """A later cover may span cells computed earlier; their values stay as they were (growth
    benchmarks replace them by a stand-in map)."""
    runner = BoxRunner(nets[:1], volume, plans, "cpu", cell_size=5)
    runner.run([(10, 10, 10)])
    runner.members[0][10:15, 10:15, 10:15] = 7.0
    # two cells either side: one box over the three is cheaper than two boxes
    runner.run([(10, 10, 5), (10, 10, 15)])
    assert any(size[2] >= 15 for _, size in runner.boxes[1:])
    assert (runner.members[0][10:15, 10:15, 10:15] == 7.0).all()
    fresh = runner.members[0][10:15, 10:15, 5:10]
    assert (fresh <= 1.0).all() and (fresh > 0.0).all()
