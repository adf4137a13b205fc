"""lvs_plan_preprocess: plan (preset + dataset fingerprint + this machine) and preprocess a dataset.

    lvs_plan_preprocess -d 3 [-np 2] [--preset paper|cpu_demo|FILE.json] [--plan-only] [--replan] [--overwrite]

Writes ``$LVS_PREPROCESSED/DatasetNNN_Name/<plans_name>/plans.json`` and, per case, ``CASE.npz`` +
``CASE.json`` beside it. The raw dataset's ``splits_final.json``, ``dataset.json`` and
``duplicates.json`` are copied into ``$LVS_PREPROCESSED/DatasetNNN_Name/`` (shared by all presets;
lvs_train reads the split there first, as nnU-Net does).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

from livseg_pipeline.experiment_planning.planner import detect_hardware, plan_and_save, preprocessing_processes
from livseg_pipeline.experiment_planning.plans import PlansError, preset_names
from livseg_pipeline.paths import preprocessed_root, raw_root, resolve_dataset
from livseg_pipeline.utils.files import atomic_path

#: small raw-dataset files the later stages read; copied beside plans.json
COPIED_FILES = ("splits_final.json", "dataset.json", "duplicates.json")


def copy_dataset_files(raw_dir: Path, target_dir: Path) -> list[str]:
    """Copy :data:`COPIED_FILES` present in ``raw_dir`` into ``target_dir`` (the preprocessed dataset
    folder, where lvs_train looks first, as in nnU-Net), so that the preprocessed tree can be moved to
    a training machine without the raw data. A copy is refreshed when the raw file is newer; a copy
    edited after the raw file is kept (and said so). Returns the lines to print."""
    lines = []
    for name in COPIED_FILES:
        src, dst = raw_dir / name, target_dir / name
        if not src.is_file():
            if name == "splits_final.json" and not dst.is_file():
                lines.append(f"no {src}: lvs_train cannot pick folds until lvs_convert has written it")
            continue
        if dst.is_file():
            if filecmp.cmp(src, dst, shallow=False):
                continue
            if dst.stat().st_mtime_ns > src.stat().st_mtime_ns:
                lines.append(f"kept {dst}: it was edited after {src} (delete it to copy the raw one again)")
                continue
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        lines.append(f"copied {src} -> {dst}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lvs_plan_preprocess",
        description="Plan (preset + dataset fingerprint + this machine's memory and cores) and run the paper's "
                    "preprocessing (reorient to LPS, crop to the abdomen, resample, median filter, HU mapping).")
    p.add_argument("-d", "--dataset", required=True, help="dataset id (3, 003) or name (Dataset003_Liver, Liver)")
    p.add_argument("-np", "--num-processes", type=int, default=0,
                   help="worker processes (default: the CPU cores, bounded by available memory)")
    p.add_argument("--preset", default="paper",
                   help=f"plans preset ({', '.join(preset_names())}) or a plans JSON file (default: paper)")
    p.add_argument("--plan-only", action="store_true", help="write plans.json only, preprocess nothing")
    p.add_argument("--replan", action="store_true",
                   help="plan again from the preset even if plans.json exists (it is kept by default, so "
                        "hand edits survive)")
    p.add_argument("--overwrite", action="store_true", help="preprocess again cases that are up to date")
    p.add_argument("--cases", nargs="+", help="only these case ids")
    p.add_argument("--no-preview", action="store_true",
                   help="skip preprocessing_preview.png (axial + coronal slice per case, liver outlined)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        name = resolve_dataset(args.dataset, raw_root())
    except (FileNotFoundError, ValueError) as e:
        print(f"lvs_plan_preprocess: {e}", file=sys.stderr)
        return 2
    raw_dir = raw_root() / name
    pre_dir = preprocessed_root() / name
    try:
        hw = detect_hardware()
        fp_np = args.num_processes if args.num_processes > 0 else hw.cpu_cores
        plans, path, _ = plan_and_save(raw_dir, pre_dir, args.preset, fp_np, args.replan, hardware=hw)
    except (PlansError, FileNotFoundError, ValueError) as e:
        print(f"lvs_plan_preprocess: {e}", file=sys.stderr)
        return 2
    plans_dir = path.parent
    for line in copy_dataset_files(raw_dir, pre_dir):
        print(f"[plan] {line}")
    if args.plan_only:
        print(f"plans written: {path}\n  " + "\n  ".join(plans.planner_notes))
        return 0

    from livseg_pipeline.experiment_planning.planner import load_or_extract_fingerprint
    from livseg_pipeline.preprocessing.dataset import preprocess_dataset

    n_proc, why = preprocessing_processes(load_or_extract_fingerprint(raw_dir, fp_np), args.num_processes, hw)
    print(f"[preprocess] {why}; output {plans_dir}", flush=True)
    try:
        summary = preprocess_dataset(raw_dir, plans_dir, plans, n_proc, overwrite=args.overwrite, cases=args.cases)
    except FileNotFoundError as e:
        print(f"lvs_plan_preprocess: {e}", file=sys.stderr)
        return 2
    if summary["n_done"] and not args.no_preview:
        from livseg_pipeline.preprocessing.preview import write_preview

        ok = sorted(c for c, r in summary["cases"].items() if r["status"] != "failed")
        png = write_preview(plans_dir, ok)
        if png:
            print(f"  preview: {png}")
    return 1 if summary["n_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
