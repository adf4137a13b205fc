"""Plans: every number that preprocessing, training, inference and post-processing use.

Plans are plain JSON (see ``plans/*.json`` for the presets and documentation/plans.md for every
field). In code they are nested dataclasses; :func:`plans_from_dict` validates a dict and names the
offending field on any error, so a typo in a hand-edited plans.json fails loudly, not silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from livseg_pipeline.utils.files import load_json, save_json


class PlansError(ValueError):
    """A plans file or dict is invalid; the message names the field."""


@dataclass
class CropPlan:
    body_threshold_hu: float = -500.0     # voxels above this are body (air/lung below it)
    margin_mm: float = 10.0               # kept around the body in x and y
    keep_full_z: bool = True              # the paper keeps the whole scanned z range
    body_mask_spacing_mm: float = 2.0     # in-plane grid the body mask is found on (speed; bbox only)


@dataclass
class PreprocessingPlan:
    target_spacing_mm: list[float] = field(default_factory=lambda: [1.4, 1.4, 1.4])  # x, y, z
    orientation: str = "LPS"
    image_interpolation: str = "linear"   # linear | bspline
    label_interpolation: str = "linear_threshold"  # resample the 0/1 mask linearly, threshold 0.5
    median_filter_size: int = 3
    hu_window: list[float] = field(default_factory=lambda: [-200.0, 200.0])
    intensity_range: list[float] = field(default_factory=lambda: [-0.2, 0.2])
    crop: CropPlan = field(default_factory=CropPlan)
    context_smoothing: str = "box"        # anti-aliasing before sampling pathways 2/3: box | gaussian


@dataclass
class NetworkPlan:
    pathway_factors: list[int] = field(default_factory=lambda: [1, 5, 15])
    kernel_size: int = 3
    # features per conv layer, one list per pathway (10 layers each in the paper)
    pathway_features: list[list[int]] = field(default_factory=lambda: [
        [30, 30, 40, 40, 40, 40, 50, 50, 50, 50],
        [30, 30, 40, 40, 40, 40, 50, 50, 60, 60],
        [30, 30, 40, 40, 40, 40, 50, 50, 60, 60],
    ])
    residual_layers: list[int] = field(default_factory=lambda: [3, 5, 7, 9])  # 0-based layer idx
    fc_features: list[int] = field(default_factory=lambda: [150, 150])
    fc_dropout: float = 0.5
    norm: str = "batch"
    activation: str = "prelu"


@dataclass
class ElasticPlan:
    p: float = 0.3
    alpha: list[float] = field(default_factory=lambda: [0.0, 200.0])
    sigma: list[float] = field(default_factory=lambda: [9.0, 13.0])


@dataclass
class AugmentationPlan:
    hu_shift_mean: float = -40.0
    hu_shift_sd: float = 40.0
    flip_axes: list[str] = field(default_factory=lambda: ["x", "y"])
    flip_p: float = 0.5
    elastic: ElasticPlan = field(default_factory=ElasticPlan)


@dataclass
class OptimizerPlan:
    name: str = "sgd"
    lr: float = 0.007
    momentum: float = 0.6
    nesterov: bool = True
    weight_decay: float = 1e-4
    lr_decay_every_epochs: int = 32
    lr_decay_factor: float = 0.5
    lr_schedule: str = "step"             # step (decay_factor every decay_every_epochs) | poly (nnU-Net, per epoch)


@dataclass
class TrainingPlan:
    segment_size_out: int = 15
    batch_size: int = 16
    foreground_ratio: float = 0.5
    boundary_ratio: float = 0.0           # share of segments centred on the liver surface (before liver/background)
    epochs: int = 256
    iterations_per_epoch: int = 250
    val_interval_epochs: int = 8
    num_workers: int = 4
    loss: str = "bce"
    optimizer: OptimizerPlan = field(default_factory=OptimizerPlan)
    augmentation: AugmentationPlan = field(default_factory=AugmentationPlan)


@dataclass
class InferencePlan:
    segment_size_out: int = 75            # multiple of 15; the planner may raise it from memory
    batch_size: int = 1
    threshold: float = 0.5
    skip_outside_body: bool = True


@dataclass
class PostprocessingPlan:
    enabled: bool = True
    erosion_radius_mm: float = 4.2
    connectivity: int = 26


@dataclass
class Plans:
    plans_name: str = "paper"
    description: str = ""
    dataset_name: str = ""
    preprocessing: PreprocessingPlan = field(default_factory=PreprocessingPlan)
    network: NetworkPlan = field(default_factory=NetworkPlan)
    training: TrainingPlan = field(default_factory=TrainingPlan)
    inference: InferencePlan = field(default_factory=InferencePlan)
    postprocessing: PostprocessingPlan = field(default_factory=PostprocessingPlan)
    planner_notes: list[str] = field(default_factory=list)
    # What the planner measured when it filled in this file (dataset summary, hardware); for people.
    planner_info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> Plans:
        _validate_semantics(self)
        return self


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise PlansError(f"plans field '{where}' must be an object, got {type(value).__name__}")
        return _from_dict(tp, value, where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise PlansError(f"plans field '{where}' must be a list, got {value!r}")
        return [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for alt in typing.get_args(tp):
            try:
                return _convert(value, alt, where)
            except PlansError:
                continue
        raise PlansError(f"plans field '{where}' has an invalid value {value!r}")
    if origin is dict:
        if not isinstance(value, dict):
            raise PlansError(f"plans field '{where}' must be an object, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise PlansError(f"plans field '{where}' must be true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PlansError(f"plans field '{where}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PlansError(f"plans field '{where}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise PlansError(f"plans field '{where}' must be a string, got {value!r}")
        return value
    return value


def _from_dict(cls: type, data: dict, where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        listing = ", ".join(_unknown_field(where, u, names) for u in sorted(unknown))
        raise PlansError(f"unknown plans field(s) {listing}")
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{where}.{name}".lstrip("."))
    return cls(**kwargs)


def _unknown_field(where: str, name: str, known: set[str]) -> str:
    text = repr(f"{where}.{name}".lstrip("."))
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"{text} (did you mean {f'{where}.{close[0]}'.lstrip('.')!r}?)" if close else text


def _validate_semantics(p: Plans) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise PlansError(msg)

    pp = p.preprocessing
    need(len(pp.target_spacing_mm) == 3 and all(s > 0 for s in pp.target_spacing_mm),
         "plans field 'preprocessing.target_spacing_mm' must be 3 positive numbers")
    need(len(pp.hu_window) == 2 and pp.hu_window[0] < pp.hu_window[1],
         "plans field 'preprocessing.hu_window' must be [low, high] with low < high")
    need(len(pp.intensity_range) == 2 and pp.intensity_range[0] < pp.intensity_range[1],
         "plans field 'preprocessing.intensity_range' must be [low, high] with low < high")
    need(pp.median_filter_size >= 0 and (pp.median_filter_size == 0 or pp.median_filter_size % 2 == 1),
         "plans field 'preprocessing.median_filter_size' must be 0 (off) or odd")
    need(pp.image_interpolation in ("linear", "bspline"),
         "plans field 'preprocessing.image_interpolation' must be 'linear' or 'bspline'")
    n = p.network
    need(len(n.pathway_factors) >= 1 and n.pathway_factors[0] == 1,
         "plans field 'network.pathway_factors' must start with 1")
    need(len(n.pathway_features) == len(n.pathway_factors),
         "plans field 'network.pathway_features' needs one list per pathway factor")
    depths = {len(f) for f in n.pathway_features}
    need(len(depths) == 1, "plans field 'network.pathway_features': all pathways need the same depth")
    need(n.kernel_size == 3, "plans field 'network.kernel_size' must be 3")
    lcm = max(n.pathway_factors)
    for key, size in (("training.segment_size_out", p.training.segment_size_out),
                      ("inference.segment_size_out", p.inference.segment_size_out)):
        need(size > 0 and all(size % f == 0 for f in n.pathway_factors),
             f"plans field '{key}' must be a positive multiple of {lcm}, got {size}")
    need(0.0 <= p.training.foreground_ratio <= 1.0,
         "plans field 'training.foreground_ratio' must be in [0, 1]")
    need(0.0 <= p.training.boundary_ratio <= 1.0, "plans field 'training.boundary_ratio' must be in [0, 1]")
    need(p.training.loss in ("bce", "dice_bce"), "plans field 'training.loss' must be 'bce' or 'dice_bce'")
    need(p.training.optimizer.lr_schedule in ("step", "poly"),
         "plans field 'training.optimizer.lr_schedule' must be 'step' or 'poly'")
    need(p.training.batch_size >= 1, "plans field 'training.batch_size' must be >= 1")
    need(p.training.optimizer.lr > 0, "plans field 'training.optimizer.lr' must be > 0")
    need(0.0 < p.inference.threshold < 1.0, "plans field 'inference.threshold' must be in (0, 1)")
    need(p.postprocessing.connectivity in (6, 18, 26),
         "plans field 'postprocessing.connectivity' must be 6, 18 or 26")
    need(pp.orientation == "LPS", "plans field 'preprocessing.orientation' must be 'LPS' (the canonical "
         "orientation every stage assumes)")
    need(pp.label_interpolation in ("linear_threshold", "nearest"),
         "plans field 'preprocessing.label_interpolation' must be 'linear_threshold' or 'nearest'")
    need(pp.context_smoothing in ("box", "gaussian"),
         "plans field 'preprocessing.context_smoothing' must be 'box' or 'gaussian'")
    need(pp.crop.margin_mm >= 0, "plans field 'preprocessing.crop.margin_mm' must be >= 0")
    need(pp.crop.body_mask_spacing_mm >= 0, "plans field 'preprocessing.crop.body_mask_spacing_mm' must be >= 0")
    need(-1100.0 <= pp.crop.body_threshold_hu <= 500.0,
         "plans field 'preprocessing.crop.body_threshold_hu' must be an HU value in [-1100, 500]")
    t = p.training
    need(t.epochs >= 1, "plans field 'training.epochs' must be >= 1")
    need(t.iterations_per_epoch >= 1, "plans field 'training.iterations_per_epoch' must be >= 1")
    need(t.val_interval_epochs >= 1, "plans field 'training.val_interval_epochs' must be >= 1")
    need(t.num_workers >= 0, "plans field 'training.num_workers' must be >= 0")
    need(t.optimizer.lr_decay_every_epochs >= 1,
         "plans field 'training.optimizer.lr_decay_every_epochs' must be >= 1")
    need(0.0 < t.optimizer.lr_decay_factor <= 1.0,
         "plans field 'training.optimizer.lr_decay_factor' must be in (0, 1]")
    need(0.0 <= t.optimizer.momentum < 1.0, "plans field 'training.optimizer.momentum' must be in [0, 1)")
    a = t.augmentation
    need(a.hu_shift_sd >= 0, "plans field 'training.augmentation.hu_shift_sd' must be >= 0")
    need(set(a.flip_axes) <= {"x", "y", "z"},
         "plans field 'training.augmentation.flip_axes' may only hold 'x', 'y', 'z'")
    for key, prob in (("flip_p", a.flip_p), ("elastic.p", a.elastic.p)):
        need(0.0 <= prob <= 1.0, f"plans field 'training.augmentation.{key}' must be in [0, 1]")
    for key, rng in (("alpha", a.elastic.alpha), ("sigma", a.elastic.sigma)):
        need(len(rng) == 2 and 0 <= rng[0] <= rng[1],
             f"plans field 'training.augmentation.elastic.{key}' must be [low, high] with 0 <= low <= high")
    need(p.inference.batch_size >= 1, "plans field 'inference.batch_size' must be >= 1")
    need(p.postprocessing.erosion_radius_mm >= 0, "plans field 'postprocessing.erosion_radius_mm' must be >= 0")


def preprocessing_hash(plans: Plans) -> str:
    """Short hash of everything that changes the preprocessed arrays (the ``preprocessing`` section);
    a preprocessed case stores it so a rerun redoes exactly the cases made with other settings.

    >>> preprocessing_hash(Plans()) == preprocessing_hash(Plans(plans_name="other"))
    True
    >>> p = Plans(); p.preprocessing.median_filter_size = 5
    >>> preprocessing_hash(p) == preprocessing_hash(Plans())
    False
    """
    text = json.dumps(asdict(plans.preprocessing), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def plans_from_dict(data: dict) -> Plans:
    """Validate and convert a plans dict (missing fields take the paper's defaults)."""
    if not isinstance(data, dict):
        raise PlansError("plans must be a JSON object")
    return _from_dict(Plans, data).validate()


def load_plans(path: str | Path) -> Plans:
    """Read and validate a plans.json; any problem is a one-line :class:`PlansError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise PlansError(f"{path}: no such plans file")
    try:
        data = load_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        msg = str(e).splitlines()[0]
        raise PlansError(msg if msg.startswith(str(path)) else f"{path}: not valid JSON ({msg})") from None
    try:
        return plans_from_dict(data)
    except PlansError as e:
        raise PlansError(f"{path}: {e}") from None


def save_plans(plans: Plans, path: str | Path) -> None:
    plans.validate()
    save_json(plans.to_dict(), path)


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("livseg_pipeline.presets").iterdir()
                  if p.name.endswith(".json"))


def load_preset(name: str) -> Plans:
    """A preset from ``plans/`` by name (``paper``, ``cpu_demo``) or a path to a JSON file."""
    if name.endswith(".json") or "/" in name:
        return load_plans(name)
    res = resources.files("livseg_pipeline.presets") / f"{name}.json"
    if not res.is_file():
        raise PlansError(f"no plans preset {name!r}; available: {', '.join(preset_names())}")
    try:
        return plans_from_dict(json.loads(res.read_text(encoding="utf-8")))
    except PlansError as e:
        raise PlansError(f"preset {name}: {e}") from None
