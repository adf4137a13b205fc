"""Dense (fully covering) inference of the 3-pathway network over one preprocessed volume.

The volume is tiled into output segments ``[s, s + S)`` per axis with ``s`` on the grid
``0, S, 2S, ...`` (``S`` a multiple of the largest pathway factor). Pathway ``k`` of factor ``f``
reads the volume anti-aliased for ``f`` (:func:`livseg_pipeline.preprocessing.context.context_volumes`)
every ``f`` voxels at fine positions ``s + (f - 1) // 2 + f * (i - R)``
(:mod:`livseg_pipeline.network.segments`). Since every ``s`` is a multiple of ``f``, all segments
sample one common coarse grid, ``context_f[o::f]`` with ``o = (f - 1) // 2``; it is cut out and padded
once per volume so that each segment input is a plain slice. The same coarse grid for every ``S``
means small and large segments give the same probabilities.

Outside the volume the inputs hold ``pad_value = plans.preprocessing.intensity_range[0]``, exactly as
:func:`livseg_pipeline.network.segments.extract_pathway_input` does.

Segments can be skipped: a ``body_mask`` skips segments with no body voxel, and
:func:`livseg_pipeline.inference.grow.predict_grow` evaluates only the segments reachable from the
liver. Skipped voxels get probability 0.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from livseg_pipeline.network.segments import receptive_radius
from livseg_pipeline.preprocessing.context import context_volumes

Start = tuple[int, int, int]


def available_threads() -> int:
    """CPU cores this process may use (respects affinity / cgroup-pinned CPU sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def padded_shape(shape: Sequence[int], segment_size: int) -> tuple[int, int, int]:
    """Volume shape rounded up to whole segments.

    >>> padded_shape((100, 45, 46), 45)
    (135, 45, 90)
    """
    return tuple(-(-int(n) // segment_size) * segment_size for n in shape)  # type: ignore[return-value]


def segment_grid(shape: Sequence[int], segment_size: int) -> list[Start]:
    """All segment starts ``(z, y, x)`` covering ``shape``.

    >>> segment_grid((20, 15, 31), 15)
    [(0, 0, 0), (0, 0, 15), (0, 0, 30), (15, 0, 0), (15, 0, 15), (15, 0, 30)]
    """
    pz, py, px = padded_shape(shape, segment_size)
    S = segment_size
    return [(z, y, x) for z in range(0, pz, S) for y in range(0, py, S) for x in range(0, px, S)]


def segments_touching(mask: np.ndarray, segment_size: int) -> list[Start]:
    """Segment starts whose output cube holds at least one True voxel of ``mask``."""
    S = segment_size
    pz, py, px = padded_shape(mask.shape, S)
    m = np.zeros((pz, py, px), dtype=bool)
    m[: mask.shape[0], : mask.shape[1], : mask.shape[2]] = mask
    any_in = m.reshape(pz // S, S, py // S, S, px // S, S).any(axis=(1, 3, 5))
    return [(int(a) * S, int(b) * S, int(c) * S) for a, b, c in zip(*np.nonzero(any_in))]


@dataclass
class SegmentSource:
    """Padded coarse grids of one volume; :meth:`inputs` cuts out the pathway inputs of segments."""

    grids: list[np.ndarray]       # one per pathway, coarse grid padded by ``radius`` (+ tail)
    factors: tuple[int, ...]
    segment_size: int
    radius: int
    shape: tuple[int, int, int]   # the unpadded fine volume shape

    @classmethod
    def from_image(cls, image: np.ndarray, factors: Sequence[int], segment_size: int, pad_value: float,
                   smoothing: str = "box", radius: int = 10) -> SegmentSource:
        factors = tuple(int(f) for f in factors)
        for f in factors:
            if segment_size % f:
                raise ValueError(f"segment size {segment_size} is not a multiple of pathway factor {f}")
        shape = tuple(int(n) for n in image.shape)
        pshape = padded_shape(shape, segment_size)
        grids = []
        for f, vol in zip(factors, context_volumes(image, factors, pad_value, mode=smoothing)):
            o = (f - 1) // 2
            coarse = vol[o::f, o::f, o::f]
            # coarse index j <-> fine position o + f*j; a segment at s reads j in
            # [s/f - R, s/f + S/f + R), so R before and up to padded/f + R after.
            size = tuple(p // f + 2 * radius for p in pshape)
            g = np.full(size, pad_value, dtype=np.float32)
            g[radius: radius + coarse.shape[0], radius: radius + coarse.shape[1],
              radius: radius + coarse.shape[2]] = coarse
            grids.append(g)
            del vol
        return cls(grids, factors, segment_size, radius, shape)  # type: ignore[arg-type]

    def inputs(self, starts: Sequence[Start]) -> list[np.ndarray]:
        """Pathway inputs ``(B, 1, n_f, n_f, n_f)`` (float32, contiguous) of the segments at ``starts``."""
        out = []
        for f, g in zip(self.factors, self.grids):
            n = self.segment_size // f + 2 * self.radius
            batch = np.empty((len(starts), 1, n, n, n), dtype=np.float32)
            for b, (z, y, x) in enumerate(starts):
                batch[b, 0] = g[z // f: z // f + n, y // f: y // f + n, x // f: x // f + n]
            out.append(batch)
        return out


def network_radius(network: torch.nn.Module, default: int = 10) -> int:
    """Receptive radius of the network (``radius`` attribute if it has one, else 10 layers of 3^3)."""
    r = getattr(network, "radius", None)
    return int(r) if r is not None else default


def prepare_network(network: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """Eval mode on ``device``; on CPU use every core this process may run on."""
    device = torch.device(device)
    if device.type == "cpu":
        torch.set_num_threads(available_threads())
    return network.to(device).eval()


class MemberResults:
    """Result accessors of a runner holding one padded probability array per network (``members``),
    the unpadded ``volume_shape`` and the ``cell`` (segment) size."""

    members: list[np.ndarray]
    volume_shape: tuple[int, int, int]
    cell: int

    def region_mean(self, region: tuple[slice, ...]) -> np.ndarray:
        """Mean probability of the members over a region of the padded volume (a view when there is
        one member; the same numbers as :meth:`result`)."""
        parts = [m[region] for m in self.members]
        return parts[0] if len(parts) == 1 else np.mean(parts, axis=0, dtype=np.float32)

    def segment_mean(self, start: Start) -> np.ndarray:
        """Mean probability of the members over one cell (a view when there is one member)."""
        C = self.cell
        return self.region_mean(tuple(slice(s, s + C) for s in start))

    def _crop(self, a: np.ndarray) -> np.ndarray:
        z, y, x = self.volume_shape
        return np.ascontiguousarray(a[:z, :y, :x])

    def member_results(self) -> list[np.ndarray]:
        """Each network's probabilities on the (unpadded) volume."""
        return [self._crop(m) for m in self.members]

    def result(self) -> np.ndarray:
        """Mean probability over the networks on the (unpadded) volume."""
        if len(self.members) == 1:
            return self._crop(self.members[0])
        return self._crop(np.mean(self.members, axis=0, dtype=np.float32))


class SegmentPredictor(MemberResults):
    """Runs one or several networks (fold ensemble) on batches of segments of one volume and keeps
    each network's probabilities (padded shape) plus the set of segments evaluated."""

    def __init__(self, networks: torch.nn.Module | Sequence[torch.nn.Module], source: SegmentSource,
                 device: torch.device | str, batch_size: int = 1) -> None:
        self.networks = [networks] if isinstance(networks, torch.nn.Module) else list(networks)
        self.source = source
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        shape = padded_shape(source.shape, source.segment_size)
        self.members = [np.zeros(shape, dtype=np.float32) for _ in self.networks]
        self.done: set[Start] = set()

    def run(self, starts: Iterable[Start], progress=None) -> list[Start]:
        """Evaluate the segments at ``starts`` not evaluated before; returns those evaluated now."""
        todo = [s for s in dict.fromkeys(starts) if s not in self.done]
        S = self.source.segment_size
        with torch.inference_mode():
            for i in range(0, len(todo), self.batch_size):
                chunk = todo[i: i + self.batch_size]
                xs = [torch.from_numpy(a).to(self.device) for a in self.source.inputs(chunk)]
                for net, out in zip(self.networks, self.members):
                    logits = net(*xs)
                    if tuple(logits.shape[-3:]) != (S, S, S):
                        raise RuntimeError(f"network returned output {tuple(logits.shape)} for segment size {S}; "
                                           f"expected (B, 1, {S}, {S}, {S})")
                    prob = torch.sigmoid(logits.float()).cpu().numpy()
                    for b, (z, y, x) in enumerate(chunk):
                        out[z: z + S, y: y + S, x: x + S] = prob[b, 0]
                self.done.update(chunk)
                if progress is not None:
                    progress.update(len(chunk))
        return todo

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        return self.source.shape

    @property
    def cell(self) -> int:
        return self.source.segment_size


# The box engine skips and grows by cells of 15^3; they follow the body and the liver closely and
# are covered by large boxes anyway (IRCAD 1.1, paper network: growth 2.7 TFLOP on 15^3 cells against
# 3.0 on 30^3 and 3.2 on 10^3; body skip 7.1 against 9.5 on 75^3). The segment engine's growth used
# 30^3 segments (3.7 TFLOP), its dense inference the plans' segment.
BOX_CELL_SIZE, SEGMENTS_GROW_SIZE = 15, 30


def default_cell_size(plans, engine: str = "boxes", strategy: str = "body") -> int:
    """The skipping cell (box engine) or segment (segment engine) when none is given.

    >>> from livseg_pipeline.experiment_planning.plans import load_preset
    >>> p = load_preset("paper")
    >>> default_cell_size(p), default_cell_size(p, "segments", "grow"), default_cell_size(p, "segments")
    (15, 30, 75)
    """
    if engine == "boxes":
        return BOX_CELL_SIZE
    return SEGMENTS_GROW_SIZE if strategy == "grow" else int(plans.inference.segment_size_out)


def make_source(image: np.ndarray, plans, segment_size: int, radius: int = 10) -> SegmentSource:
    return SegmentSource.from_image(
        np.asarray(image, dtype=np.float32), plans.network.pathway_factors, segment_size,
        pad_value=float(plans.preprocessing.intensity_range[0]),
        smoothing=plans.preprocessing.context_smoothing, radius=radius)


def predict_preprocessed(network: torch.nn.Module, image: np.ndarray, plans, device: torch.device | str = "cpu",
                         segment_size: int | None = None, batch_size: int | None = None,
                         body_mask: np.ndarray | None = None, progress=None, engine: str = "boxes") -> np.ndarray:
    """Sigmoid liver probabilities (float32, same shape as ``image``) by dense inference.

    ``image`` is a preprocessed fine volume ``(z, y, x)``; ``segment_size`` (the skipping cell)
    defaults to 15 for the box engine and to ``plans.inference.segment_size_out`` for the segment
    engine, ``batch_size`` to ``plans.inference``. With ``body_mask`` (bool, same shape), cells
    holding no body voxel are skipped and get probability 0.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected a 3D preprocessed volume, got shape {image.shape}")
    S = int(segment_size or default_cell_size(plans, engine))
    B = int(batch_size or plans.inference.batch_size)
    threads = torch.get_num_threads()
    try:
        runner = make_runner(network, image, plans, device, S, B, engine)
        runner.run(candidate_segments(image.shape, S, body_mask), progress)
        return runner.result()
    finally:  # the caller (e.g. the trainer between epochs) keeps its own thread setting
        torch.set_num_threads(threads)


def make_runner(networks, image: np.ndarray, plans, device: torch.device | str, segment_size: int,
                batch_size: int = 1, engine: str = "boxes", dry_run: bool = False):
    """A runner (``run(starts)``, ``result()``, ...) for one preprocessed volume and one network or a
    fold ensemble, over cells of ``segment_size``.

    ``engine="boxes"`` (default): :class:`livseg_pipeline.inference.boxes.BoxRunner` (coarse pathways
    once per volume, requested cells merged into large boxes). ``engine="segments"``: the reference
    :class:`SegmentPredictor` (every segment on its own, ``segment_size`` a multiple of every
    pathway factor). Both give the same probabilities to float rounding. ``dry_run`` (boxes only,
    benchmarks) chooses and counts the boxes without running the network.
    """
    nets = [networks] if isinstance(networks, torch.nn.Module) else list(networks)
    nets = [prepare_network(n, device) for n in nets]
    radius = network_radius(nets[0], receptive_radius())
    if engine == "boxes" and all(hasattr(n, "pathway") and hasattr(n, "head") for n in nets):
        from livseg_pipeline.inference.boxes import BoxRunner

        return BoxRunner(nets, image, plans, device, segment_size, radius=radius, dry_run=dry_run)
    if engine not in ("boxes", "segments"):
        raise ValueError(f"unknown inference engine {engine!r} (boxes | segments)")
    source = make_source(image, plans, segment_size, radius=radius)
    return SegmentPredictor(nets, source, device, batch_size)


def candidate_segments(shape: Sequence[int], segment_size: int, body_mask: np.ndarray | None) -> list[Start]:
    """Every segment, or with a body mask the segments holding at least one body voxel."""
    if body_mask is None:
        return segment_grid(shape, segment_size)
    if tuple(body_mask.shape) != tuple(shape):
        raise ValueError(f"body mask shape {body_mask.shape} differs from image shape {tuple(shape)}")
    return segments_touching(body_mask, segment_size)
