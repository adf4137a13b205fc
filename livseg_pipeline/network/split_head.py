"""The 1x1x1 head of a trained DeepMedic, rearranged for inference on large boxes (same numbers).

The head reads ``concat(fine, repeat(coarse_2), repeat(coarse_3))`` (170 channels for the paper
network) at every fine voxel, normalises and activates it channel by channel, and applies FC1. Since
batch norm (eval) and the activations act per channel and FC1 is linear, FC1 splits into one term per
pathway; the coarse pathways' terms are computed once per volume at their own resolution and only
looked up per voxel:

    FC1(h) = W_fine . act(bn(fine)) + b  +  repeat(W_2 . act(bn(coarse_2)) + repeat(W_3 . act(bn(coarse_3))))

The batch norms in front of FC2 and the classifier are folded into FC1 and FC2 (nothing reads their
inputs otherwise). On a 60 x 75 x 90 box this removes the 170-channel concatenation, its normalisation
and the nearest-neighbour copies of the coarse features (about a fifth of the time), and the 1x1x1
layers run on channels-last features without copies (oneDNN 1x1x1 convolutions on CPU, matrix
products elsewhere); FC1's bias rides on the coarsest pathway's term. Only for ``norm`` batch or
none (instance norm depends on the box); :func:`split_head` returns None otherwise.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from livseg_pipeline.network.deepmedic import _force_onednn


def _affine(norm: nn.Module, channels: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) of an eval-mode batch norm (or identity); None for anything else."""
    if isinstance(norm, nn.Identity):
        return torch.ones(channels), torch.zeros(channels)
    if isinstance(norm, nn.BatchNorm3d) and norm.track_running_stats and norm.running_mean is not None:
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.affine:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.affine:
            shift = shift + norm.bias
        return scale.detach().clone(), shift.detach().clone()
    return None


def _activation(act: nn.Module, channels: slice | None = None):
    """The activation as a function of rows ``(voxels, C)`` (PReLU weights sliced to ``channels``)."""
    if isinstance(act, nn.Identity):
        return lambda x: x
    if isinstance(act, nn.PReLU):
        w = act.weight.detach().clone()
        if w.numel() > 1 and channels is not None:
            w = w[channels]
        return lambda x: F.prelu(x, w)
    if isinstance(act, nn.ReLU):
        return F.relu
    if isinstance(act, nn.LeakyReLU):
        slope = act.negative_slope
        return lambda x: F.leaky_relu(x, slope)
    return None


class _Pointwise:
    """A 1x1x1 layer on channels-last features ``(D, H, W, in)`` -> ``(D, H, W, out)``.

    On CPU it runs as a oneDNN 1x1x1 convolution: MKL's GEMM on these tall, thin matrices (200k
    voxels x 50-150 channels) reached 14-32 GFLOP/s on one core, oneDNN 45-48 (measured 2026-11-27)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight = weight.contiguous()                                     # (in, out) for rows @ weight
        self.bias = bias
        self.kernel = weight.t().contiguous()[:, :, None, None, None]        # (out, in, 1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if _force_onednn(x):
            # a channels-last view, no copy; the batch stride must be the full size, else oneDNN's
            # format check sees NCDHW and writes an NCDHW output that then has to be transposed
            ncdhw = x[None].permute(0, 4, 1, 2, 3)
            y = torch.mkldnn_convolution(ncdhw, self.kernel, self.bias, (0, 0, 0), (1, 1, 1), (1, 1, 1), 1)
            return y[0].permute(1, 2, 3, 0).contiguous()   # already DHWC in memory: no copy
        rows = x.reshape(-1, x.shape[-1])
        out = rows @ self.weight if self.bias is None else torch.addmm(self.bias, rows, self.weight)
        return out.view(*x.shape[:-1], -1)


@dataclass
class _Layer:
    linear: _Pointwise
    act: object                 # activation applied to this layer's INPUT rows


class SplitHead:
    """FC1 split by pathway, later batch norms folded; see the module docstring."""

    def __init__(self, net, channels: Sequence[int]) -> None:
        fc1 = net.fc[0] if len(net.fc) else net.classifier
        self.channels = [int(c) for c in channels]
        bounds = [0]
        for c in self.channels:
            bounds.append(bounds[-1] + c)
        self.slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        w1 = fc1.conv.weight.detach()[:, :, 0, 0, 0]             # (out, in)
        b1 = fc1.conv.bias.detach().clone()
        scale, shift = _affine(fc1.norm, w1.shape[1])              # type: ignore[misc]
        self.pre_scale: list[torch.Tensor | None] = [scale[s] for s in self.slices]
        self.pre_shift: list[torch.Tensor | None] = [shift[s] for s in self.slices]
        self.pre_act = [_activation(fc1.act, s) for s in self.slices]
        self.fc1_act = fc1.act
        w1s = [w1[:, s].t().contiguous() for s in self.slices]     # (in_k, out) per pathway
        rest: list[tuple[torch.Tensor, torch.Tensor, object]] = []
        for layer in ([*list(net.fc)[1:], net.classifier] if len(net.fc) else []):
            # this layer's batch norm scales and shifts the previous layer's outputs: fold it there
            a, c = _affine(layer.norm, layer.conv.in_channels)    # type: ignore[misc]
            if not rest:
                w1s = [w * a for w in w1s]
                b1 = b1 * a + c
            else:
                w, b, act = rest[-1]
                rest[-1] = (w * a, b * a + c, act)
            w = layer.conv.weight.detach()[:, :, 0, 0, 0].t().contiguous()
            rest.append((w, layer.conv.bias.detach().clone(), _activation(layer.act)))
        # FC1's bias rides on the last (coarsest) pathway's term, computed once per volume
        last = len(self.channels) - 1
        self.fc1 = [_Pointwise(w, b1 if k == last else None) for k, w in enumerate(w1s)]
        self.rest = [_Layer(_Pointwise(w, b), act) for w, b, act in rest]

    def absorb_input_scale(self, k: int, scale: torch.Tensor) -> None:
        """Pathway ``k``'s features now arrive shifted so that FC1's batch norm reduces to ``scale``
        (> 0), which is moved into FC1's weights (:func:`fold_pathway_norms`): no affine pass per voxel."""
        lin = self.fc1[k]
        self.fc1[k] = _Pointwise(lin.weight * scale[:, None], lin.bias)
        self.pre_scale[k] = self.pre_shift[k] = None

    def term(self, k: int, features: torch.Tensor) -> torch.Tensor:
        """Pathway ``k``'s share of FC1 for features ``(1, C_k, D, H, W)``: ``(D, H, W, out)``."""
        x = features[0].permute(1, 2, 3, 0).contiguous()                  # (D, H, W, C): a view if NDHWC
        if self.pre_scale[k] is not None:
            x = torch.addcmul(self.pre_shift[k], x, self.pre_scale[k])
        x = self.pre_act[k](x.view(-1, x.shape[-1])).view(x.shape)    # type: ignore[operator]
        return self.fc1[k](x)

    def finish(self, fc1: torch.Tensor) -> torch.Tensor:
        """Logits ``(D, H, W)`` from the summed FC1 terms ``(D, H, W, out)``."""
        x = fc1
        for layer in self.rest:
            x = layer.linear(layer.act(x.view(-1, x.shape[-1])).view(x.shape))  # type: ignore[operator]
        return x[..., 0]


def split_head(net) -> SplitHead | None:
    """A :class:`SplitHead` for an eval-mode DeepMedic, or None if its norms or activations do not allow it."""
    if net.training:
        return None
    fc = [*net.fc, net.classifier]
    for layer in fc:
        if _affine(layer.norm, layer.conv.in_channels) is None or _activation(layer.act) is None:
            return None
        if layer.conv.kernel_size != (1, 1, 1):
            return None
    channels = [p.out_channels for p in net.pathways]
    return SplitHead(net, channels)


_HOMOGENEOUS = (nn.Identity, nn.ReLU, nn.LeakyReLU, nn.PReLU)   # act(a * x) = a * act(x) for a > 0


def fold_pathway_norms(pathway: nn.Module, head: SplitHead | None = None, head_index: int = 0) -> nn.Module:
    """An eval-mode copy of a DeepMedic pathway with its batch norms folded away (same outputs to
    float rounding; the trained weights are untouched).

    A norm whose input nothing else reads (not a residual sum, not a residual source) is folded into
    the convolution in front of it (5 of the paper pathway's 9). The others read a tensor that a
    residual connection also adds elsewhere, so it cannot be rescaled; but for a positive scale ``a``
    and a positively homogeneous activation, ``act(a x + c) = a act(x + c / a)``: the shift ``c / a``
    goes into the bias of the convolution that produces ``x`` (and is taken off again where a
    residual connection adds ``x``), and ``a`` into the weights of the convolution after the
    activation. With ``head`` (a :class:`SplitHead` of the same network) the head's norm of this
    pathway's output is folded the same way, into FC1 (the head is modified). Norms with a scale
    <= 0 somewhere are left as they are.
    """
    p = copy.deepcopy(pathway).eval()
    layers = p.layers
    skips = {k - 2 for k in p.residual_layers}
    shifts: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for k in range(len(layers)):
            if k + 1 < len(layers):
                norm, act = layers[k + 1].norm, layers[k + 1].act
            elif head is not None and head.pre_scale[head_index] is not None:
                norm, act = None, None      # the head's norm of the pathway output
            else:
                continue
            if norm is not None:
                aff = _affine(norm, layers[k].conv.out_channels)
                if aff is None or isinstance(norm, nn.Identity):
                    continue
                a, c = aff
                homogeneous = isinstance(act, _HOMOGENEOUS)
            else:
                a, c = head.pre_scale[head_index], head.pre_shift[head_index]   # type: ignore[union-attr]
                homogeneous = isinstance(head.fc1_act, _HOMOGENEOUS)           # type: ignore[union-attr]
            conv = layers[k].conv
            if norm is not None and k not in p.residual_layers and k not in skips:
                conv.weight.mul_(a.view(-1, 1, 1, 1, 1))
                conv.bias.copy_(conv.bias * a + c)
                layers[k + 1].norm = nn.Identity()
            elif homogeneous and bool((a > 0).all()):
                shifts[k] = c / a
                if norm is not None:
                    layers[k + 1].conv.weight.mul_(a.view(1, -1, 1, 1, 1))
                    layers[k + 1].norm = nn.Identity()
                else:
                    head.absorb_input_scale(head_index, a)                     # type: ignore[union-attr]
        # every output carries its shift; a residual sum also receives its source's shift: take it off
        for k in range(len(layers)):
            bias = layers[k].conv.bias
            if k in shifts:
                bias.add_(shifts[k])
            if k in p.residual_layers and k - 2 in shifts:
                s = shifts[k - 2]
                bias[: s.numel()].sub_(s)
    return p
