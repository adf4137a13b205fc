"""Inference on arbitrary boxes: the coarse pathways once per volume, the fine pathway per box.

Dense inference with cubic segments (:class:`livseg_pipeline.inference.dense.SegmentPredictor`) pays,
for every segment, the valid-convolution halo of all three pathways: at 30^3 that is 1.9 MFLOP per
output voxel for a network that needs 1.0 once the halo is shared. Two facts remove most of it:

* a coarse pathway's output at coarse index ``j`` depends only on the coarse grid (which is common
  to all segments, :mod:`livseg_pipeline.network.segments`), so pathways ``x5`` and ``x15`` are run
  ONCE over the whole volume (a few percent of the work) and their features are looked up per box;
* the fine pathway and the 1x1x1 layers are translation-equivariant, so they can run on a box of any
  shape and position (output ``d`` voxels from ``d + 2R`` input voxels), not only on 15-multiples.

Per box, the 1x1x1 head runs split by pathway (:mod:`livseg_pipeline.network.split_head`: the coarse
pathways' share of FC1 is computed once per volume and broadcast onto the box, the later batch norms
are folded), the fine pathway runs with its batch norms folded into its convolutions, and every convolution
runs on oneDNN.

:class:`BoxRunner` keeps the interface of ``SegmentPredictor`` (``run``, ``segment_mean``,
``result``, ``member_results``, ``done``, ``members``) over a grid of cells of any size: ``run``
covers the requested cells with a few large boxes (:func:`livseg_pipeline.inference.cover.cover_cells`,
with the network's own cost model) and fills their probabilities. The numbers equal
``SegmentPredictor``'s to float rounding (tests/test_inference_boxes.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from livseg_pipeline.inference.cover import Box, box_cost, cover_cells
from livseg_pipeline.inference.dense import MemberResults
from livseg_pipeline.network.split_head import fold_pathway_norms, split_head
from livseg_pipeline.preprocessing.context import context_volumes

Start = tuple[int, int, int]
# Output voxels of one box: 400k (e.g. 60 x 80 x 80) holds the fine pathway's activations of the
# paper network under ~0.6 GB on CPU; beyond, the shared halo gains little (cost per voxel 1.11 at
# 60 x 80 x 80 against 1.05 at 120^3).
DEFAULT_MAX_BOX_VOXELS = {"cpu": 400_000, "cuda": 2_000_000}


def layer_costs(network: torch.nn.Module) -> tuple[list[float], float]:
    """FLOPs per voxel of each fine-pathway convolution and of the 1x1x1 head (FC + classifier)."""
    per_layer = [2.0 * layer.conv.in_channels * layer.conv.out_channels * layer.conv.kernel_size[0] ** 3
                 for layer in network.pathways[0].layers]
    head = sum(2.0 * m.conv.in_channels * m.conv.out_channels for m in [*network.fc, network.classifier])
    return per_layer, head


def _add_repeated(out: torch.Tensor, coarse: torch.Tensor, start: Sequence[int], f: int) -> None:
    """``out[i] += coarse[(start + i) // f]`` per axis for ``out`` ``(D, H, W, C)`` (nearest repetition)."""
    d = out.shape[:3]
    if all(s % f == 0 and n % f == 0 for s, n in zip(start, d)):
        # aligned box: a broadcast over a 6D view, no gather (the cells of growth and dense are aligned)
        z, y, x = (s // f for s in start)
        c = coarse[z: z + d[0] // f, y: y + d[1] // f, x: x + d[2] // f]
        out.view(d[0] // f, f, d[1] // f, f, d[2] // f, f, -1).add_(c[:, None, :, None, :, None, :])
        return
    idx = [torch.div(torch.arange(s, s + n, device=coarse.device), f, rounding_mode="floor")
           for s, n in zip(start, d)]
    out += coarse.index_select(0, idx[0]).index_select(1, idx[1]).index_select(2, idx[2])


def _merge_terms(terms: list[tuple[int, torch.Tensor]]) -> list[tuple[int, torch.Tensor]]:
    """Add each coarse term onto the grid of a finer one it nests in (x15 onto x5: one look-up per
    voxel instead of two)."""
    terms = sorted(terms, key=lambda t: t[0])
    out: list[tuple[int, torch.Tensor]] = []
    for f, t in terms:
        for i, (g, base) in enumerate(out):
            if f % g == 0:
                r = f // g
                up = t.repeat_interleave(r, 0).repeat_interleave(r, 1).repeat_interleave(r, 2)
                out[i] = (g, base + up[: base.shape[0], : base.shape[1], : base.shape[2]])
                break
        else:
            out.append((f, t))
    return out


class BoxRunner(MemberResults):
    """Probabilities of one preprocessed volume, computed on demand over cells of ``cell_size``."""

    def __init__(self, networks: torch.nn.Module | Sequence[torch.nn.Module], image: np.ndarray, plans,
                 device: torch.device | str, cell_size: int, max_box_voxels: int | None = None,
                 radius: int | None = None, dry_run: bool = False) -> None:
        self.networks = [networks] if isinstance(networks, torch.nn.Module) else list(networks)
        self.device = torch.device(device)
        # dry run (benchmarks): boxes are chosen and counted, the network is not run (probabilities 0)
        self.dry_run = bool(dry_run)
        net0 = self.networks[0]
        self.factors = tuple(int(f) for f in net0.factors)
        self.radius = int(radius if radius is not None else net0.radius)
        self.cell_size = int(cell_size)
        if self.cell_size < 1:
            raise ValueError(f"cell size must be positive, got {cell_size}")
        self.max_box_voxels = int(max_box_voxels or DEFAULT_MAX_BOX_VOXELS.get(self.device.type, 400_000))
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 3:
            raise ValueError(f"expected a 3D preprocessed volume, got shape {image.shape}")
        self.shape: tuple[int, int, int] = tuple(int(n) for n in image.shape)  # type: ignore[assignment]
        C = self.cell_size
        self.padded: tuple[int, int, int] = tuple(-(-n // C) * C for n in self.shape)  # type: ignore[assignment]
        self.cells_shape = tuple(p // C for p in self.padded)
        pad_value = float(plans.preprocessing.intensity_range[0])
        R = self.radius

        contexts = context_volumes(image, self.factors, pad_value, mode=plans.preprocessing.context_smoothing)
        # fine pathway input: the volume padded by R (and the tail up to whole cells)
        self.fine = np.full(tuple(p + 2 * R for p in self.padded), pad_value, np.float32)
        self.fine[R:R + self.shape[0], R:R + self.shape[1], R:R + self.shape[2]] = contexts[0]
        # coarse pathways: features for every coarse index j = fine position // f of the padded volume
        self.coarse: list[list[torch.Tensor]] = [[] for _ in self.networks]
        self.heads = [None if self.dry_run else split_head(net) for net in self.networks]
        # the fine pathway runs on every box: fold its batch norms (and the head's norm of its
        # output) into the convolutions, so no normalisation pass runs per box
        self.fine_paths = [fold_pathway_norms(net.pathways[0], head) if head is not None else net.pathways[0]
                           for net, head in zip(self.networks, self.heads)]
        self.coarse_terms: list[list[tuple[int, torch.Tensor]]] = [[] for _ in self.networks]
        with torch.inference_mode():
            for k, (f, vol) in enumerate(zip(self.factors, contexts)):
                if k == 0:
                    continue
                o = (f - 1) // 2
                grid = vol[o::f, o::f, o::f]
                n = tuple(-(-p // f) for p in self.padded)
                g = np.full(tuple(m + 2 * R for m in n), pad_value, np.float32)
                g[R:R + grid.shape[0], R:R + grid.shape[1], R:R + grid.shape[2]] = grid[: n[0], : n[1], : n[2]]
                x = torch.from_numpy(g)[None, None].to(self.device)
                for i, net in enumerate(self.networks):
                    feats = x if self.dry_run else net.pathway(k, x)
                    if self.heads[i] is None:
                        self.coarse[i].append(feats)
                    else:
                        # the head's share of this pathway, once per volume at its own resolution
                        self.coarse_terms[i].append((f, self.heads[i].term(k, feats)))
            self.coarse_terms = [_merge_terms(t) for t in self.coarse_terms]
        del contexts

        per_layer, head = layer_costs(net0)
        self._cost = lambda size: box_cost(size, per_layer, head)
        self.members = [np.zeros(self.padded, dtype=np.float32) for _ in self.networks]
        self.computed = np.zeros(self.cells_shape, dtype=bool)
        self.done: set[Start] = set()
        self.boxes: list[Box] = []

    # -- computing -------------------------------------------------------------------------------
    def _box_probabilities(self, net_index: int, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
        if self.dry_run:
            return np.zeros(tuple(int(v) for v in size), np.float32)
        net = self.networks[net_index]
        R = self.radius
        z, y, x = (int(v) for v in start)
        dz, dy, dx = (int(v) for v in size)
        x1 = torch.from_numpy(np.ascontiguousarray(self.fine[z: z + dz + 2 * R, y: y + dy + 2 * R,
                                                             x: x + dx + 2 * R]))[None, None].to(self.device)
        head = self.heads[net_index]
        fine = self.fine_paths[net_index](net.input_layout(x1))
        if head is not None:
            fc1 = head.term(0, fine)
            for f, term in self.coarse_terms[net_index]:
                _add_repeated(fc1, term, (z, y, x), f)
            return torch.sigmoid(head.finish(fc1).float()).cpu().numpy()
        feats = [fine]
        for f, coarse in zip(self.factors[1:], self.coarse[net_index]):
            lo = [v // f for v in (z, y, x)]
            hi = [(v + d - 1) // f + 1 for v, d in zip((z, y, x), (dz, dy, dx))]
            c = coarse[:, :, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            # nearest repetition: coarse voxel j covers fine block [f j, f (j + 1)) exactly
            c = c.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3).repeat_interleave(f, dim=4)
            oz, oy, ox = z - f * lo[0], y - f * lo[1], x - f * lo[2]
            feats.append(c[:, :, oz: oz + dz, oy: oy + dy, ox: ox + dx])
        logits = net.head(feats)
        return torch.sigmoid(logits.float())[0, 0].cpu().numpy()

    def run_boxes(self, boxes: Iterable[Box], progress=None) -> None:
        """Compute the given boxes (voxel start and size, inside the padded volume)."""
        C = self.cell_size
        with torch.inference_mode():
            for start, size in boxes:
                sl = tuple(slice(s, s + d) for s, d in zip(start, size))
                cells = tuple(slice(s // C, (s + d) // C) for s, d in zip(start, size))
                # a box may span cells computed before (a cheaper cover): their values are kept, so
                # every cell is written once (the same numbers; and a caller may have replaced them)
                old = self.computed[cells]
                keep = None
                if old.any():
                    keep = np.repeat(np.repeat(np.repeat(old, C, 0), C, 1), C, 2)
                for i, out in enumerate(self.members):
                    prob = self._box_probabilities(i, start, size)
                    if keep is not None:
                        prob[keep] = out[sl][keep]
                    out[sl] = prob
                self.computed[cells] = True
                self.boxes.append((tuple(start), tuple(size)))  # type: ignore[arg-type]
                if progress is not None:
                    progress.update(int(np.prod(size)) // C ** 3)

    def run(self, starts: Iterable[Start], progress=None) -> list[Start]:
        """Evaluate the cells at ``starts`` (voxel positions, multiples of the cell size) not evaluated
        before, as a few large boxes; returns the cells evaluated now."""
        C = self.cell_size
        todo = []
        for s in dict.fromkeys(tuple(int(v) for v in s) for s in starts):
            if s in self.done:
                continue
            if any(v % C or v < 0 or v >= p for v, p in zip(s, self.padded)):
                raise ValueError(f"cell start {s} is not on the {C}-voxel grid of a {self.padded} volume")
            todo.append(s)
        if not todo:
            return []
        want = np.zeros(self.cells_shape, dtype=bool)
        idx = np.array(todo) // C
        want[idx[:, 0], idx[:, 1], idx[:, 2]] = True
        want &= ~self.computed
        if want.any():
            self.run_boxes(cover_cells(want, C, self._cost, self.max_box_voxels), progress)
        self.done.update(todo)
        return todo

    # -- results ---------------------------------------------------------------------------------
    def flops(self) -> float:
        """FLOPs of the fine pathway and head spent so far (the coarse pathways are not counted)."""
        return float(sum(self._cost(size) for _, size in self.boxes)) * len(self.networks)

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        return self.shape

    @property
    def cell(self) -> int:
        return self.cell_size
