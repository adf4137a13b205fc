"""The 3-pathway DeepMedic: shapes, receptive field and geometry, for 15^3, 45^3 and 75^3 outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from livseg_pipeline.experiment_planning.plans import load_preset
from livseg_pipeline.network.deepmedic import DeepMedic, count_parameters, flops_per_output_voxel
from livseg_pipeline.network.segments import extract_all_pathways, pathway_input_sizes, pathway_positions
from livseg_pipeline.preprocessing.context import context_volumes

SIZES = {15: [35, 23, 21], 45: [65, 29, 23], 75: [95, 35, 25]}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks run fastest single-threaded (and do not fight other jobs for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_net(seed: int = 0, dtype=torch.float64) -> DeepMedic:
    torch.manual_seed(seed)
    net = DeepMedic(pathway_features=[[2, 2, 3, 3, 3, 3, 4, 4, 4, 4]] * 3, fc_features=[6, 6], fc_dropout=0.0)
    # non-trivial BN statistics, so eval mode is not an identity
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.to(dtype).eval()


@pytest.mark.parametrize("size", [15, 45, 75])
def test_input_sizes_and_output_shape(size):
    net = tiny_net()
    assert net.input_sizes(size) == SIZES[size] == pathway_input_sizes(size, (1, 5, 15))
    xs = [torch.zeros(1, 1, n, n, n) for n in SIZES[size]]
    with torch.no_grad():
        assert tuple(net.float()(*xs).shape) == (1, 1, size, size, size)


def test_cpu_demo_and_paper_nets_from_plans():
    demo = DeepMedic.from_plans(load_preset("cpu_demo")).eval()
    xs = [torch.randn(1, 1, n, n, n) for n in SIZES[15]]
    with torch.no_grad():
        assert tuple(demo(*xs).shape) == (1, 1, 15, 15, 15)
    paper = DeepMedic.from_plans(load_preset("paper"))
    assert [len(p.layers) for p in paper.pathways] == [10, 10, 10]
    assert [p.out_channels for p in paper.pathways] == [50, 60, 60]
    assert paper.classifier.conv.out_channels == 1
    assert 1.0e6 < count_parameters(paper) < 2.0e6
    # ~1.3 MFLOP per output voxel on big inference segments, ~3.8 on 15^3 training segments
    assert 1.0e6 < flops_per_output_voxel(paper, 75) < 1.6e6 < flops_per_output_voxel(paper, 15)


def test_wrong_input_size_is_a_clear_error():
    net = tiny_net()
    xs = [torch.zeros(1, 1, n, n, n, dtype=torch.float64) for n in (35, 23, 22)]
    with pytest.raises(ValueError, match="pathway x15 input"):
        net(*xs)


@pytest.mark.parametrize("size,voxel", [(15, (7, 0, 14)), (45, (22, 31, 3)), (75, (74, 40, 5))])
def test_receptive_field_is_exactly_21_per_pathway(size, voxel):
    """d out[voxel] / d input is non-zero exactly on a 21^3 window of each pathway, the window of the
    coarse voxel whose fine block holds ``voxel``."""
    net = tiny_net(1, torch.float32)
    xs = [torch.randn(1, 1, n, n, n, requires_grad=True) for n in SIZES[size]]
    out = net(*xs)
    out[0, 0][voxel].backward()
    for x, f in zip(xs, (1, 5, 15)):
        nz = x.grad[0, 0].abs() > 0
        expect = torch.zeros_like(nz)
        j = [v // f for v in voxel]
        expect[j[0]: j[0] + 21, j[1]: j[1] + 21, j[2]: j[2] + 21] = True
        assert torch.equal(nz, expect), f"pathway x{f}"
        # the window's centre input voxel sits inside the fine block of the output voxel
        for ax in range(3):
            centre = int(pathway_positions(0, size, f)[j[ax] + 10])
            assert f * j[ax] <= centre < f * (j[ax] + 1) and f * j[ax] <= voxel[ax] < f * (j[ax] + 1)


def test_big_segment_equals_small_segments():
    """A 45^3 output equals the 15^3 outputs of the segments it contains (starts on multiples of 15):
    the network is translation-consistent with the segment geometry of inference."""
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 0.1, (60, 50, 55)).astype(np.float32)
    ctx = context_volumes(vol, (1, 5, 15), pad_value=-0.2)
    net = tiny_net(2)

    def run(start, size):
        xs = extract_all_pathways(ctx, (1, 5, 15), start, size, pad_value=-0.2)
        with torch.no_grad():
            return net(*[torch.from_numpy(x.astype(np.float64))[None, None] for x in xs])[0, 0].numpy()

    big = run((0, 15, 0), 45)
    for dz, dy, dx in [(0, 0, 0), (15, 30, 15), (30, 15, 30)]:
        small = run((dz, 15 + dy, dx), 15)
        np.testing.assert_allclose(big[dz: dz + 15, dy: dy + 15, dx: dx + 15], small, rtol=1e-10, atol=1e-12)


def test_prelu_on_channels_last_rows_equals_prelu():
    """The NDHWC PReLU shortcut (rows view) gives PReLU's values and gradients, keeps the layout,
    and leaves other layouts to PReLU itself."""
    from torch import nn

    from livseg_pipeline.network.deepmedic import _channelwise

    torch.manual_seed(0)
    act = nn.PReLU(6)
    with torch.no_grad():
        act.weight.uniform_(-0.5, 1.5)
    x = torch.randn(2, 6, 4, 5, 7).to(memory_format=torch.channels_last_3d).requires_grad_()
    got = _channelwise(act, x)
    assert got.is_contiguous(memory_format=torch.channels_last_3d)
    want = act(x.detach().contiguous().requires_grad_())
    torch.testing.assert_close(got, want.detach(), rtol=0, atol=0)
    g = torch.randn_like(got)
    gx, gw = torch.autograd.grad(got, (x, act.weight), g)
    xr = x.detach().contiguous().requires_grad_()
    gx_ref, gw_ref = torch.autograd.grad(act(xr), (xr, act.weight), g)
    torch.testing.assert_close(gx, gx_ref)
    torch.testing.assert_close(gw, gw_ref)
    plain = torch.randn(1, 6, 3, 3, 3)
    torch.testing.assert_close(_channelwise(act, plain), act(plain))
