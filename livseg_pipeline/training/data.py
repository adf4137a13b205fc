"""Finding and loading a fold's preprocessed cases.

Layout (documentation/architecture.md): ``$LVS_PREPROCESSED/DatasetNNN_Name/<plans_name>/`` holds
``plans.json`` and ``CASE.npz`` (``image`` float32 normalized, ``label`` uint8) + ``CASE.json``; the
split file ``splits_final.json`` (nnU-Net: a list of 5 ``{"train": [...], "val": [...]}``) lies in
the preprocessed dataset folder or in the raw one. Duplicate groups come from the raw dataset's
``duplicates.json`` (``{"groups": [[CASE, ...], ...]}``) or ``dataset.json``'s ``cases.*.group_id``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from livseg_pipeline.experiment_planning.plans import Plans, load_plans
from livseg_pipeline.paths import preprocessed_root, raw_root
from livseg_pipeline.preprocessing.context import context_volumes
from livseg_pipeline.preprocessing.preprocessor import load_preprocessed_case
from livseg_pipeline.utils.files import load_json

SPLITS = "splits_final.json"
MAX_FOREGROUND_INDICES = 200_000  # liver voxels kept per case for centring segments (memory)


class TrainingDataError(ValueError):
    """Missing or inconsistent training data; the message names the file."""


def plans_folder(dataset: str, plans_name: str | None) -> Path:
    """The preprocessed folder of ``dataset`` for ``plans_name`` (or the only one there)."""
    root = preprocessed_root() / dataset
    if not root.is_dir():
        raise TrainingDataError(f"{root}: no preprocessed dataset; run lvs_plan_preprocess first")
    available = sorted(p.name for p in root.iterdir() if (p / "plans.json").is_file())
    if plans_name is None:
        if "paper" in available:
            plans_name = "paper"
        elif len(available) == 1:
            plans_name = available[0]
        else:
            raise TrainingDataError(f"{root}: choose a plans folder with --preset ({', '.join(available) or 'none'})")
    folder = root / plans_name
    if not (folder / "plans.json").is_file():
        raise TrainingDataError(f"{folder / 'plans.json'}: not found; preprocessed plans here: "
                                f"{', '.join(available) or 'none'} (run lvs_plan_preprocess --preset {plans_name})")
    return folder


def load_folder_plans(folder: Path) -> Plans:
    return load_plans(folder / "plans.json")


def preprocessed_cases(folder: Path) -> list[str]:
    return sorted(p.name[:-4] for p in folder.glob("*.npz") if not p.name.startswith("."))


def load_case(folder: Path, case_id: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(image float32, label uint8, properties)`` of one preprocessed case."""
    try:
        arrays, props = load_preprocessed_case(folder, case_id)
    except (FileNotFoundError, ValueError) as e:
        raise TrainingDataError(str(e)) from None
    for key in ("image", "label"):
        if key not in arrays:
            raise TrainingDataError(f"{folder / (case_id + '.npz')}: no '{key}' array (has {sorted(arrays)})")
    image = np.asarray(arrays["image"], dtype=np.float32)
    label = np.asarray(arrays["label"])
    if image.ndim != 3 or image.shape != label.shape:
        raise TrainingDataError(f"{folder / (case_id + '.npz')}: image {image.shape} and label {label.shape} "
                                f"must be equal 3D shapes")
    return image, (label > 0).astype(np.uint8), props


def load_splits(dataset: str, folder: Path) -> list[dict]:
    for path in (folder.parent / SPLITS, raw_root() / dataset / SPLITS):
        if path.is_file():
            splits = load_json(path)
            if (not isinstance(splits, list) or not splits
                    or not all(isinstance(s, dict) and {"train", "val"} <= set(s) for s in splits)):
                raise TrainingDataError(f"{path}: expected a list of {{'train': [...], 'val': [...]}}")
            return splits
    raise TrainingDataError(f"no {SPLITS} in {folder.parent} or {raw_root() / dataset}; run lvs_convert "
                            f"(it writes the grouped 5-fold split)")


def fold_cases(splits: list[dict], fold: int | str, available: list[str], where: str = "") -> tuple[list, list]:
    """Training and validation case ids of ``fold`` (an index, or ``"all"``: train on every case and
    validate on the same cases, as nnU-Net's fold ``all``)."""
    if fold == "all":
        return list(available), list(available)
    fold = int(fold)
    if not 0 <= fold < len(splits):
        raise TrainingDataError(f"{where}{SPLITS} has {len(splits)} folds, no fold {fold}")
    train, val = list(splits[fold]["train"]), list(splits[fold]["val"])
    missing = sorted(set(train + val) - set(available))
    if missing:
        raise TrainingDataError(f"{where}: fold {fold} names cases that are not preprocessed: "
                                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return train, val


def duplicate_groups(dataset: str) -> dict[str, str]:
    """Case -> group id from the raw dataset (``duplicates.json`` first, then ``dataset.json``)."""
    folder = raw_root() / dataset
    groups: dict[str, str] = {}
    dj = folder / "dataset.json"
    if dj.is_file():
        cases = load_json(dj).get("cases", {})
        if isinstance(cases, dict):
            for case, info in cases.items():
                if isinstance(info, dict) and info.get("group_id") not in (None, ""):
                    groups[case] = str(info["group_id"])
    dup = folder / "duplicates.json"
    if dup.is_file():
        for i, members in enumerate(load_json(dup).get("groups", [])):
            for case in members:
                groups[case] = f"dup{i}"
    return groups


def case_weights(cases: list[str], groups: dict[str, str]) -> dict[str, float]:
    """Sampling weight per case so that each duplicate group counts once.

    >>> case_weights(["a", "b", "c"], {"a": "g", "b": "g"})
    {'a': 0.5, 'b': 0.5, 'c': 1.0}
    """
    gid = {c: groups.get(c, f"case:{c}") for c in cases}
    size = Counter(gid.values())
    return {c: 1.0 / size[gid[c]] for c in cases}


def one_per_group(cases: list[str], groups: dict[str, str]) -> list[str]:
    """The first case of each duplicate group, in the given order.

    >>> one_per_group(["a", "b", "c"], {"a": "g", "b": "g"})
    ['a', 'c']
    """
    seen: set[str] = set()
    out = []
    for c in cases:
        g = groups.get(c, f"case:{c}")
        if g not in seen:
            seen.add(g)
            out.append(c)
    return out


@dataclass
class TrainingCase:
    """One case in memory, ready for segment sampling."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    contexts: list[np.ndarray]          # one per pathway factor; factor 1 is ``image`` itself
    foreground: np.ndarray              # flat indices of (a subsample of) the liver voxels
    weight: float = 1.0
    properties: dict = field(default_factory=dict)
    boundary: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # flat indices of the surface shell


def surface_shell(label: np.ndarray) -> np.ndarray:
    """Voxels within one voxel (26-neighbourhood) of the label's surface, on both sides: the liver
    voxels with a non-liver neighbour and the non-liver voxels with a liver neighbour.

    >>> m = np.zeros((1, 1, 7), np.uint8); m[0, 0, 2:5] = 1
    >>> surface_shell(m).astype(int).tolist()
    [[[0, 1, 1, 0, 1, 1, 0]]]
    """
    from scipy import ndimage

    m = label > 0
    st = np.ones((3, 3, 3), bool)
    # border_value 1 for the erosion: the volume's edge is no surface (the crop cut the liver there)
    return ndimage.binary_dilation(m, st) & ~ndimage.binary_erosion(m, st, border_value=1)


def load_training_cases(folder: Path, case_ids: list[str], plans: Plans, weights: dict[str, float] | None = None,
                        seed: int = 0, progress: bool = True) -> list[TrainingCase]:
    """Load cases and their anti-aliased context volumes (computed once, shared by all loader workers);
    the liver surface shell too when ``plans.training.boundary_ratio`` > 0."""
    from tqdm import tqdm

    pad = float(plans.preprocessing.intensity_range[0])
    rng = np.random.default_rng(seed)
    out = []
    for case_id in tqdm(case_ids, desc="loading cases", unit="case", disable=not progress, file=sys.stderr):
        image, label, props = load_case(folder, case_id)
        contexts = context_volumes(image, plans.network.pathway_factors, pad,
                                   mode=plans.preprocessing.context_smoothing)
        fg = np.flatnonzero(label)
        if fg.size > MAX_FOREGROUND_INDICES:
            fg = np.sort(rng.choice(fg, MAX_FOREGROUND_INDICES, replace=False))
        case = TrainingCase(case_id, image, label, contexts, fg.astype(np.int64),
                            (weights or {}).get(case_id, 1.0), props)
        if plans.training.boundary_ratio > 0:
            bd = np.flatnonzero(surface_shell(label))
            if bd.size > MAX_FOREGROUND_INDICES:
                bd = np.sort(rng.choice(bd, MAX_FOREGROUND_INDICES, replace=False))
            case.boundary = bd.astype(np.int64)
        out.append(case)
    return out


def plans_json(plans: Plans) -> str:
    return json.dumps(plans.to_dict(), sort_keys=True)
