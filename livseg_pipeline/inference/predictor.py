"""One CT in, one liver mask out: preprocessing, (ensemble) inference, back to the original grid,
threshold and post-processing.

A model folder is ``$LVS_RESULTS/DatasetNNN_Name/<plans_name>/`` holding ``fold_K/checkpoint_best.pth``
(or ``checkpoint_latest.pth``) and, after ``lvs_find_best_threshold``, ``inference_config.json``
(tuned threshold and the post-processing decision). Checkpoints carry their plans; every fold of an
ensemble must share the preprocessing.

The fold ensemble is the mean of the folds' probabilities on the original grid, before thresholding.
Putting probabilities back is a linear interpolation, which commutes with the mean, so the mean is
taken on the preprocessed grid and restored once (the same numbers, one resampling instead of five).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from livseg_pipeline.experiment_planning.plans import Plans, preprocessing_hash
from livseg_pipeline.inference.dense import candidate_segments, default_cell_size, make_runner
from livseg_pipeline.inference.grow import predict_grow
from livseg_pipeline.inference.postprocessing import MODES, PostprocessingResult, postprocess, threshold_only
from livseg_pipeline.io.image_io import Geometry, Image
from livseg_pipeline.paths import resolve_dataset, results_root
from livseg_pipeline.utils.files import load_json

INFERENCE_CONFIG = "inference_config.json"
STRATEGIES = ("grow", "body", "full")
# Batches: the box engine grows in whole waves (0), the segment engine four segments at a time.
GROW_BATCH_SIZE, SEGMENTS_GROW_BATCH = 0, 4


class ModelError(ValueError):
    """A model folder or checkpoint cannot be used; the message names it."""


class InputError(ValueError):
    """An input image is not a CT this model can segment; the message names it."""


# ----------------------------------------------------------------------------------------------
# Model folders
# ----------------------------------------------------------------------------------------------
def find_model_dir(model: str | Path | None = None, dataset: str | int | None = None,
                   plans_name: str | None = None) -> Path:
    """``model`` itself, or ``$LVS_RESULTS/<dataset>/<plans_name>`` (plans name optional when the
    dataset has exactly one trained plans folder)."""
    if model is not None:
        path = Path(model)
        if not path.is_dir():
            raise ModelError(f"{path}: model folder not found")
        return path
    if dataset is None:
        raise ModelError("give a model folder (--model DIR) or a dataset (-d ID)")
    try:
        ds_dir = results_root() / resolve_dataset(dataset, results_root())
    except (FileNotFoundError, ValueError) as e:
        raise ModelError(str(e)) from None
    if plans_name:
        path = ds_dir / plans_name
        if not path.is_dir():
            raise ModelError(f"{path}: no trained model with plans {plans_name!r}")
        return path
    found = sorted(p for p in ds_dir.iterdir() if p.is_dir() and any(p.glob("fold_*/checkpoint_*.pth")))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise ModelError(f"{ds_dir}: choose the plans with -p ({'several' if found else 'no'} trained: {names})")
    return found[0]


def fold_checkpoints(model_dir: str | Path, folds: str | list | tuple = "all",
                     checkpoint: str = "best") -> dict[str, Path]:
    """``{fold: checkpoint path}``; ``folds`` is ``"all"`` (every ``fold_K``, else ``fold_all``) or a list.

    ``checkpoint`` ``best`` falls back to ``latest`` for a fold that has no best checkpoint yet.
    """
    model_dir = Path(model_dir)
    order = [checkpoint, "latest"] if checkpoint == "best" else [checkpoint]

    def pick(fold_dir: Path) -> Path | None:
        for name in order:
            p = fold_dir / f"checkpoint_{name}.pth"
            if p.is_file():
                return p
        return None

    if folds == "all" or folds == ["all"]:
        dirs = sorted((p for p in model_dir.glob("fold_*") if p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))
        found = {d.name[5:]: pick(d) for d in dirs}
        found = {k: v for k, v in found.items() if v is not None}
        if not found and pick(model_dir / "fold_all"):
            found = {"all": pick(model_dir / "fold_all")}
    else:
        found = {}
        for f in folds:
            ck = pick(model_dir / f"fold_{f}")
            if ck is None:
                raise ModelError(f"{model_dir / f'fold_{f}'}: no checkpoint_{checkpoint}.pth")
            found[str(f)] = ck
    if not found:
        raise ModelError(f"{model_dir}: model folder holds no checkpoints (fold_K/checkpoint_{checkpoint}.pth)")
    return found


def load_inference_config(model_dir: str | Path) -> dict | None:
    path = Path(model_dir) / INFERENCE_CONFIG
    return load_json(path) if path.is_file() else None


def load_ensemble(model_dir: str | Path, folds="all", checkpoint: str = "best",
                  device: str | torch.device = "cpu") -> tuple[list[torch.nn.Module], Plans, dict[str, Path]]:
    """The networks of the chosen folds (eval mode) and their common plans."""
    from livseg_pipeline.training.checkpoint import CheckpointError, load_model

    paths = fold_checkpoints(model_dir, folds, checkpoint)
    nets, plans = [], None
    for fold, path in paths.items():
        try:
            net, p = load_model(path, device)
        except CheckpointError as e:
            raise ModelError(str(e)) from None
        if plans is None:
            plans = p
        elif preprocessing_hash(p) != preprocessing_hash(plans) or p.network != plans.network:
            raise ModelError(f"{path}: fold {fold} was trained with other plans than fold {next(iter(paths))}; "
                             "an ensemble needs one preprocessing and one network")
        nets.append(net)
    return nets, plans, paths


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------
def check_ct(image: Image, name: str | None = None) -> None:
    """Refuse what cannot be an abdominal CT in HU: a single slice, or intensities with no air."""
    name = name or image.source or "image"
    shape = image.array.shape
    if image.array.ndim != 3 or min(shape) < 2:
        raise InputError(f"{name}: is 2D (shape z, y, x = {shape}); a 3D CT volume is needed")
    if not np.issubdtype(image.array.dtype, np.number) or np.issubdtype(image.array.dtype, np.complexfloating):
        raise InputError(f"{name}: voxel type {image.array.dtype} is not a real number")
    sample = image.array[:: max(1, shape[0] // 16), ::4, ::4].astype(np.float32)
    lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if not np.isfinite(sample).all():
        raise InputError(f"{name}: holds NaN or infinite values, not a CT in HU")
    # an abdominal CT in HU holds air (-1000) or at least fat (-100) somewhere; MR, PET, 8-bit and
    # unsigned CT without its rescale intercept all start at 0 or above
    if lo > -50.0 or hi > 5000.0 or lo < -5000.0:
        raise InputError(f"{name}: intensities {lo:.0f}..{hi:.0f} (0.5-99.5 %) do not look like CT in HU "
                         "(nothing below -50 HU: no air, no fat); MR, PET or a rescaled image?")


# ----------------------------------------------------------------------------------------------
# Prediction
# ----------------------------------------------------------------------------------------------
@dataclass
class Prediction:
    image: Image                            # the CT as given (original grid)
    mask: Image                             # uint8 0/1 on the CT's grid
    probabilities: np.ndarray               # float32 ensemble mean, original grid
    member_probabilities: list[np.ndarray] | None
    threshold: float
    postprocessing: PostprocessingResult | None
    timings_s: dict = field(default_factory=dict)
    inference: dict = field(default_factory=dict)

    @property
    def removed_components_ml(self) -> list[float]:
        return self.postprocessing.removed_components_ml if self.postprocessing else []

    @property
    def liver_volume_ml(self) -> float:
        return float(np.count_nonzero(self.mask.array)) * self.image.voxel_volume_ml


class Predictor:
    """Segments CT images with one network or a fold ensemble.

    ``strategy``: ``grow`` (segments reachable from the liver, :mod:`~livseg_pipeline.inference.grow`),
    ``body`` (every segment holding body voxels) or ``full`` (every segment: the reference).
    ``engine``: ``boxes`` (:mod:`~livseg_pipeline.inference.boxes`) or ``segments`` (the reference
    one-segment-at-a-time runner; same numbers, slower).
    """

    def __init__(self, networks, plans: Plans, device: str | torch.device = "cpu", threshold: float | None = None,
                 postprocessing: bool | None = None, postprocessing_mode: str = "paper", strategy: str = "grow",
                 segment_size: int | None = None, batch_size: int | None = None, keep_members: bool = False,
                 grow_options: dict | None = None, engine: str = "boxes") -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if postprocessing_mode not in MODES:
            raise ValueError(f"post-processing mode must be one of {MODES}, got {postprocessing_mode!r}")
        self.networks = [networks] if isinstance(networks, torch.nn.Module) else list(networks)
        self.plans = plans
        self.device = torch.device(device)
        self.threshold = float(plans.inference.threshold if threshold is None else threshold)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        self.postprocessing = plans.postprocessing.enabled if postprocessing is None else bool(postprocessing)
        self.postprocessing_mode = postprocessing_mode
        self.strategy = strategy
        if engine == "boxes":
            default_batch = GROW_BATCH_SIZE if strategy == "grow" else 1
        else:
            default_batch = SEGMENTS_GROW_BATCH if strategy == "grow" else plans.inference.batch_size
        self.segment_size = int(segment_size or default_cell_size(plans, engine, strategy))
        self.batch_size = int(batch_size or default_batch)
        self.keep_members = keep_members
        self.grow_options = dict(grow_options or {})
        self.engine = engine

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, folds="all", checkpoint: str = "best",
                       device: str | torch.device = "cpu", threshold: float | str | None = None,
                       postprocessing: bool | None = None, **kwargs) -> Predictor:
        """Load the folds of a model folder. ``threshold="auto"`` takes the tuned threshold and the
        post-processing decision of ``inference_config.json`` (the plans' values when it is absent)."""
        nets, plans, _ = load_ensemble(model_dir, folds, checkpoint, device)
        mode = "paper"
        if threshold == "auto":
            cfg = load_inference_config(model_dir)
            threshold = None
            if cfg is not None:
                threshold = float(cfg["threshold"])
                pp = cfg.get("postprocessing", {})
                if postprocessing is None and "enabled" in pp:
                    postprocessing = bool(pp["enabled"])
                mode = pp.get("mode", mode)
        return cls(nets, plans, device, threshold, postprocessing, mode, **kwargs)

    # -- stages --------------------------------------------------------------------------------
    def preprocessed_probabilities(self, image: np.ndarray, original_grid: tuple | None = None,
                                   body_mask: np.ndarray | None = None
                                   ) -> tuple[np.ndarray, list[np.ndarray] | None, dict]:
        """Mean (and per-network) probabilities on the preprocessed grid, and what was evaluated.
        ``original_grid``: (original geometry, original shape, preprocessed geometry) when the mask
        will be thresholded on the original grid (growth is then exact for that mask; default: for
        the preprocessed grid itself). ``body_mask``: the image's undilated body mask if
        preprocessing kept it."""
        from livseg_pipeline.preprocessing.preprocessor import preprocessed_body_mask

        body = None
        if self.strategy != "full" and self.plans.inference.skip_outside_body:
            body = preprocessed_body_mask(image, self.plans, dilate_mm=5.0, body=body_mask)
        if self.strategy == "grow":
            options = dict(self.grow_options)
            if original_grid is not None:
                options.setdefault("original_grid", original_grid)
            res = predict_grow(self.networks, image, self.plans, self.device, self.segment_size, self.batch_size,
                               body_mask=body, threshold=self.threshold, engine=self.engine, **options)
            runner, info = res.runner, res.summary()
        else:
            runner = make_runner(self.networks, image, self.plans, self.device, self.segment_size,
                                 max(1, self.batch_size), self.engine)
            starts = candidate_segments(image.shape, self.segment_size, body)
            runner.run(starts)
            info = {"segments_evaluated": len(runner.done), "segments_candidates": len(starts)}
        info.update(strategy=self.strategy, segment_size=self.segment_size, networks=len(self.networks),
                    voxels_evaluated=len(runner.done) * self.segment_size ** 3)
        if hasattr(runner, "flops"):
            info.update(boxes=len(runner.boxes), tflop=round(runner.flops() / 1e12, 3))
        members = runner.member_results() if self.keep_members and len(self.networks) > 1 else None
        return runner.result(), members, info

    def predict_image(self, image: Image) -> Prediction:
        """Segment one CT (HU, any orientation and spacing); the mask lies on the CT's grid."""
        from livseg_pipeline.preprocessing.preprocessor import preprocess_case, restore_to_original

        check_ct(image)
        times: dict[str, float] = {}
        t = time.perf_counter()
        arrays, props = preprocess_case(image, None, self.plans, keep_body_mask=True)
        times["preprocess"] = time.perf_counter() - t

        t = time.perf_counter()
        # the mask is thresholded on the original grid: growth follows what its resampling needs
        grids = (Geometry.from_dict(props["original"]), props["original"]["shape_zyx"],
                 Geometry.from_dict(props["preprocessed"]))
        prob, members, info = self.preprocessed_probabilities(arrays["image"], grids, arrays.pop("body"))
        del arrays
        times["network"] = time.perf_counter() - t

        t = time.perf_counter()
        prob = restore_to_original(prob, props, order=1, fill=0.0)
        np.clip(prob, 0.0, 1.0, out=prob)
        member_probs = [restore_to_original(m, props, order=1, fill=0.0) for m in members] if members else None
        times["restore"] = time.perf_counter() - t

        t = time.perf_counter()
        spacing_zyx = image.spacing_zyx
        if self.postprocessing:
            pp = self.plans.postprocessing
            post = postprocess(prob, spacing_zyx, self.threshold, pp.erosion_radius_mm, pp.connectivity,
                               self.postprocessing_mode)
            mask = post.mask
        else:
            post, mask = None, threshold_only(prob, self.threshold)
        times["postprocess"] = time.perf_counter() - t
        return Prediction(image, image.with_array(mask), prob, member_probs, self.threshold, post,
                          {k: round(v, 3) for k, v in times.items()}, info)


def case_id_from_name(name: str) -> str:
    """A safe file stem: nnU-Net channel suffix dropped, anything but ``[A-Za-z0-9._-]`` replaced.

    >>> case_id_from_name("liver_007_0000"), case_id_from_name("../a b")
    ('liver_007', '_a_b')
    """
    stem = re.sub(r"_0000$", "", name)
    # no leading dots: never a hidden file, never '..'
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".") or "case"
