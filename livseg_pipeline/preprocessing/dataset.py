"""Preprocess every case of a raw dataset into the plans' folder, in parallel.

Each worker handles one case at a time (read -> :func:`preprocess_case` -> save), so peak memory is
about one case per worker; workers are recycled every few cases so memory freed by numpy and
SimpleITK really goes back. Cases already preprocessed with the same preprocessing settings (plans
hash) from unchanged input files (size and modification time) are skipped; a failed case is
reported with a one-line reason and the rest go on.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from livseg_pipeline.experiment_planning.plans import Plans, plans_from_dict, preprocessing_hash
from livseg_pipeline.io.image_io import ImageReadError, read_image
from livseg_pipeline.preprocessing.preprocessor import (
    PreprocessingError,
    file_stamps,
    is_case_current,
    preprocess_case,
    save_preprocessed_case,
)
from livseg_pipeline.utils.files import load_json, save_json


@dataclass(frozen=True)
class RawCase:
    case_id: str
    image: Path
    label: Path | None


def raw_cases(raw_dataset_dir: str | Path) -> list[RawCase]:
    """The cases of a raw dataset (``dataset.json`` "cases" when present, else ``imagesTr/*_0000``)."""
    raw = Path(raw_dataset_dir)
    ds_path = raw / "dataset.json"
    ds = load_json(ds_path) if ds_path.is_file() else {}
    ending = ds.get("file_ending", ".nii.gz")
    suffix = f"_0000{ending}"
    if ds.get("cases"):
        ids = sorted(ds["cases"])
    else:
        images = raw / "imagesTr"
        ids = sorted(p.name[: -len(suffix)] for p in images.glob(f"*{suffix}")) if images.is_dir() else []
    out = []
    for c in ids:
        lab = raw / "labelsTr" / f"{c}{ending}"
        out.append(RawCase(c, raw / "imagesTr" / f"{c}{suffix}", lab if lab.is_file() else None))
    return out


@dataclass
class CaseResult:
    case_id: str
    status: str                 # done | skipped | failed
    seconds: float = 0.0
    message: str = ""
    info: dict = field(default_factory=dict)


def _run_one(job: tuple[RawCase, dict, str]) -> CaseResult:
    case, plans_dict, out_dir = job
    t0 = time.perf_counter()
    try:
        plans = plans_from_dict(plans_dict)
        image = read_image(case.image)
        label = read_image(case.label) if case.label is not None else None
        arrays, props = preprocess_case(image, label, plans)
        props["source_stamps"] = file_stamps(case.image, case.label)
        del image, label
        save_preprocessed_case(out_dir, case.case_id, arrays, props)
        info = {k: props.get(k) for k in ("liver_volume_change_pct", "liver_volume_ml_original")}
        info["shape_zyx"] = props["preprocessed"]["shape_zyx"]
        info["original_shape_zyx"] = props["original"]["shape_zyx"]
        return CaseResult(case.case_id, "done", time.perf_counter() - t0, info=info)
    except (ImageReadError, PreprocessingError, OSError, ValueError, MemoryError) as e:
        return CaseResult(case.case_id, "failed", time.perf_counter() - t0, str(e).splitlines()[0])
    except Exception as e:  # noqa: BLE001 - one broken case must not stop the dataset
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return CaseResult(case.case_id, "failed", time.perf_counter() - t0,
                          f"{case.image}: {type(e).__name__}: {e} (at {Path(tb.filename).name}:{tb.lineno})")


def _init_worker(threads: int) -> None:
    import SimpleITK as sitk

    # n workers x all cores of SimpleITK would oversubscribe the CPU.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, threads))


def preprocess_dataset(raw_dataset_dir: str | Path, out_dir: str | Path, plans: Plans, num_processes: int = 2,
                       overwrite: bool = False, cases: list[str] | None = None,
                       verbose: bool = True) -> dict:
    """Preprocess the raw dataset's cases into ``out_dir``; returns (and writes as
    ``preprocessing_summary.json``) a summary with one entry per case."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo_cases = raw_cases(raw_dataset_dir)
    if cases is not None:
        wanted = set(cases)
        todo_cases = [c for c in todo_cases if c.case_id in wanted]
    if not todo_cases:
        raise FileNotFoundError(f"{raw_dataset_dir}: no cases to preprocess (imagesTr/*_0000.* or dataset.json)")
    results: list[CaseResult] = []
    jobs = []
    for c in todo_cases:
        if not overwrite and is_case_current(out_dir, c.case_id, plans, file_stamps(c.image, c.label)):
            results.append(CaseResult(c.case_id, "skipped", message="already preprocessed with these settings"))
        else:
            jobs.append((c, plans.to_dict(), str(out_dir)))
    t0 = time.perf_counter()
    n_proc = max(1, min(int(num_processes), len(jobs))) if jobs else 1
    if jobs:
        bar = tqdm(total=len(jobs), desc="preprocess", unit="case", dynamic_ncols=True, disable=not verbose)

        def collect(r: CaseResult) -> None:
            results.append(r)
            bar.update(1)
            if r.status == "failed" and verbose:
                bar.write(f"  {r.case_id}: FAILED {r.message}")

        try:
            if n_proc == 1:
                for job in jobs:
                    collect(_run_one(job))
            else:
                cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
                ctx = multiprocessing.get_context("fork")
                # maxtasksperchild: a fresh worker every few cases really returns freed memory to the OS
                with ctx.Pool(n_proc, initializer=_init_worker, initargs=(max(1, cores // n_proc),),
                              maxtasksperchild=4) as pool:
                    for r in pool.imap_unordered(_run_one, jobs):
                        collect(r)
        finally:
            bar.close()
    summary = _summary(results, plans, out_dir, time.perf_counter() - t0, n_proc)
    save_json(summary, out_dir / "preprocessing_summary.json")
    if verbose:
        print(format_summary(summary), flush=True)
    return summary


def _summary(results: list[CaseResult], plans: Plans, out_dir: Path, seconds: float, n_proc: int) -> dict:
    results = sorted(results, key=lambda r: r.case_id)
    done = [r for r in results if r.status == "done"]
    changes = [abs(r.info["liver_volume_change_pct"]) for r in done
               if r.info.get("liver_volume_change_pct") is not None]
    return {
        "folder": str(out_dir),
        "plans_name": plans.plans_name,
        "plans_hash": preprocessing_hash(plans),
        "n_cases": len(results),
        "n_done": len(done),
        "n_skipped": sum(r.status == "skipped" for r in results),
        "n_failed": sum(r.status == "failed" for r in results),
        "seconds": round(seconds, 2),
        "num_processes": n_proc,
        "mean_seconds_per_case": round(sum(r.seconds for r in done) / len(done), 2) if done else None,
        "max_abs_liver_volume_change_pct": round(max(changes), 3) if changes else None,
        "disk_mb": round(sum(p.stat().st_size for p in out_dir.glob("*.npz")) / 1e6, 1),
        "cases": {r.case_id: {"status": r.status, "seconds": round(r.seconds, 2), "message": r.message, **r.info}
                  for r in results},
    }


def format_summary(summary: dict) -> str:
    """The lines printed at the end of preprocessing."""
    lines = [f"preprocessing summary ({summary['plans_name']}, {summary['folder']})",
             f"  cases: {summary['n_cases']}  done: {summary['n_done']}  skipped (up to date): "
             f"{summary['n_skipped']}  failed: {summary['n_failed']}",
             f"  time: {summary['seconds']:.1f} s with {summary['num_processes']} worker(s)"
             + (f", {summary['mean_seconds_per_case']:.1f} s per case" if summary["mean_seconds_per_case"] else ""),
             f"  disk: {summary['disk_mb']:.1f} MB of CASE.npz"]
    if summary["max_abs_liver_volume_change_pct"] is not None:
        lines.append(f"  liver volume change by resampling: at most {summary['max_abs_liver_volume_change_pct']:.2f} %")
    for case, rec in summary["cases"].items():
        if rec["status"] == "failed":
            lines.append(f"  FAILED {case}: {rec['message']}")
    return "\n".join(lines)
