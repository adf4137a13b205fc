"""A cohort of phantoms written in the native layouts of LiTS17, MSD Task03_Liver, SLIVER07,
3D-IRCADb-01 and a SIRT hospital export, with a ``manifest.json`` describing every case.

Planted on purpose: the paper's hard cases (low contrast/dose, a lesion of very different density,
an abnormally placed liver), one exact duplicate of a scan saved in another source's format with a
different header and data type, and one SIRT patient scanned twice (two dates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livseg_pipeline.phantom.generator import HARD_CASES, generate_phantom
from livseg_pipeline.phantom.layouts import (
    LAYOUTS,
    relative_files,
    write_ircadb,
    write_lits,
    write_msd,
    write_msd_dataset_json,
    write_sirt,
    write_sliver,
)
from livseg_pipeline.utils.files import load_json, save_json

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
NIFTI_ORIENTATIONS = ("RAS", "LPS", "LAS", "RPS")


@dataclass
class CasePlan:
    """What to generate for one slot of the cohort and where to write it."""

    case_id: str
    layout: str
    index: int                     # native number (volume-N, liver_N, liver-origNNN, 3Dircadb1.N)
    seed: int
    scan_index: int = 0
    hard: str | None = None
    duplicate_of: str | None = None
    patient_id: str | None = None
    study_date: str | None = None

    def key(self, size_scale: float, sirt_mask_format: str) -> dict:
        """Everything that determines the written files (a rerun reuses a case when this matches)."""
        return {"case_id": self.case_id, "layout": self.layout, "seed": self.seed, "scan_index": self.scan_index,
                "hard": self.hard, "duplicate_of": self.duplicate_of, "size_scale": size_scale,
                "sirt_mask_format": sirt_mask_format if self.layout == "sirt" else None}


def case_seed(cohort_seed: int, slot: int) -> int:
    """Seed of slot ``slot`` in a cohort (distinct, deterministic, < 2**31)."""
    return int(np.random.SeedSequence([cohort_seed, slot]).generate_state(1)[0] & 0x7FFFFFFF)


def plan_cohort(n_cases: int, seed: int, layouts: Sequence[str], hard_cases: Sequence[str],
                plant_duplicate: bool) -> list[CasePlan]:
    """Distribute ``n_cases`` over ``layouts`` (round robin) and plant the special cases."""
    layouts = [str(lay).lower() for lay in layouts]
    bad = [lay for lay in layouts if lay not in LAYOUTS]
    if bad:
        raise ValueError(f"unknown layout(s) {bad}; choose from {list(LAYOUTS)}")
    bad = [h for h in hard_cases if h not in HARD_CASES]
    if bad:
        raise ValueError(f"unknown hard case(s) {bad}; choose from {list(HARD_CASES)}")
    if n_cases < 1 or not layouts:
        raise ValueError("need at least one case and one layout")
    slots = [layouts[i % len(layouts)] for i in range(n_cases)]
    counters = {lay: 0 for lay in LAYOUTS}
    plans: list[CasePlan] = []
    for i, lay in enumerate(slots):
        counters[lay] += 1
        n = counters[lay]
        index = {"lits": n - 1, "msd": n - 1, "sliver07": n, "ircadb": n, "sirt": n}[lay]
        plans.append(CasePlan(case_id=f"{lay}_{index:03d}", layout=lay, index=index, seed=case_seed(seed, i)))
    taken: set[int] = set()
    # Duplicate: a LiTS scan found again in MSD (other data type and header), else any two layouts.
    if plant_duplicate and len(set(slots)) >= 2:
        src_l, dst_l = ("lits", "msd") if {"lits", "msd"} <= set(slots) else tuple(dict.fromkeys(slots))[:2]
        src = next(i for i, p in enumerate(plans) if p.layout == src_l)
        dst = [i for i, p in enumerate(plans) if p.layout == dst_l and i != src]
        if dst:
            d = dst[-1]
            plans[d].seed, plans[d].duplicate_of = plans[src].seed, plans[src].case_id
            taken |= {src, d}
    # One SIRT patient scanned twice: the last SIRT slot is a second scan of the first SIRT patient.
    sirt = [i for i, p in enumerate(plans) if p.layout == "sirt"]
    for k, i in enumerate(sirt):
        plans[i].patient_id, plans[i].study_date = f"LVS-P{k + 1:03d}", f"2019{(k % 12) + 1:02d}{(k % 27) + 1:02d}"
    if len(sirt) >= 2:
        first, last = sirt[0], sirt[-1]
        plans[last].seed, plans[last].scan_index = plans[first].seed, 1
        plans[last].patient_id, plans[last].study_date = plans[first].patient_id, "20190412"
        plans[first].study_date = "20190105"
        taken |= {first, last}
    # Hard cases: preferably SIRT data (where the paper met them), then the other sources, from the end.
    free = [i for i in sirt if i not in taken] + [i for i in reversed(range(len(plans)))
                                                  if i not in taken and plans[i].layout != "sirt"]
    for hard, i in zip(hard_cases, free):
        plans[i].hard = hard
    return plans


def _write_case(plan: CasePlan, root: Path, size_scale: float, sirt_mask_format: str, by_id: dict) -> dict:
    rng = np.random.default_rng(plan.seed)
    if plan.duplicate_of:
        src = by_id[plan.duplicate_of]
        case = generate_phantom(src.seed, hard=src.hard, size_scale=size_scale, scan_index=src.scan_index)
    else:
        case = generate_phantom(plan.seed, hard=plan.hard, size_scale=size_scale, scan_index=plan.scan_index)
    orient = str(rng.choice(NIFTI_ORIENTATIONS))
    if plan.layout == "lits":
        info = write_lits(case, root, plan.index, orientation="RAS" if plan.duplicate_of is None else orient)
    elif plan.layout == "msd":
        if plan.duplicate_of:
            # Same voxels, other header: float32 and another axis order than the LiTS original.
            info = write_msd(case, root, plan.index, orientation="LPS", image_dtype=np.float32)
        else:
            info = write_msd(case, root, plan.index, orientation=orient)
    elif plan.layout == "sliver07":
        info = write_sliver(case, root, plan.index)
    elif plan.layout == "ircadb":
        info = write_ircadb(case, root, plan.index, mask_value=255 if plan.index % 2 else 1)
    else:
        info = write_sirt(case, root, plan.patient_id, plan.study_date, sirt_mask_format,
                          series_number=2 + plan.scan_index)
    rec = relative_files(info, root)
    meta = case.meta
    rec.update(plan.key(size_scale, sirt_mask_format))
    rec.update({
        "liver_volume_ml": meta["liver_volume_ml"], "tumour_volume_ml": meta["tumour_volume_ml"],
        "contrast": meta["contrast"], "noise_sd": meta["noise_sd"], "spacing": meta["spacing"],
        "slice_thickness": meta["slice_thickness"], "shape_zyx": meta["shape_zyx"],
        "n_lesions": len(meta["lesions"]), "abnormal": meta["abnormal"], "liver_hu_design": meta["liver_hu_design"],
        "patient_id": rec.get("patient_id") or plan.patient_id or plan.case_id,
    })
    return rec


def _reusable(rec: dict | None, key: dict, root: Path) -> bool:
    if rec is None or any(rec.get(k) != v for k, v in key.items()):
        return False
    return all((root / p).exists() for p in rec["files"].values())


def write_cohort(out_dir: str | Path, n_cases: int = 20, seed: int = 0,
                 layouts: Sequence[str] = LAYOUTS,
                 hard_cases: Sequence[str] = HARD_CASES,
                 plant_duplicate: bool = True, size_scale: float = 1.0, sirt_mask_format: str = "nifti",
                 progress: Callable[[CasePlan], None] | None = None) -> dict:
    """Write ``n_cases`` phantoms under ``out_dir`` in the datasets' native layouts plus
    ``manifest.json``; returns the manifest. Cases already written by an identical earlier call are
    kept (a rerun only writes what is missing). ``progress`` is called after each case.
    """
    if sirt_mask_format not in ("nifti", "rtstruct", "both"):
        raise ValueError(f"sirt_mask_format must be 'nifti', 'rtstruct' or 'both', got {sirt_mask_format!r}")
    if size_scale <= 0:
        raise ValueError(f"size_scale must be > 0, got {size_scale}")
    plans = plan_cohort(n_cases, seed, layouts, hard_cases, plant_duplicate)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    old = {}
    if (root / MANIFEST).exists():
        try:
            old = {c["case_id"]: c for c in load_json(root / MANIFEST).get("cases", [])}
        except (ValueError, KeyError, TypeError, AttributeError):
            old = {}
    by_id = {p.case_id: p for p in plans}
    records, n_new = [], 0

    def manifest(complete: bool, recs: list[dict]) -> dict:
        return {
            "generator": "livseg_pipeline.phantom", "version": MANIFEST_VERSION, "seed": seed,
            "n_cases": n_cases, "size_scale": size_scale, "layouts": list(dict.fromkeys(p.layout for p in plans)),
            "sirt_mask_format": sirt_mask_format, "complete": complete, "cases": recs,
            "duplicates": [[r["duplicate_of"], r["case_id"]] for r in recs if r.get("duplicate_of")],
            "patients": _patients(recs), "n_written": n_new,
        }

    for i, p in enumerate(plans):
        rec = old.get(p.case_id)
        if _reusable(rec, p.key(size_scale, sirt_mask_format), root):
            records.append(rec)
        else:
            records.append(_write_case(p, root, size_scale, sirt_mask_format, by_id))
            n_new += 1
            # Keep the manifest current, so an interrupted run loses no finished case.
            pending = [old[q.case_id] for q in plans[i + 1:] if q.case_id in old]
            save_json(manifest(False, records + pending), root / MANIFEST)
        if progress is not None:
            progress(p)
    msd = [p.index for p in plans if p.layout == "msd"]
    if msd:
        write_msd_dataset_json(root, msd)
    out = manifest(True, records)
    save_json(out, root / MANIFEST)
    return out


def _patients(records: list[dict]) -> dict[str, list[str]]:
    """Patient id -> case ids, for patients with several scans."""
    out: dict[str, list[str]] = {}
    for r in records:
        out.setdefault(r["patient_id"], []).append(r["case_id"])
    return {k: v for k, v in out.items() if len(v) > 1}
