"""Threshold tuning and the post-processing decision on the cross-validation predictions.

As in the paper ("a simple experiment ... to find an optimal threshold which maximizes the DSCs of
the training datasets"; 0.32, +0.6 % median DSC over 0.5) and nnU-Net's determine_postprocessing:

1. every fold's ``validation/CASE_prob.npz`` (float16 ``probabilities`` on the original grid) is
   compared with ``$LVS_RAW/<dataset>/labelsTr/CASE.nii.gz``;
2. the DSC of ``p >= t`` is computed for every case and every ``t`` of a grid (exactly, from
   histograms of the probabilities inside and outside the reference), and the ``t`` with the best
   median DSC is chosen (ties: the one closest to 0.5);
3. at that threshold, post-processing (``paper`` and ``reconstruction`` modes) is applied to every
   case and kept only if it raises the median DSC (and, as nnU-Net, does not lower the mean);
4. the result goes to ``<model>/inference_config.json`` (used by ``lvs_predict --threshold auto``),
   with per-case numbers, and a plot ``threshold_sweep.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livseg_pipeline.inference.postprocessing import MODES, postprocess
from livseg_pipeline.inference.predictor import INFERENCE_CONFIG
from livseg_pipeline.utils.files import save_json

DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.05, 0.951, 0.01), 2).tolist())


class ThresholdError(ValueError):
    """Cross-validation predictions or references are missing or inconsistent."""


@dataclass
class CvCase:
    case_id: str
    fold: str
    prob_path: Path
    label_path: Path


def dsc_curve(probabilities: np.ndarray, reference: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """DSC of ``probabilities >= t`` against ``reference`` for each ``t`` (both empty: DSC 1).

    >>> p = np.array([0.1, 0.4, 0.6, 0.9]); r = np.array([0, 1, 1, 1], bool)
    >>> dsc_curve(p, r, [0.05, 0.5, 0.95]).round(3).tolist()
    [0.857, 0.8, 0.0]
    """
    t = np.asarray(thresholds, dtype=np.float64)
    if np.any(np.diff(t) <= 0):
        raise ValueError("thresholds must increase")
    p = np.asarray(probabilities, dtype=np.float32).ravel()
    r = np.asarray(reference, dtype=bool).ravel()
    if p.shape != r.shape:
        raise ValueError(f"probabilities {probabilities.shape} and reference {reference.shape} differ in shape")
    # only voxels at or above the lowest threshold can be counted as positive
    keep = p >= np.float32(t[0])
    pk, rk = p[keep], r[keep]
    edges = np.append(t.astype(np.float32), np.inf)
    # counts of [t_i, t_i+1); reversed cumulative sum = count of p >= t_i
    fg = np.histogram(pk[rk], bins=edges)[0][::-1].cumsum()[::-1].astype(np.float64)
    allpos = np.histogram(pk, bins=edges)[0][::-1].cumsum()[::-1].astype(np.float64)
    n_ref = float(np.count_nonzero(r))
    denom = allpos + n_ref
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(denom > 0, 2.0 * fg / denom, 1.0)
    return d


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if s == 0 else 2.0 * int(np.count_nonzero(a & b)) / s


def best_threshold(curves: np.ndarray, thresholds: Sequence[float], prefer: float = 0.5) -> tuple[float, int]:
    """Threshold with the best median DSC over cases (rows); ties go to the one nearest ``prefer``.

    >>> c = np.array([[0.8, 0.9, 0.85], [0.7, 0.95, 0.9], [0.9, 0.91, 0.8]])
    >>> best_threshold(c, [0.3, 0.4, 0.5])
    (0.4, 1)
    """
    med = np.median(np.asarray(curves), axis=0)
    t = np.asarray(thresholds, float)
    best = med.max()
    cands = np.flatnonzero(med >= best - 1e-12)
    i = int(cands[np.argmin(np.abs(t[cands] - prefer))])
    return float(t[i]), i


def collect_cv_cases(model_dir: str | Path, labels_dir: str | Path) -> list[CvCase]:
    """Every ``fold_K/validation/CASE_prob.npz`` of a model with its reference label."""
    model_dir, labels_dir = Path(model_dir), Path(labels_dir)
    cases: dict[str, CvCase] = {}
    for fold_dir in sorted(model_dir.glob("fold_*")):
        if not fold_dir.name[5:].isdigit():
            continue  # fold_all validates on its own training data
        for npz in sorted((fold_dir / "validation").glob("*_prob.npz")):
            cid = npz.name[: -len("_prob.npz")]
            if cid in cases:
                raise ThresholdError(f"{npz}: case {cid} is also validated in {cases[cid].fold}; "
                                     "cross-validation folds must not overlap")
            label = labels_dir / f"{cid}.nii.gz"
            if not label.is_file():
                raise ThresholdError(f"{label}: reference label of cross-validation case {cid} not found")
            cases[cid] = CvCase(cid, fold_dir.name, npz, label)
    if not cases:
        raise ThresholdError(f"{model_dir}: no cross-validation probabilities (fold_K/validation/CASE_prob.npz); "
                             "train the folds first (lvs_train)")
    return [cases[k] for k in sorted(cases)]


def _load_case(case: CvCase):
    from livseg_pipeline.io.image_io import read_image

    try:
        with np.load(case.prob_path) as z:
            prob = z["probabilities"]
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise ThresholdError(f"{case.prob_path}: cannot read 'probabilities' ({e})") from None
    ref = read_image(case.label_path)
    if prob.shape != ref.array.shape:
        raise ThresholdError(f"{case.prob_path}: probabilities {prob.shape} are not on the grid of "
                             f"{case.label_path} {ref.array.shape}")
    return prob, ref.array > 0, ref.spacing_zyx


def tune(model_dir: str | Path, labels_dir: str | Path, plans, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
         progress: bool = True, plot: bool = True) -> dict:
    """Run steps 1-4 of the module docstring; returns the stored configuration."""
    from tqdm import tqdm

    model_dir = Path(model_dir)
    cases = collect_cv_cases(model_dir, labels_dir)
    thresholds = list(thresholds)
    if 0.5 not in thresholds:
        thresholds = sorted([*thresholds, 0.5])
    i05 = thresholds.index(0.5)
    curves = []
    for c in tqdm(cases, desc="threshold sweep", unit="case", disable=not progress):
        prob, ref, _ = _load_case(c)
        curves.append(dsc_curve(prob, ref, thresholds))
    curves = np.asarray(curves)
    t_best, i_best = best_threshold(curves, thresholds)
    med = np.median(curves, axis=0)

    pp = plans.postprocessing
    per_mode = {m: [] for m in MODES}
    removed = {m: [] for m in MODES}
    for c in tqdm(cases, desc="post-processing", unit="case", disable=not progress):
        prob, ref, spacing = _load_case(c)
        for m in MODES:
            r = postprocess(prob, spacing, t_best, pp.erosion_radius_mm, pp.connectivity, m)
            per_mode[m].append(dice(r.mask, ref))
            removed[m].append(r.removed_ml)
    raw = curves[:, i_best]
    stats = {"none": (float(np.median(raw)), float(np.mean(raw)))}
    for m in MODES:
        stats[m] = (float(np.median(per_mode[m])), float(np.mean(per_mode[m])))
    # keep post-processing if it raises the median without lowering the mean (nnU-Net keeps it when
    # the mean does not drop); among the modes, the better median wins
    choice = "none"
    for m in MODES:
        med_m, mean_m = stats[m]
        if med_m > stats[choice][0] + 1e-9 and mean_m >= stats["none"][1] - 1e-9:
            choice = m
    config = {
        "threshold": t_best,
        "median_dsc": round(float(med[i_best]), 5),
        "median_dsc_at_0.5": round(float(med[i05]), 5),
        "gain_over_0.5": round(float(med[i_best] - med[i05]), 5),
        "gain_over_0.5_pct": round(100.0 * float(med[i_best] - med[i05]) / max(float(med[i05]), 1e-9), 3),
        "postprocessing": {"enabled": choice != "none", "mode": choice if choice != "none" else "paper",
                           "median_dsc": {k: round(v[0], 5) for k, v in stats.items()},
                           "mean_dsc": {k: round(v[1], 5) for k, v in stats.items()},
                           "erosion_radius_mm": pp.erosion_radius_mm, "connectivity": pp.connectivity},
        "n_cases": len(cases),
        "folds": sorted({c.fold for c in cases}),
        "thresholds": thresholds,
        "median_dsc_curve": [round(float(v), 5) for v in med],
        "cases": {c.case_id: {"fold": c.fold, "dsc_at_best": round(float(curves[k, i_best]), 5),
                              "dsc_at_0.5": round(float(curves[k, i05]), 5),
                              **{f"dsc_post_{m}": round(per_mode[m][k], 5) for m in MODES},
                              **{f"removed_ml_{m}": round(removed[m][k], 2) for m in MODES}}
                  for k, c in enumerate(cases)},
    }
    save_json(config, model_dir / INFERENCE_CONFIG)
    if plot:
        plot_sweep(thresholds, curves, t_best, model_dir / "threshold_sweep.png")
    return config


def plot_sweep(thresholds: Sequence[float], curves: np.ndarray, best: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from livseg_pipeline.utils.files import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in curves:
        ax.plot(thresholds, row, color="0.8", lw=0.7)
    ax.plot(thresholds, np.median(curves, axis=0), color="tab:blue", lw=2, label="median DSC")
    ax.axvline(0.5, color="0.4", ls=":", label="0.5")
    ax.axvline(best, color="tab:red", ls="--", label=f"best {best:.2f}")
    ax.set_xlabel("probability threshold")
    ax.set_ylabel("DSC (cross-validation)")
    lo = float(np.percentile(curves, 5)) if curves.size else 0.0
    ax.set_ylim(max(0.0, min(lo, float(np.median(curves, axis=0).min())) - 0.02), 1.0)
    ax.legend(loc="lower center")
    ax.set_title(f"threshold sweep, {len(curves)} cases")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
