"""Dataset fingerprint: what every case looks like, and what is wrong with its header.

``extract_fingerprint(raw_dataset_dir)`` writes ``fingerprint.json``::

    {"cases": {CASE: {content_hash, shape (z,y,x), spacing (x,y,z), origin, direction, orientation,
                      dtype, hu {...}, hu_liver {...}, liver_voxels, liver_volume_ml, liver_fraction,
                      liver_side, label_values, n_nan, verdicts {code: message}, signature, liver_hu_sample,
                      files}},
     "summary": {n_cases, median_spacing, min_spacing, max_spacing, median_shape, liver_volume_ml,
                 median_liver_fraction, foreground_intensity_properties, orientations, verdict_counts}}

Verdict codes (a case may have several; none means nothing looked wrong):
``spacing_nonpositive``, ``spacing_implausible``, ``spacing_default`` (1 mm / origin 0: geometry lost?),
``direction_not_orthonormal``, ``grid_mismatch``, ``label_values``, ``liver_empty``, ``not_hu``,
``nan``, ``liver_on_left`` (mirrored header?), ``liver_volume_implausible``, ``liver_hu_implausible``,
``unreadable``.

Records are reused on a rerun while the image and label files are unchanged (size and mtime), so
adding cases to a dataset only fingerprints the new ones.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from livseg_pipeline.experiment_planning.duplicates import content_hash, profiles, to_lps
from livseg_pipeline.io.image_io import (
    Image,
    ImageReadError,
    is_orthonormal,
    read_image,
    same_grid,
)
from livseg_pipeline.utils.files import load_json, save_json

T = TypeVar("T")
PERCENTILES = (0.5, 1, 5, 25, 50, 75, 95, 99, 99.5)
#: spacing (mm) outside these ranges is implausible for abdominal CT: in-plane (x, y), slice (z).
INPLANE_RANGE = (0.2, 6.0)
SLICE_RANGE = (0.2, 12.0)
LIVER_VOLUME_RANGE_ML = (200.0, 6000.0)
LIVER_MEDIAN_HU_RANGE = (-100.0, 300.0)
_MAX_SAMPLES = 2_000_000
_LIVER_SAMPLE = 1000


def _stats(values: np.ndarray) -> dict:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {}
    pct = np.percentile(values, PERCENTILES)
    out = {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
           "max": float(values.max())}
    out.update({f"p{p:g}".replace(".", "_"): round(float(v), 2) for p, v in zip(PERCENTILES, pct)})
    return out


def _sample(values: np.ndarray, n: int) -> np.ndarray:
    """Every k-th value (deterministic), at most ``n`` of them."""
    step = max(1, int(np.ceil(values.size / n)))
    return values[::step]


def fingerprint_case(image: Image, label: Image | None) -> dict:
    """Fingerprint of one case (image in HU, label 0/1 or anything to be judged)."""
    g = image.geometry
    verdicts: dict[str, str] = {}
    sp = np.asarray(g.spacing, float)
    if np.any(sp <= 0):
        verdicts["spacing_nonpositive"] = f"spacing {sp.tolist()} has a zero or negative value"
    elif not (np.all((sp[:2] >= INPLANE_RANGE[0]) & (sp[:2] <= INPLANE_RANGE[1]))
              and SLICE_RANGE[0] <= sp[2] <= SLICE_RANGE[1]):
        verdicts["spacing_implausible"] = (f"spacing {np.round(sp, 4).tolist()} mm is implausible for abdominal CT "
                                           f"(in-plane {INPLANE_RANGE}, slices {SLICE_RANGE})")
    if np.allclose(sp, 1.0) and np.allclose(g.origin, 0.0):
        verdicts["spacing_default"] = "spacing 1 mm and origin 0: the header looks like defaults (geometry lost?)"
    if not is_orthonormal(g):
        verdicts["direction_not_orthonormal"] = f"direction {np.round(g.direction, 4).tolist()} is not orthonormal"

    lps = to_lps(image)
    arr = lps.array
    n_nan = int(np.sum(~np.isfinite(arr))) if np.issubdtype(arr.dtype, np.floating) else 0
    if n_nan:
        verdicts["nan"] = f"{n_nan} NaN/infinite voxels"
    sample = _sample(arr.ravel(), _MAX_SAMPLES).astype(np.float64)
    hu = _stats(sample)
    if hu and hu["p0_5"] >= -200 and hu["max"] > 1500:
        verdicts["not_hu"] = (f"values {hu['min']:.0f}..{hu['max']:.0f} with no air below -200: looks like "
                              "unrescaled stored values, not HU (RescaleIntercept not applied?)")
    elif hu and hu["max"] - hu["min"] < 200:
        verdicts["not_hu"] = f"values span only {hu['min']:.4g}..{hu['max']:.4g}: not HU (normalised image?)"

    rec = {"content_hash": content_hash(arr), "shape": list(image.array.shape), "spacing": sp.tolist(),
           "origin": list(g.origin), "direction": list(g.direction), "orientation": _orientation(image),
           "dtype": str(image.array.dtype), "n_nan": n_nan, "hu": hu}

    if label is not None:
        _label_part(rec, verdicts, image, lps, label)
    rec["verdicts"] = verdicts
    rec["signature"] = {"profiles": profiles(arr)}
    return rec


def _orientation(image: Image) -> str:
    try:
        return image.geometry.orientation_code
    except RuntimeError:
        return "?"


def _label_part(rec: dict, verdicts: dict, image: Image, lps: Image, label: Image) -> None:
    values = np.unique(label.array)
    rec["label_values"] = [float(v) if not float(v).is_integer() else int(v) for v in values[:20]]
    if not set(rec["label_values"]) <= {0, 1}:
        verdicts["label_values"] = f"label values {rec['label_values']} (expected 0 and 1)"
    if not same_grid(image, label):
        verdicts["grid_mismatch"] = (f"label grid (shape {list(label.array.shape)}, spacing "
                                     f"{np.round(label.spacing, 4).tolist()}) differs from the image grid")
        if label.array.shape != image.array.shape:
            return
    lab = to_lps(image.with_array(label.array))
    liver = lab.array > 0
    n = int(liver.sum())
    rec["liver_voxels"] = n
    rec["liver_volume_ml"] = round(n * image.voxel_volume_ml, 3)
    rec["liver_fraction"] = n / liver.size
    if n == 0:
        verdicts["liver_empty"] = "the label holds no liver voxel"
        return
    vals = lps.array[liver].astype(np.float64)
    rec["hu_liver"] = _stats(_sample(vals, _MAX_SAMPLES))
    rec["liver_hu_sample"] = np.round(_sample(vals, _LIVER_SAMPLE)).astype(int).tolist()
    lo, hi = LIVER_VOLUME_RANGE_ML
    if not lo <= rec["liver_volume_ml"] <= hi:
        verdicts["liver_volume_implausible"] = f"liver volume {rec['liver_volume_ml']:.0f} mL outside {lo:.0f}-{hi:.0f}"
    med = rec["hu_liver"].get("p50", 0.0)
    if not LIVER_MEDIAN_HU_RANGE[0] <= med <= LIVER_MEDIAN_HU_RANGE[1]:
        verdicts["liver_hu_implausible"] = f"median HU in the liver {med:.0f} outside {LIVER_MEDIAN_HU_RANGE}"
    # In LPS, x grows towards the patient's left: the liver's centroid should lie at lower x than the body's.
    body = lps.array > -500
    if body.any():
        x = np.arange(liver.shape[2])
        cx_liver = float((liver.sum(axis=(0, 1)) * x).sum() / n)
        bx = body.sum(axis=(0, 1))
        cx_body = float((bx * x).sum() / max(bx.sum(), 1))
        rec["liver_side"] = "right" if cx_liver < cx_body else "left"
        if rec["liver_side"] == "left":
            verdicts["liver_on_left"] = ("the liver lies on the patient's left after reorientation to LPS: "
                                         "mirrored header or situs inversus?")


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------
def map_cases(func: Callable[[Any], T], jobs: list, num_processes: int, desc: str) -> Iterator[T]:
    """``func`` over ``jobs`` in worker processes, results in completion order, with a progress bar;
    in-process when one worker suffices (also used by the converter)."""
    bar = dict(total=len(jobs), desc=desc, unit="case", dynamic_ncols=True, leave=False)
    if num_processes <= 1 or len(jobs) <= 1:
        for j in tqdm(jobs, **bar):
            yield func(j)
        return
    with multiprocessing.get_context("fork").Pool(min(num_processes, len(jobs))) as pool:
        yield from tqdm(pool.imap_unordered(func, jobs), **bar)


def _dataset_cases(raw_dir: Path) -> tuple[list[str], str]:
    ds_path = raw_dir / "dataset.json"
    ds = load_json(ds_path) if ds_path.exists() else {}
    ending = ds.get("file_ending", ".nii.gz")
    if ds.get("cases"):
        return sorted(ds["cases"]), ending
    suffix = f"_0000{ending}"
    images = raw_dir / "imagesTr"
    return sorted(p.name[: -len(suffix)] for p in images.glob(f"*{suffix}")) if images.is_dir() else [], ending


def _stamps(raw_dir: Path, case: str, ending: str) -> list:
    out = []
    for p in (raw_dir / "imagesTr" / f"{case}_0000{ending}", raw_dir / "labelsTr" / f"{case}{ending}"):
        st = p.stat() if p.exists() else None
        out.append([st.st_size, st.st_mtime_ns] if st else None)
    return out


def _fingerprint_job(job: tuple[Path, str, str]) -> tuple[str, dict]:
    raw_dir, case, ending = job
    try:
        image = read_image(raw_dir / "imagesTr" / f"{case}_0000{ending}")
        lab_path = raw_dir / "labelsTr" / f"{case}{ending}"
        label = read_image(lab_path) if lab_path.exists() else None
        rec = fingerprint_case(image, label)
        if label is None:
            rec["verdicts"]["liver_empty"] = f"{lab_path}: label file missing"
    except (ImageReadError, OSError) as e:
        rec = {"verdicts": {"unreadable": str(e)}}
    rec["files"] = _stamps(raw_dir, case, ending)
    return case, rec


def extract_fingerprint(raw_dataset_dir: str | Path, num_processes: int = 2, precomputed: dict | None = None,
                        verbose: bool = True) -> dict:
    """Fingerprint every case of a raw dataset and write ``fingerprint.json``; returns it.

    ``precomputed`` maps case ids to records just computed from the written files (the converter
    passes them); records of an earlier ``fingerprint.json`` are reused while the files are unchanged.
    """
    raw_dir = Path(raw_dataset_dir)
    cases, ending = _dataset_cases(raw_dir)
    if not cases:
        raise FileNotFoundError(f"{raw_dir}: no cases (dataset.json 'cases' or imagesTr/*_0000{ending})")
    out_path = raw_dir / "fingerprint.json"
    old = {}
    if out_path.exists():
        try:
            old = load_json(out_path).get("cases", {})
        except (ValueError, AttributeError):
            old = {}
    records: dict[str, dict] = {}
    todo = []
    for c in cases:
        stamps = _stamps(raw_dir, c, ending)
        if precomputed and c in precomputed:
            records[c] = dict(precomputed[c], files=stamps)
        elif c in old and old[c].get("files") == stamps and "unreadable" not in old[c].get("verdicts", {}):
            records[c] = old[c]
        else:
            todo.append((raw_dir, c, ending))
    records.update(map_cases(_fingerprint_job, todo, num_processes, "fingerprint"))
    records = dict(sorted(records.items()))
    fp = {"cases": records, "summary": summarize(records)}
    save_json(fp, out_path)
    if verbose:
        print(format_summary(fp["summary"]))
    return fp


def summarize(records: dict[str, dict]) -> dict:
    ok = [r for r in records.values() if "spacing" in r]
    verdict_counts: dict[str, int] = {}
    for r in records.values():
        for code in r.get("verdicts", {}):
            verdict_counts[code] = verdict_counts.get(code, 0) + 1
    summary: dict = {"n_cases": len(records), "verdict_counts": dict(sorted(verdict_counts.items())),
                     "cases_with_verdicts": sorted(c for c, r in records.items() if r.get("verdicts"))}
    if not ok:
        return summary
    sp = np.array([r["spacing"] for r in ok], float)
    shapes = np.array([r["shape"] for r in ok], float)
    vols = np.array([r["liver_volume_ml"] for r in ok if "liver_volume_ml" in r], float)
    fracs = [r["liver_fraction"] for r in ok if "liver_fraction" in r]
    fg = np.concatenate([np.asarray(r.get("liver_hu_sample", []), float) for r in ok])
    orientations: dict[str, int] = {}
    for r in ok:
        orientations[r["orientation"]] = orientations.get(r["orientation"], 0) + 1
    summary.update({
        "median_spacing": np.median(sp, axis=0).tolist(), "min_spacing": sp.min(axis=0).tolist(),
        "max_spacing": sp.max(axis=0).tolist(), "median_shape": np.median(shapes, axis=0).tolist(),
        "liver_volume_ml": ({"median": float(np.median(vols)), "min": float(vols.min()), "max": float(vols.max())}
                            if vols.size else {}),
        "median_liver_fraction": float(np.median(fracs)) if fracs else 0.0,
        "orientations": dict(sorted(orientations.items())),
    })
    if fg.size:
        summary["foreground_intensity_properties"] = {
            "mean": float(fg.mean()), "median": float(np.median(fg)), "std": float(fg.std()),
            "min": float(fg.min()), "max": float(fg.max()),
            "percentile_00_5": float(np.percentile(fg, 0.5)), "percentile_99_5": float(np.percentile(fg, 99.5))}
    return summary


def format_summary(summary: dict) -> str:
    """The short table printed after fingerprinting."""
    rows = [("cases", str(summary["n_cases"]))]
    if "median_spacing" in summary:
        f3 = lambda v: " x ".join(f"{x:.3g}" for x in v)  # noqa: E731
        rows += [("spacing x,y,z (mm) median", f3(summary["median_spacing"])),
                 ("spacing min / max", f"{f3(summary['min_spacing'])} / {f3(summary['max_spacing'])}"),
                 ("shape z,y,x median", f3(summary["median_shape"])),
                 ("orientations", ", ".join(f"{k}: {v}" for k, v in summary["orientations"].items()))]
        vol = summary.get("liver_volume_ml") or {}
        if vol:
            rows.append(("liver volume mL median (min-max)",
                         f"{vol['median']:.0f} ({vol['min']:.0f}-{vol['max']:.0f})"))
        fg = summary.get("foreground_intensity_properties")
        if fg:
            rows.append(("liver HU median (p0.5-p99.5)",
                         f"{fg['median']:.0f} ({fg['percentile_00_5']:.0f}-{fg['percentile_99_5']:.0f})"))
    verdicts = ", ".join(f"{k}: {v}" for k, v in summary["verdict_counts"].items()) or "none"
    rows.append(("header verdicts", verdicts))
    flagged = summary.get("cases_with_verdicts", [])
    if flagged:
        more = f" (+{len(flagged) - 6} more, see fingerprint.json)" if len(flagged) > 6 else ""
        rows.append(("cases with verdicts", ", ".join(flagged[:6]) + more))
    w = max(len(r[0]) for r in rows)
    return "fingerprint\n" + "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)
