"""The 3-pathway DeepMedic of Tang et al. 2020 (after Kamnitsas et al. 2017), built from plans.

Three parallel pathways read the same output segment at down-sample factors 1, 5 and 15 (see
:mod:`livseg_pipeline.network.segments` for where their inputs come from). Each pathway is 10 valid
3x3x3 convolutions, so it shrinks its input by 20 voxels per axis (receptive field 21 at its own
resolution). The coarse outputs are repeated x5 / x15 onto the fine output grid (coarse voxel ``j``
stands for fine block ``[f j, f (j + 1))``), concatenated, and fused by two 1x1x1 "FC" layers and a
1x1x1 classifier giving one liver logit per voxel.

Layer ordering follows DeepMedic: pre-activation blocks ``BN -> PReLU -> Conv`` (the first
convolution sees the normalized CT directly), residual connections that add the output of layer
``k - 2`` (centre-cropped, zero-padded in channels) to the output of layer ``k`` for ``k`` in
``plans.network.residual_layers``, and dropout on the inputs of the second FC layer and of the
classifier. documentation/network.md explains every choice.

>>> from livseg_pipeline.experiment_planning.plans import load_preset
>>> net = DeepMedic.from_plans(load_preset("cpu_demo")).eval()
>>> x1, x5, x15 = (torch.zeros(1, 1, n, n, n) for n in net.input_sizes(15))
>>> tuple(net(x1, x5, x15).shape)
(1, 1, 15, 15, 15)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from livseg_pipeline.network.segments import pathway_input_sizes, receptive_radius


def _norm(channels: int, kind: str) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (batch | instance | none)")


def _act(channels: int, kind: str) -> nn.Module:
    if kind == "prelu":
        # one slope per channel, as DeepMedic
        return nn.PReLU(channels, init=0.25)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leakyrelu":
        return nn.LeakyReLU(0.01, inplace=True)
    raise ValueError(f"unknown activation {kind!r} (prelu | relu | leakyrelu)")


def _crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Centre-crop the spatial dims of ``x`` to ``size`` (differences are even for valid convs)."""
    slices = [slice(None), slice(None)]
    for have, want in zip(x.shape[2:], size):
        off = (have - want) // 2
        slices.append(slice(off, off + want))
    return x[tuple(slices)]


def _add_residual(out: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    skip = _crop_to(skip, out.shape[2:])
    c = skip.shape[1]
    if not torch.is_grad_enabled():
        # inference: ``out`` is a fresh convolution output nothing else holds; adding in place saves
        # a full-size copy (and the concatenation below) on large boxes
        out[:, :c] += skip
        return out
    if c == out.shape[1]:
        return out + skip
    # more features in the deeper layer: the skip feeds the first channels (zero padding, DeepMedic)
    return torch.cat([out[:, :c] + skip, out[:, c:]], dim=1)


class PreActConv(nn.Module):
    """``[BN -> act ->] Conv3d`` (valid). ``preact=False`` for the first layer of a pathway."""

    def __init__(self, cin: int, cout: int, kernel: int, norm: str, act: str, preact: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.norm = _norm(cin, norm) if preact else nn.Identity()
        self.act = _act(cin, act) if preact else nn.Identity()
        self.drop = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.conv = nn.Conv3d(cin, cout, kernel, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(_channelwise(self.act, self.norm(x)))
        if _force_onednn(x):
            # PyTorch sends a batch-1 convolution whose N*C*D*H is below 20480 (a small box, a late
            # layer, the coarse pathways) to its im2col fallback, 3-5x slower than oneDNN on CPU
            c = self.conv
            return torch.mkldnn_convolution(x, c.weight, c.bias, c.padding, c.stride, c.dilation, c.groups)
        return self.conv(x)


def _channelwise(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)``; a PReLU on an NDHWC tensor runs on its ``(voxels, C)`` view: PyTorch's PReLU
    kernel for 5D channels-last tensors took 36 ms on a 97 MB tensor against 14.5 ms for the same
    numbers as rows (one thread, 2026-11-27), and did not use a second thread either way."""
    if isinstance(act, nn.PReLU) and x.dim() == 5 and x.shape[1] > 1 \
            and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
        n, c, d, h, w = x.shape
        rows = act(x.permute(0, 2, 3, 4, 1).reshape(-1, c))
        return rows.view(n, d, h, w, c).permute(0, 4, 1, 2, 3)
    return act(x)


def _force_onednn(x: torch.Tensor) -> bool:
    """Inference on CPU in float32 with oneDNN available (training keeps PyTorch's own dispatch)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


class Pathway(nn.Module):
    """Valid 3x3x3 conv stack with DeepMedic residual connections; output is pre-activation."""

    def __init__(self, features: Sequence[int], residual_layers: Sequence[int], kernel: int = 3,
                 norm: str = "batch", act: str = "prelu", in_channels: int = 1):
        super().__init__()
        chans = [in_channels, *features]
        self.layers = nn.ModuleList(
            PreActConv(chans[i], chans[i + 1], kernel, norm, act, preact=i > 0) for i in range(len(features)))
        self.residual_layers = tuple(sorted(int(k) for k in residual_layers))
        for k in self.residual_layers:
            if not 2 <= k < len(features):
                raise ValueError(f"residual layer {k} must be in 2..{len(features) - 1} (0-based)")
            if features[k - 2] > features[k]:
                raise ValueError(f"residual into layer {k}: {features[k - 2]} features do not fit {features[k]}")

    @property
    def out_channels(self) -> int:
        return self.layers[-1].conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # only the outputs a later residual reads are kept: on large inference boxes every held
        # activation is hundreds of MB
        skips = {k - 2 for k in self.residual_layers}
        kept: dict[int, torch.Tensor] = {}
        for k, layer in enumerate(self.layers):
            x = layer(x)
            if k in self.residual_layers:
                x = _add_residual(x, kept.pop(k - 2))
            if k in skips:
                kept[k] = x
        return x


class DeepMedic(nn.Module):
    """Multi-pathway DeepMedic returning one logit channel: ``forward(x1, x5, x15) -> (B, 1, S, S, S)``.

    Inputs are ``(B, 1, n_k, n_k, n_k)`` with ``n_k = S / f_k + 20`` (:meth:`input_sizes`).
    """

    def __init__(self, pathway_factors: Sequence[int] = (1, 5, 15),
                 pathway_features: Sequence[Sequence[int]] = ((30, 30, 40, 40, 40, 40, 50, 50, 50, 50),
                                                              (30, 30, 40, 40, 40, 40, 50, 50, 60, 60),
                                                              (30, 30, 40, 40, 40, 40, 50, 50, 60, 60)),
                 residual_layers: Sequence[int] = (3, 5, 7, 9), fc_features: Sequence[int] = (150, 150),
                 fc_dropout: float = 0.5, norm: str = "batch", activation: str = "prelu", kernel_size: int = 3,
                 channels_last: bool = True):
        super().__init__()
        if len(pathway_factors) != len(pathway_features):
            raise ValueError("need one feature list per pathway factor")
        if pathway_factors[0] != 1:
            raise ValueError("the first pathway must have factor 1")
        depths = {len(f) for f in pathway_features}
        if len(depths) != 1:
            raise ValueError("all pathways need the same number of layers")
        self.factors = tuple(int(f) for f in pathway_factors)
        self.radius = receptive_radius(depths.pop(), kernel_size)
        self.pathways = nn.ModuleList(
            Pathway(feats, residual_layers, kernel_size, norm, activation) for feats in pathway_features)
        cin = sum(p.out_channels for p in self.pathways)
        fc: list[nn.Module] = []
        for i, cout in enumerate(fc_features):
            # DeepMedic's default dropout: none on the first FC input, fc_dropout on the later ones
            fc.append(PreActConv(cin, cout, 1, norm, activation, dropout=fc_dropout if i > 0 else 0.0))
            cin = cout
        self.fc = nn.Sequential(*fc)
        self.classifier = PreActConv(cin, 1, 1, norm, activation, dropout=fc_dropout if fc_features else 0.0)
        # NDHWC: oneDNN's 3D convolutions (above all their backward) run 1.1-4x faster on CPU with it,
        # and cuDNN uses tensor cores with it under autocast. Loading a state dict keeps the layout.
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last_3d)

    @classmethod
    def from_plans(cls, plans, channels_last: bool = True) -> DeepMedic:
        """Build from a :class:`~livseg_pipeline.experiment_planning.plans.Plans` (or its dict)."""
        n = plans["network"] if isinstance(plans, dict) else plans.network
        get = (lambda k: n[k]) if isinstance(n, dict) else (lambda k: getattr(n, k))
        return cls(get("pathway_factors"), get("pathway_features"), get("residual_layers"), get("fc_features"),
                   get("fc_dropout"), get("norm"), get("activation"), get("kernel_size"), channels_last)

    def input_sizes(self, output_size: int) -> list[int]:
        """Input cube edge per pathway for an output cube of ``output_size`` (a multiple of every factor)."""
        return pathway_input_sizes(output_size, self.factors, self.radius)

    def input_layout(self, x: torch.Tensor) -> torch.Tensor:
        """A pathway input in the memory layout the network runs in."""
        if self.channels_last:
            # .to() restrides even a 1-channel tensor (``contiguous`` would not), and the input's
            # strides decide the layout every following layer runs in
            x = x.to(memory_format=torch.channels_last_3d)
        return x

    def pathway(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Output of pathway ``k`` (pre-activation features at its own resolution) for input ``x``;
        valid convolutions, so any input size works: ``n`` voxels in, ``n - 2 * radius`` out."""
        return self.pathways[k](self.input_layout(x))

    def head(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits from the pathway features, all already on the fine output grid."""
        return self.classifier(self.fc(torch.cat(list(features), dim=1)))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) != len(self.pathways):
            raise ValueError(f"expected {len(self.pathways)} pathway inputs, got {len(inputs)}")
        size = inputs[0].shape[2] - 2 * self.radius
        feats = []
        for x, f in zip(inputs, self.factors):
            want = size // f + 2 * self.radius
            if tuple(x.shape[2:]) != (want,) * 3:
                raise ValueError(f"pathway x{f} input is {tuple(x.shape[2:])}, expected {(want,) * 3} "
                                 f"for a {size}^3 output")
            y = self.pathway(len(feats), x)
            if f > 1:
                # nearest repetition: coarse voxel j covers fine block [f j, f (j + 1)) exactly
                y = y.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3).repeat_interleave(f, dim=4)
            feats.append(y)
        return self.head(feats)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def flops_per_output_voxel(net: DeepMedic, output_size: int) -> float:
    """Multiply-adds x 2 of one forward pass divided by the number of output voxels (convs only)."""
    total = 0.0
    for path, n_in in zip(net.pathways, net.input_sizes(output_size)):
        n = n_in
        for layer in path.layers:
            c = layer.conv
            n -= c.kernel_size[0] - 1
            total += 2.0 * c.in_channels * c.out_channels * c.kernel_size[0] ** 3 * n ** 3
    for layer in [*net.fc, net.classifier]:
        total += 2.0 * layer.conv.in_channels * layer.conv.out_channels * output_size ** 3
    return total / output_size ** 3
