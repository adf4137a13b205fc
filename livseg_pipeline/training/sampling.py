"""Training batches: segment sampling, pathway extraction, augmentation, multi-process loading.

Batch ``i`` is drawn from ``np.random.default_rng((seed, rank, i))``: it does not depend on which
loader worker makes it or on what came before, so resuming at epoch ``e`` reproduces exactly the
batches of an uninterrupted run, with any number of workers.

A segment is liver-centred with probability ``plans.training.foreground_ratio`` (its centre voxel is
a random liver voxel), boundary-centred with probability ``plans.training.boundary_ratio`` (a random
voxel of the liver surface shell, :func:`~livseg_pipeline.training.data.surface_shell`: the segment
holds liver and its neighbours, where the errors are) and background-centred otherwise (a random
non-liver voxel of the volume). Cases are drawn with probability proportional to their weight (1 /
size of their duplicate group).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from livseg_pipeline.experiment_planning.plans import Plans
from livseg_pipeline.network.segments import extract_pathway_input, receptive_radius
from livseg_pipeline.preprocessing.intensity import hu_scale
from livseg_pipeline.training.augmentation import AXIS, center_crop, elastic_deform, flip_axes, intensity_shift
from livseg_pipeline.training.data import TrainingCase

ELASTIC_MARGIN = 6  # extra fine voxels around the fine input so the deformation pulls in real data


@dataclass
class SamplerConfig:
    segment_size: int
    batch_size: int
    foreground_ratio: float
    factors: tuple[int, ...]
    pad_value: float
    intensity_range: tuple[float, float]
    shift_mean: float          # normalized units
    shift_sd: float
    flip_axes: tuple[int, ...]
    flip_p: float
    elastic_p: float
    elastic_alpha: tuple[float, float]
    elastic_sigma: tuple[float, float]
    augment: bool = True
    radius: int = 10
    boundary_ratio: float = 0.0

    @classmethod
    def from_plans(cls, plans: Plans, batch_size: int | None = None, augment: bool = True) -> SamplerConfig:
        t, a, pp = plans.training, plans.training.augmentation, plans.preprocessing
        scale = hu_scale(pp.hu_window, pp.intensity_range)
        return cls(
            segment_size=t.segment_size_out, batch_size=int(batch_size or t.batch_size),
            foreground_ratio=t.foreground_ratio, factors=tuple(plans.network.pathway_factors),
            pad_value=float(pp.intensity_range[0]), intensity_range=tuple(pp.intensity_range),
            shift_mean=a.hu_shift_mean * scale, shift_sd=a.hu_shift_sd * scale,
            flip_axes=tuple(AXIS[n] for n in a.flip_axes), flip_p=a.flip_p, elastic_p=a.elastic.p,
            elastic_alpha=tuple(a.elastic.alpha), elastic_sigma=tuple(a.elastic.sigma), augment=augment,
            radius=receptive_radius(len(plans.network.pathway_features[0]), plans.network.kernel_size),
            boundary_ratio=t.boundary_ratio)


class SegmentSampler:
    """Makes batches ``{"x": [x1, x5, x15] (B, 1, n, n, n) float32, "y": (B, 1, S, S, S) float32}``."""

    def __init__(self, cases: list[TrainingCase], config: SamplerConfig, seed: int = 0, rank: int = 0):
        if not cases:
            raise ValueError("no training cases")
        self.cases = cases
        self.cfg = config
        self.seed = int(seed)
        self.rank = int(rank)
        w = np.array([c.weight for c in cases], dtype=np.float64)
        self.case_p = w / w.sum()

    def _centre(self, case: TrainingCase, foreground: bool | str, rng: np.random.Generator) -> tuple[int, int, int]:
        if foreground == "boundary" and case.boundary.size:
            flat = int(case.boundary[rng.integers(case.boundary.size)])
        elif foreground and case.foreground.size:
            flat = int(case.foreground[rng.integers(case.foreground.size)])
        else:
            flat = int(rng.integers(case.label.size))
            for _ in range(20):  # background-centred: redraw the (rare) liver hits
                if not case.label.flat[flat]:
                    break
                flat = int(rng.integers(case.label.size))
        return tuple(int(v) for v in np.unravel_index(flat, case.label.shape))  # type: ignore[return-value]

    def sample(self, case: TrainingCase, foreground: bool | str, rng: np.random.Generator) -> tuple[list, np.ndarray]:
        """Pathway inputs and label of one segment (augmented if configured). ``foreground``: True
        (liver-centred), False (background-centred) or ``"boundary"`` (centred on the liver surface)."""
        cfg, S, R = self.cfg, self.cfg.segment_size, self.cfg.radius
        # augmentation draws from its own stream: the same seed gives the same segments with or without it
        arng = np.random.default_rng(rng.integers(2 ** 63))
        start = [c - S // 2 for c in self._centre(case, foreground, rng)]
        elastic = cfg.augment and cfg.elastic_p > 0 and arng.random() < cfg.elastic_p
        m = ELASTIC_MARGIN if elastic else 0
        wide = [s - m for s in start]
        fine = extract_pathway_input(case.image, wide, S + 2 * m, 1, cfg.pad_value, R)
        label = extract_pathway_input(case.label, wide, S + 2 * m, 1, 0, R)
        if elastic:
            alpha = arng.uniform(*cfg.elastic_alpha)
            sigma = arng.uniform(*cfg.elastic_sigma)
            fine, label = elastic_deform(fine, label, (S + 2 * R,) * 3, alpha, sigma, arng, cfg.pad_value)
        label = center_crop(label, S)
        inputs = [fine] + [extract_pathway_input(ctx, start, S, f, cfg.pad_value, R)
                           for ctx, f in zip(case.contexts[1:], cfg.factors[1:])]
        if cfg.augment:
            axes = [ax for ax in cfg.flip_axes if arng.random() < cfg.flip_p]
            *inputs, label = flip_axes([*inputs, label], axes)
            shift = arng.normal(cfg.shift_mean, cfg.shift_sd)
            low, high = cfg.intensity_range
            inputs = [intensity_shift(x, shift, low, high) for x in inputs]
        return inputs, label

    def batch(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, self.rank, int(index)))
        cfg = self.cfg
        n_fg = int(round(cfg.batch_size * cfg.foreground_ratio)) if cfg.batch_size > 1 else None
        # boundary-centred segments come first, then liver, then background (a foreground_ratio larger
        # than what the boundary share leaves shrinks to it); with boundary_ratio 0 the draws (and so
        # the batches) are exactly those of the plain liver/background split
        n_bd = int(round(cfg.batch_size * cfg.boundary_ratio)) if cfg.batch_size > 1 else 0
        xs = [[] for _ in cfg.factors]
        ys = []
        for b in range(cfg.batch_size):
            # a fixed liver/background split per batch (DeepMedic); a coin flip for batch size 1
            fg: bool | str
            if n_fg is not None:
                fg = "boundary" if b < n_bd else b - n_bd < n_fg
            else:
                u = rng.random()
                fg = "boundary" if u < cfg.boundary_ratio else u < cfg.boundary_ratio + cfg.foreground_ratio
            case = self.cases[rng.choice(len(self.cases), p=self.case_p)]
            inputs, label = self.sample(case, fg, rng)
            for k, x in enumerate(inputs):
                xs[k].append(x)
            ys.append(label)
        return {"x": [np.stack(x)[:, None] for x in xs], "y": np.stack(ys)[:, None].astype(np.float32)}


class BatchDataset(torch.utils.data.Dataset):
    """Map-style view of a :class:`SegmentSampler`: item ``i`` is batch ``i`` (tensors)."""

    def __init__(self, sampler: SegmentSampler, length: int):
        self.sampler = sampler
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        b = self.sampler.batch(index)
        return {"x": [torch.from_numpy(x) for x in b["x"]], "y": torch.from_numpy(b["y"])}


class EpochIndices(torch.utils.data.Sampler):
    """Yields the global batch indices of the current epoch: ``epoch * n ... epoch * n + n - 1``."""

    def __init__(self, iterations_per_epoch: int):
        self.n = int(iterations_per_epoch)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        return iter(range(self.epoch * self.n, (self.epoch + 1) * self.n))

    def __len__(self) -> int:
        return self.n


def make_loader(sampler: SegmentSampler, epochs: int, iterations_per_epoch: int, num_workers: int,
                pin_memory: bool = False) -> tuple[torch.utils.data.DataLoader, EpochIndices]:
    """A DataLoader whose workers (processes) build whole batches; call ``indices.set_epoch(e)``
    before iterating epoch ``e``."""
    indices = EpochIndices(iterations_per_epoch)
    ds = BatchDataset(sampler, epochs * iterations_per_epoch)
    kw = {}
    if num_workers > 0:
        kw = {"persistent_workers": True, "prefetch_factor": 4}
    # the loader's own generator: creating its iterator must not consume the global torch RNG (dropout),
    # or a resumed run (one iterator creation fewer with persistent workers) would drift
    loader = torch.utils.data.DataLoader(ds, batch_size=None, sampler=indices, num_workers=num_workers,
                                         pin_memory=pin_memory, generator=torch.Generator().manual_seed(sampler.seed),
                                         **kw)
    return loader, indices
