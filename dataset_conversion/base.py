"""The machinery every converter shares: list, read, validate, write, record, report.

A converter (one small module per source) only says how its native layout is listed
(:meth:`Converter.list_cases`) and read (:meth:`Converter.read_image`, :meth:`Converter.read_label`)
and which label values it accepts. Everything else lives here, once:

* validation (label present, on the image grid, expected values, liver not empty, no NaN);
* writing ``imagesTr/CASE_0000.nii.gz`` (HU, int16 where lossless) and ``labelsTr/CASE.nii.gz``
  (uint8 0/1, the image's grid) atomically, so a failed case leaves nothing behind;
* the per-case record in ``dataset.json`` (source, original paths, patient, group, hashes);
* rerun-skipping: a case whose input files hash as before and whose outputs exist is not redone;
* the dataset-level steps after conversion (fingerprint, duplicates, splits), run over the whole
  dataset so that repeated calls with other sources add to one dataset;
* ``conversion_report.json`` and the printed summary.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import SimpleITK as sitk

from dataset_conversion.errors import CaseError, ConversionError
from livseg_pipeline.experiment_planning.duplicates import POLICIES, find_duplicates
from livseg_pipeline.experiment_planning.fingerprint import extract_fingerprint, fingerprint_case, map_cases
from livseg_pipeline.experiment_planning.splits import assign_groups, make_splits
from livseg_pipeline.io.image_io import Image, ImageReadError, read_image, same_grid
from livseg_pipeline.paths import dataset_name, parse_dataset_name, raw_root
from livseg_pipeline.utils.files import atomic_path, load_json, save_json

__all__ = ["CaseError", "ConversionError", "Converter", "SourceCase", "run_conversion"]

DUPLICATE_POLICIES = POLICIES
FILE_ENDING = ".nii.gz"
_ID_RE = re.compile(r"[^A-Za-z0-9_\-]+")


@dataclass(frozen=True)
class SourceCase:
    """One case found in a source's native layout.

    ``image_ref`` / ``label_ref`` are what the converter reads (a file, a folder or a zip);
    ``original_paths`` are every input the case depends on (hashed for rerun-skipping).
    """

    case_id: str
    patient_id: str
    image_ref: str
    label_ref: str | None
    original_paths: tuple[str, ...] = ()

    def paths(self) -> tuple[str, ...]:
        return self.original_paths or tuple(p for p in (self.image_ref, self.label_ref) if p)


def make_case_id(*parts: object) -> str:
    """A file-name-safe case id from parts.

    >>> make_case_id("sirt", "Patient 07/A")
    'sirt_Patient_07_A'
    """
    return "_".join(_ID_RE.sub("_", str(p)).strip("_") for p in parts if str(p) != "")


def find_files(input_dir: Path, pattern: str) -> list[tuple[Path, re.Match]]:
    """Files below ``input_dir`` whose name fully matches ``pattern`` (case-insensitive), sorted;
    hidden files (macOS ``._*`` companions in the MSD archives) are ignored."""
    rx = re.compile(pattern, re.IGNORECASE)
    found = []
    for p in sorted(input_dir.rglob("*")):
        if p.name.startswith(".") or not p.is_file():
            continue
        m = rx.fullmatch(p.name)
        if m:
            found.append((p, m))
    return found


class Converter:
    """Base of the per-source converters. Subclasses set :attr:`source` and implement
    :meth:`list_cases`; they override the readers only when the layout needs it."""

    source: ClassVar[str] = ""
    #: native label values accepted; everything > 0 is liver (LiTS/MSD: 2 = tumour, part of the liver).
    label_values: ClassVar[frozenset[int]] = frozenset({0, 1, 255})
    #: what the input folder is expected to hold, for the "nothing found" message.
    layout_hint: ClassVar[str] = ""

    def list_cases(self, input_dir: Path) -> list[SourceCase]:
        raise NotImplementedError

    def read_image(self, case: SourceCase) -> Image:
        return read_image(case.image_ref)

    def read_label(self, case: SourceCase, image: Image) -> Image:
        if not case.label_ref:
            raise CaseError(f"{case.image_ref}: no liver label found for this image")
        if not Path(case.label_ref).exists():
            raise CaseError(f"{case.label_ref}: label file missing")
        return read_image(case.label_ref)

    # -- shared steps -------------------------------------------------------------------------
    def liver_mask(self, case: SourceCase, image: Image, label: Image) -> np.ndarray:
        """Validate ``label`` against ``image`` and return the uint8 0/1 liver mask."""
        where = case.label_ref or case.image_ref
        if not same_grid(image, label):
            raise CaseError(f"{where}: label is on another grid than the image "
                            f"(label shape {label.array.shape}, spacing {_fmt(label.spacing)}, origin "
                            f"{_fmt(label.geometry.origin)}; image shape {image.array.shape}, spacing "
                            f"{_fmt(image.spacing)}, origin {_fmt(image.geometry.origin)})")
        values = np.unique(label.array)
        if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
            raise CaseError(f"{where}: label holds NaN or infinite values")
        unexpected = [v for v in values.tolist() if v not in self.label_values]
        if unexpected:
            raise CaseError(f"{where}: unexpected label values {_fmt_values(values)} "
                            f"(a {self.source} label holds {_fmt_values(sorted(self.label_values))})")
        mask = (label.array > 0).astype(np.uint8)
        if not mask.any():
            raise CaseError(f"{where}: label is empty (no liver voxel)")
        return mask


class PairedFilesConverter(Converter):
    """A source of image files found by a name pattern (group 1: the case number), each with a label
    file at a path derived from the image's (LiTS, MSD, SLIVER07)."""

    image_pattern: ClassVar[str] = ""

    def label_path(self, image: Path, match: re.Match) -> Path:
        raise NotImplementedError

    def data_files(self, path: Path) -> list[Path]:
        """Further files a header depends on (a MetaImage's voxel file)."""
        return []

    def list_cases(self, input_dir: Path) -> list[SourceCase]:
        cases = []
        for path, m in find_files(input_dir, self.image_pattern):
            label = self.label_path(path, m)
            if label is None:
                continue
            cid = make_case_id(self.source, f"{int(m.group(1)):03d}")
            paths = [path, *self.data_files(path), label, *self.data_files(label)]
            cases.append(SourceCase(cid, cid, str(path), str(label), tuple(dict.fromkeys(map(str, paths)))))
        return cases


def _fmt(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _fmt_values(values: Iterable) -> str:
    return "{" + ", ".join(str(int(v)) if float(v).is_integer() else f"{v:g}" for v in values) + "}"


def hu_array(image: Image) -> np.ndarray:
    """The CT as stored in the raw dataset: int16 when that is lossless, else float32.

    >>> hu_array(Image(np.array([[[-1024.0, 3071.0]]]), None)).dtype
    dtype('int16')
    >>> hu_array(Image(np.array([[[0.5]]]), None)).dtype
    dtype('float32')
    """
    a = image.array
    if a.dtype == np.int16 or a.size == 0:
        return a
    info = np.iinfo(np.int16)
    integral = np.issubdtype(a.dtype, np.integer) or bool(np.all(np.isfinite(a)) and np.array_equal(a, np.round(a)))
    if integral and info.min <= a.min() and a.max() <= info.max:
        return a.astype(np.int16)
    return a.astype(np.float32)


def hash_paths(paths: Iterable[str | Path]) -> str:
    """sha256 over the bytes of every file (folders: every file inside, in sorted order)."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode() + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# One case (runs in a worker process)
# ----------------------------------------------------------------------------------------------
@dataclass
class CaseResult:
    case_id: str
    status: str  # converted | updated | unchanged | failed
    reason: str = ""
    record: dict = field(default_factory=dict)
    fingerprint: dict | None = None
    seconds: float = 0.0


def output_paths(dataset_dir: Path, case_id: str) -> tuple[Path, Path]:
    return (dataset_dir / "imagesTr" / f"{case_id}_0000{FILE_ENDING}",
            dataset_dir / "labelsTr" / f"{case_id}{FILE_ENDING}")


def _write_case(image: Image, mask: np.ndarray, dataset_dir: Path, case_id: str) -> None:
    """Both files appear together or not at all (temp files renamed after both are written)."""
    img_path, lab_path = output_paths(dataset_dir, case_id)
    ct = image.to_sitk()
    lab = sitk.GetImageFromArray(mask)
    lab.CopyInformation(ct)
    with atomic_path(lab_path) as tmp_lab, atomic_path(img_path) as tmp_img:
        sitk.WriteImage(lab, str(tmp_lab), True)
        sitk.WriteImage(ct, str(tmp_img), True)


def convert_case(converter: Converter, case: SourceCase, dataset_dir: Path, known: dict | None) -> CaseResult:
    """Read, validate and write one case; never raises for a bad case (the reason is returned).

    ``known`` is the case's record from an earlier run: the same input bytes (even moved elsewhere)
    make the case ``unchanged``; changed bytes at the same paths make it ``updated``; other bytes
    at other paths under the same case id are refused (two different scans, one id).
    """
    t0 = time.perf_counter()
    try:
        missing = [p for p in case.paths() if not Path(p).exists()]
        if missing:
            what = "label" if case.label_ref and missing[0] == case.label_ref else "input"
            raise CaseError(f"{missing[0]}: {what} file missing")
        source_hash = hash_paths(case.paths())
        paths = [str(Path(p).resolve()) for p in case.paths()]
        if known:
            if source_hash == known.get("source_hash") and all(
                    p.exists() for p in output_paths(dataset_dir, case.case_id)):
                return CaseResult(case.case_id, "unchanged", record=dict(known, original_paths=paths),
                                  seconds=time.perf_counter() - t0)
            if known.get("original_paths") != paths:
                raise CaseError(f"{case.image_ref}: case id {case.case_id} already holds another scan "
                                f"({(known.get('original_paths') or ['?'])[0]}); not overwritten")
        image = converter.read_image(case)
        label = converter.read_label(case, image)
        mask = converter.liver_mask(case, image, label)
        ct = hu_array(image)
        if np.issubdtype(ct.dtype, np.floating) and not np.all(np.isfinite(ct)):
            raise CaseError(f"{case.image_ref}: image holds {int(np.sum(~np.isfinite(ct)))} NaN/infinite voxels")
        out = Image(ct, image.geometry, image.source)
        _write_case(out, mask, dataset_dir, case.case_id)
        fp = fingerprint_case(out, out.with_array(mask))
        record = {"source": converter.source, "original_paths": paths,
                  "patient_id": case.patient_id, "group_id": case.patient_id,
                  "content_hash": fp["content_hash"], "source_hash": source_hash,
                  "training_weight": 1.0,
                  "converted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        status = "updated" if known else "converted"
        return CaseResult(case.case_id, status, record=record, fingerprint=fp, seconds=time.perf_counter() - t0)
    except (CaseError, ImageReadError) as e:
        return CaseResult(case.case_id, "failed", reason=str(e), seconds=time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - one broken case must not stop a batch; the reason is reported
        reason = f"{case.image_ref}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        return CaseResult(case.case_id, "failed", reason=reason, seconds=time.perf_counter() - t0)


def _convert_case_star(args: tuple) -> CaseResult:
    return convert_case(*args)


# ----------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------
def new_dataset_json(name: str) -> dict:
    return {"name": name, "description": "livseg whole-liver CT dataset (lvs_convert)",
            "channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
            "numTraining": 0, "file_ending": FILE_ENDING, "cases": {}}


def find_or_create_dataset(dataset_id: int, name: str | None) -> Path:
    """The raw folder of dataset ``dataset_id``: the existing one, or a new ``DatasetNNN_<name>``."""
    root = raw_root()
    existing = []
    if root.is_dir():
        for child in root.iterdir():
            with contextlib.suppress(ValueError):
                if child.is_dir() and parse_dataset_name(child.name)[0] == int(dataset_id):
                    existing.append(child)
    if len(existing) > 1:
        raise ConversionError(f"{root}: several folders use dataset id {dataset_id}: "
                              f"{', '.join(sorted(p.name for p in existing))}")
    if existing:
        found = existing[0]
        if name and parse_dataset_name(found.name)[1] != name:
            raise ConversionError(f"{found}: dataset {dataset_id} already exists with another name; "
                                  f"drop --name or use --name {parse_dataset_name(found.name)[1]}")
        return found
    try:
        folder = root / dataset_name(dataset_id, name or "Liver")
    except ValueError as e:
        raise ConversionError(str(e)) from None
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def load_dataset_json(dataset_dir: Path) -> dict:
    path = dataset_dir / "dataset.json"
    if not path.exists():
        return new_dataset_json(parse_dataset_name(dataset_dir.name)[1])
    try:
        ds = load_json(path)
    except ValueError as e:
        raise ConversionError(str(e)) from None
    if not isinstance(ds, dict) or not isinstance(ds.get("cases", {}), dict):
        raise ConversionError(f"{path}: not a livseg dataset.json (no 'cases' mapping)")
    ds.setdefault("cases", {})
    return ds


def run_conversion(converter: Converter, input_dir: str | Path, dataset_id: int, name: str | None = None,
                   num_processes: int = 1, duplicates: str = "group", overwrite_splits: bool = False,
                   verbose: bool = True) -> dict:
    """Convert every case of ``input_dir`` into dataset ``dataset_id``, then refresh the
    fingerprint, duplicates and splits over the whole dataset. Returns this run's report (also
    appended to ``conversion_report.json``); ``report["n_failed"] > 0`` when a case was skipped."""
    if duplicates not in DUPLICATE_POLICIES:
        raise ConversionError(f"--duplicates must be one of {', '.join(DUPLICATE_POLICIES)}, got {duplicates!r}")
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise ConversionError(f"{input_dir}: input folder not found")
    cases = converter.list_cases(input_dir)
    if not cases:
        raise ConversionError(f"{input_dir}: no {converter.source} cases found (expected {converter.layout_hint})")
    ids = [c.case_id for c in cases]
    dup_ids = sorted({i for i in ids if ids.count(i) > 1})
    if dup_ids:
        raise ConversionError(f"{input_dir}: several inputs map to the same case id(s) {', '.join(dup_ids)}")

    dataset_dir = find_or_create_dataset(dataset_id, name)
    ds = load_dataset_json(dataset_dir)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    results: dict[str, CaseResult] = {}
    jobs = []
    for c in cases:
        rec = ds["cases"].get(c.case_id)
        if rec is not None and rec.get("source") != converter.source:
            results[c.case_id] = CaseResult(
                c.case_id, "failed", reason=f"{c.image_ref}: case id {c.case_id} already holds a "
                f"{rec.get('source')} case ({(rec.get('original_paths') or ['?'])[0]}); not overwritten")
            continue
        jobs.append((converter, c, dataset_dir, rec))

    fingerprints: dict[str, dict] = {}
    t0 = time.perf_counter()
    for res in map_cases(_convert_case_star, jobs, num_processes, f"lvs_convert {converter.source}"):
        results[res.case_id] = res
        if res.record:
            ds["cases"][res.case_id] = res.record
        if res.fingerprint:
            fingerprints[res.case_id] = res.fingerprint
        if res.status in ("converted", "updated"):
            _save_dataset_json(dataset_dir, ds)  # after every case: an interrupted run keeps its work
    _save_dataset_json(dataset_dir, ds)

    fp = extract_fingerprint(dataset_dir, num_processes=num_processes, precomputed=fingerprints, verbose=verbose)
    dup = find_duplicates(dataset_dir, fingerprint=fp, policy=duplicates, verbose=verbose)
    assign_groups(ds["cases"], dup)
    _save_dataset_json(dataset_dir, ds)
    splits = make_splits(dataset_dir, overwrite=overwrite_splits, verbose=verbose)

    report = {"started": started, "seconds": round(time.perf_counter() - t0, 1), "source": converter.source,
              "input": str(input_dir.resolve()), "dataset": dataset_dir.name, "duplicates_policy": duplicates,
              "n_cases": len(cases),
              "n_converted": sum(r.status in ("converted", "updated") for r in results.values()),
              "n_unchanged": sum(r.status == "unchanged" for r in results.values()),
              "n_failed": sum(r.status == "failed" for r in results.values()),
              "n_folds": len(splits),
              "cases": {cid: {"status": r.status, "reason": r.reason, "seconds": round(r.seconds, 2)}
                        for cid, r in sorted(results.items())}}
    _append_report(dataset_dir, report)
    if verbose:
        print(format_summary(report, ds))
    return report


def _save_dataset_json(dataset_dir: Path, ds: dict) -> None:
    ds["cases"] = dict(sorted(ds["cases"].items()))
    ds["numTraining"] = len(ds["cases"])
    save_json(ds, dataset_dir / "dataset.json")


def _append_report(dataset_dir: Path, report: dict) -> None:
    path = dataset_dir / "conversion_report.json"
    old = {"runs": []}
    if path.exists():
        with contextlib.suppress(ValueError):
            old = load_json(path)
    runs = [r for r in old.get("runs", []) if isinstance(r, dict)] + [report]
    failed = {cid: c["reason"] for cid, c in report["cases"].items() if c["status"] == "failed"}
    save_json({"latest": {k: v for k, v in report.items() if k != "cases"} | {"failed": failed},
               "runs": runs}, path)


def format_summary(report: dict, ds: dict | None = None) -> str:
    """The table printed at the end of a run: one line per case that did not just stay as it was."""
    lines = [f"lvs_convert {report['source']} -> {report['dataset']}: {report['n_cases']} cases found, "
             f"{report['n_converted']} converted, {report['n_unchanged']} unchanged, "
             f"{report['n_failed']} failed ({report['seconds']:.1f} s)"]
    rows = [(cid, c["status"], c["reason"]) for cid, c in report["cases"].items() if c["status"] != "unchanged"]
    if rows:
        w = max(len(r[0]) for r in rows)
        lines.append(f"  {'case':<{w}}  {'status':<9}  reason")
        lines += [f"  {cid:<{w}}  {status:<9}  {reason}" for cid, status, reason in rows]
    if ds is not None:
        lines.append(f"  dataset now holds {len(ds['cases'])} cases; {report['n_folds']} folds in splits_final.json")
    if report["n_failed"]:
        lines.append(f"  {report['n_failed']} case(s) skipped; reasons also in conversion_report.json")
    return "\n".join(lines)

