"""Evaluate a set of predictions against references: per-case metrics, summary, box plots.

Outputs of :func:`evaluate_sets` in ``out_dir`` (all written atomically):

* ``metrics.csv``: one row per case (``case, dsc, rv, msd_mm, hd_mm, hd95_mm, vol_ref_ml,
  vol_pred_ml, empty, reference, prediction``); NaN is an empty cell, infinity ``inf``.
* ``summary.json``: :func:`livseg_pipeline.evaluation.summary.summarize` plus inputs and options.
* ``boxplots.png``: the 2x2 panel of the paper's Fig. 2 (DSC, RV, MSD, HD).
* ``per_case/CASE.json``: each case's row with a fingerprint of its inputs (paths, sizes, mtimes,
  options); a rerun reuses rows whose fingerprint still matches, so only changed cases are recomputed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from livseg_pipeline.evaluation.cases import Matching, match_cases
from livseg_pipeline.evaluation.masks import aligned_pair, load_mask
from livseg_pipeline.evaluation.metrics import METRIC_KEYS, compute_metrics
from livseg_pipeline.evaluation.plots import metric_boxplots
from livseg_pipeline.evaluation.summary import json_safe, summarize
from livseg_pipeline.utils.files import atomic_path, load_json, save_json

# Bump when a metric definition changes, so cached per-case rows are recomputed.
METRICS_VERSION = 1
CSV_COLUMNS = ("case", *METRIC_KEYS, "empty", "reference", "prediction")


@dataclass(frozen=True)
class Job:
    """One comparison: ``prediction`` against ``reference`` (RV = V_prediction / V_reference)."""

    case: str
    reference: Path
    prediction: Path
    ref_label: int | None = None
    pred_label: int | None = None
    connectivity: int = 1
    group: str = ""  # sub-folder of the cache (one per pair in compare mode)


def evaluate_job(job: Job) -> dict:
    """Read both masks, check their grids and compute the metrics; a row for ``metrics.csv``."""
    ref = load_mask(job.reference, job.ref_label)
    pred = load_mask(job.prediction, job.pred_label)
    ref, pred = aligned_pair(ref, pred)
    metrics = compute_metrics(ref.array, pred.array, ref.spacing_zyx, job.connectivity)
    return {"case": job.case, **metrics, "reference": str(job.reference), "prediction": str(job.prediction)}


def _stat(path: Path) -> list[int]:
    """Size and newest mtime of a file, or of the files of a DICOM folder (a changed input shows)."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    stats = [p.stat() for p in files]
    return [len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]


def fingerprint(job: Job) -> dict:
    d = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(job).items()}
    d["reference"], d["prediction"] = str(job.reference.resolve()), str(job.prediction.resolve())
    return {**d, "ref_stat": _stat(job.reference), "pred_stat": _stat(job.prediction), "version": METRICS_VERSION}


def _load_cached(path: Path, fp: dict) -> dict | None:
    if not path.is_file():
        return None
    try:
        d = load_json(path)
    except (OSError, ValueError):
        return None
    return d.get("row") if isinstance(d, dict) and d.get("fingerprint") == fp else None


def run_jobs(jobs: Sequence[Job], cache_dir: Path, num_processes: int = 1, desc: str = "evaluating",
             force: bool = False, progress: bool = True) -> tuple[list[dict], int]:
    """Evaluate all jobs (in parallel processes when ``num_processes > 1``), reusing cached rows.

    Returns the rows in job order and how many came from the cache. The first failing case stops
    the run with its one-line error (rows finished before are kept in the cache).
    """
    rows: dict[int, dict] = {}
    todo: list[tuple[int, Job, dict, Path]] = []
    for i, job in enumerate(jobs):
        fp = fingerprint(job)
        cache = cache_dir / job.group / f"{job.case}.json"
        row = None if force else _load_cached(cache, fp)
        if row is None:
            todo.append((i, job, fp, cache))
        else:
            rows[i] = row
    n_cached = len(rows)

    def done(i: int, fp: dict, cache: Path, row: dict) -> None:
        rows[i] = row
        save_json({"fingerprint": fp, "row": row}, cache)

    with tqdm(total=len(jobs), initial=n_cached, desc=desc, unit="case", disable=not progress) as bar:
        if num_processes <= 1 or len(todo) <= 1:
            for i, job, fp, cache in todo:
                done(i, fp, cache, evaluate_job(job))
                bar.update()
        else:
            ex = ProcessPoolExecutor(min(num_processes, len(todo)))
            try:
                futures = {ex.submit(evaluate_job, job): (i, fp, cache) for i, job, fp, cache in todo}
                for fut in as_completed(futures):
                    done(*futures[fut], fut.result())
                    bar.update()
            finally:
                ex.shutdown(wait=True, cancel_futures=True)
    return [rows[i] for i in range(len(jobs))], n_cached


def write_csv(rows: Sequence[dict], path: Path, columns: Sequence[str],
              rename: Callable[[str], str] | None = None) -> Path:
    """Rows as CSV (NaN: empty cell, infinity: ``inf``), written atomically."""
    df = pd.DataFrame(list(rows), columns=list(columns))
    if rename:
        df = df.rename(columns=rename)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.8g")
    return path


def default_num_processes() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class EvaluationResult:
    rows: list[dict]
    summary: dict
    out_dir: Path
    matching: Matching
    n_cached: int


def evaluate_sets(reference: str | Path, prediction: str | Path, out_dir: str | Path,
                  num_processes: int = 1, ref_label: int | None = None, pred_label: int | None = None,
                  connectivity: int = 1, allow_missing: bool = False, force: bool = False,
                  plot: bool = True, progress: bool = True) -> EvaluationResult:
    """Evaluate the masks of ``prediction`` against those of ``reference`` (files or folders matched by
    case name, see :mod:`livseg_pipeline.evaluation.cases`) and write the outputs to ``out_dir``."""
    out_dir = Path(out_dir)
    matching = match_cases(reference, prediction, allow_missing)
    jobs = [Job(c, r, p, ref_label, pred_label, connectivity) for c, r, p in matching.pairs]
    rows, n_cached = run_jobs(jobs, out_dir / "per_case", num_processes, force=force, progress=progress)
    summary = {
        "reference": str(reference), "prediction": str(prediction),
        "missing_predictions": matching.missing, "extra_predictions_ignored": matching.extra,
        "options": {"ref_label": ref_label, "pred_label": pred_label, "connectivity": connectivity},
        "definitions": "documentation/evaluation.md (RV = V_pred / V_ref; MSD = mean of all surface distances "
                       "both ways; HD = max and HD95 = 95th percentile of the same pooled distances)",
        **summarize(rows),
    }
    write_csv(rows, out_dir / "metrics.csv", CSV_COLUMNS)
    save_json(json_safe(summary), out_dir / "summary.json")
    if plot:
        label = f"{Path(prediction).name} vs {Path(reference).name}"
        metric_boxplots({label: rows}, out_dir / "boxplots.png", title=f"{len(rows)} case(s)")
    return EvaluationResult(rows, summary, out_dir, matching, n_cached)
