"""lvs_predict: segment the liver in CT images with a trained model (one fold or the fold ensemble).

Examples::

    lvs_predict -i ct.nii.gz -o out/ -d 3                       # ensemble of all folds, threshold 0.5
    lvs_predict -i dicom_folder/ -o out/ --model $LVS_RESULTS/Dataset003_Liver/paper -f 0 \\
        --threshold auto --output-type nifti rtstruct --preview --report --target-dose 120 --lung-shunt 0.05
    lvs_predict -i cases/ -o out/ -d 3 --part-id 1 --num-parts 4   # one of four parallel workers
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from livseg_pipeline.inference.cases import CaseInput, find_cases, partition
from livseg_pipeline.inference.dense import available_threads
from livseg_pipeline.inference.predictor import (
    STRATEGIES,
    InputError,
    ModelError,
    Prediction,
    Predictor,
    find_model_dir,
    load_inference_config,
)
from livseg_pipeline.io.image_io import IMAGE_SUFFIXES, ImageReadError, has_image_suffix, read_image, write_image
from livseg_pipeline.utils.files import save_npz_atomic
from livseg_pipeline.utils.memory import keep_freed_memory

OUTPUT_FORMATS = ("nii.gz", "nii", "mha", "nrrd", "same")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lvs_predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", "--input", required=True, help="image file, DICOM series folder, or folder of images/series")
    p.add_argument("-o", "--output", required=True, help="output folder (or a file name for a single input image)")
    p.add_argument("-d", "--dataset", help="dataset id or name under $LVS_RESULTS")
    p.add_argument("-p", "--plans", help="plans name (the model's folder under the dataset)")
    p.add_argument("--model", help="model folder (the plans folder holding fold_K/); overrides -d/-p")
    p.add_argument("-f", "--folds", nargs="+", default=["all"], help="folds to ensemble (default: all found)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    p.add_argument("--threshold", default=None,
                   help="probability threshold, or 'auto' for the one lvs_find_best_threshold stored "
                        "(default: plans, 0.5)")
    p.add_argument("--no-postprocessing", action="store_true", help="threshold only (no erosion/largest component)")
    p.add_argument("--save-probabilities", action="store_true", help="also write CASE_prob.npz (float16, input grid)")
    p.add_argument("--output-format", choices=OUTPUT_FORMATS, default="nii.gz",
                   help="mask format; 'same' follows the input file (NIfTI for DICOM input)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all this process may use)")
    p.add_argument("--part-id", type=int, default=0)
    p.add_argument("--num-parts", type=int, default=1)
    p.add_argument("--overwrite", action="store_true", help="redo cases whose mask exists")
    p.add_argument("--full-dense", action="store_true",
                   help="evaluate every segment (reference for the skipping strategies; slow)")
    p.add_argument("--strategy", choices=STRATEGIES, default=None,
                   help="grow (default: only segments connected to the liver), body (every body segment), full")
    p.add_argument("--segment-size", type=int, default=None,
                   help="skipping cell edge (default 15; with --engine segments: the segment, a multiple of 15, "
                        "default plans)")
    p.add_argument("--engine", choices=("boxes", "segments"), default="boxes",
                   help="boxes (default: coarse pathways once, cells merged into large boxes) or segments "
                        "(the reference: one segment at a time; same probabilities, slower)")
    p.add_argument("--batch-size", type=int, default=None)
    g = p.add_argument_group("clinical outputs (livseg_pipeline.clinical)")
    g.add_argument("--output-type", nargs="+", default=["nifti"], choices=("nifti", "rtstruct", "dicomseg"),
                   help="nifti (mask file), rtstruct, dicomseg (DICOM inputs only); several allowed")
    g.add_argument("--preview", action="store_true", help="PNG overlay of the mask on the CT")
    g.add_argument("--report", action="store_true", help="liver volume/mass report with QC flags (JSON + text)")
    g.add_argument("--target-dose", type=float, default=None, help="MIRD target liver dose in Gy (report)")
    g.add_argument("--lung-shunt", type=float, default=None, help="lung shunt fraction, e.g. 0.05 (report)")
    g.add_argument("--height-cm", type=float, default=None, help="patient height for the BSA method (report)")
    g.add_argument("--weight-kg", type=float, default=None, help="patient weight for the BSA method (report)")
    return p


def _mask_path(case: CaseInput, out: Path, single_file_out: bool, fmt: str) -> Path:
    if single_file_out:
        return out
    if fmt == "same":
        fmt = "nii.gz"
        if not case.is_dicom:
            low = case.path.name.lower()
            fmt = next((s[1:] for s in IMAGE_SUFFIXES if low.endswith(s)), "nii.gz")
            fmt = "mha" if fmt in ("mhd", "nhdr") else fmt  # one-file formats only
    return out / f"{case.case_id}.{fmt}"


def _clinical_wanted(args) -> bool:
    return bool(set(args.output_type) - {"nifti"} or args.preview or args.report)


def _report_options(args):
    if not args.report:
        return None
    from livseg_pipeline.clinical.report import ReportOptions

    return ReportOptions(target_dose_gy=args.target_dose, lung_shunt_fraction=args.lung_shunt,
                         height_m=args.height_cm / 100.0 if args.height_cm else None, weight_kg=args.weight_kg)


def _deliver(args, case: CaseInput, pred: Prediction, out_dir: Path) -> dict | None:
    if not _clinical_wanted(args):
        return None
    try:
        from livseg_pipeline.clinical.deliver import deliver_outputs
    except ImportError as e:  # the clinical stage is optional
        raise RuntimeError(f"clinical outputs are not available in this installation ({e})") from None
    return deliver_outputs(pred.image, pred.mask, out_dir, case.case_id, output_types=args.output_type,
                           dicom_folder=case.path if case.is_dicom else None, series_uid=case.series_uid,
                           probabilities=pred.probabilities, member_probabilities=pred.member_probabilities,
                           removed_components_ml=pred.removed_components_ml, preview=args.preview,
                           report_options=_report_options(args), report=args.report)


def predict_case(predictor: Predictor, case: CaseInput, mask_path: Path, args) -> dict:
    """Read, predict and write one case; the mask is written last so its presence means done."""
    t0 = time.perf_counter()
    image = read_image(case.path, case.series_uid)
    t_read = time.perf_counter() - t0
    pred = predictor.predict_image(image)
    t = time.perf_counter()
    out_dir = mask_path.parent
    if args.save_probabilities:
        save_npz_atomic(out_dir / f"{case.case_id}_prob.npz", probabilities=pred.probabilities.astype(np.float16))
    delivered = _deliver(args, case, pred, out_dir)
    write_image(pred.mask, mask_path)
    timings = {"read": round(t_read, 3), **pred.timings_s, "write": round(time.perf_counter() - t, 3)}
    timings["total"] = round(time.perf_counter() - t0, 3)
    return {"liver_ml": round(pred.liver_volume_ml, 1), "removed_ml": pred.removed_components_ml,
            "timings_s": timings, "inference": pred.inference, "delivered": delivered}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    try:
        threshold = None if args.threshold is None else ("auto" if args.threshold == "auto" else float(args.threshold))
    except ValueError:
        print(f"lvs_predict: --threshold must be a number in (0, 1) or 'auto', got {args.threshold!r}", file=sys.stderr)
        return 2
    if _clinical_wanted(args):
        try:
            import livseg_pipeline.clinical.deliver  # noqa: F401
        except ImportError as e:
            print(f"lvs_predict: --output-type rtstruct/dicomseg, --preview and --report need the clinical stage, "
                  f"which is not available here ({e})", file=sys.stderr)
            return 2
    out = Path(args.output)
    try:
        cases, ignored = find_cases(args.input)
        mine = partition(cases, args.part_id, args.num_parts)
    except (FileNotFoundError, ValueError) as e:
        print(f"lvs_predict: {e}", file=sys.stderr)
        return 2
    if not cases:
        print(f"lvs_predict: {args.input}: no images or DICOM series found", file=sys.stderr)
        return 2
    single_file_out = Path(args.input).is_file() and has_image_suffix(out.name)
    todo, skipped = [], []
    for case in mine:
        path = _mask_path(case, out, single_file_out, args.output_format)
        (skipped if path.exists() and not args.overwrite else todo).append((case, path))
    print(f"lvs_predict: {len(cases)} case(s) found, {len(mine)} in part {args.part_id}/{args.num_parts}, "
          f"{len(skipped)} already done (use --overwrite to redo), {len(ignored)} non-image file(s) ignored",
          file=sys.stderr, flush=True)
    if not todo:
        return 0

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"lvs_predict: --device {args.device}: no CUDA device available here (use --device cpu)",
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads or available_threads())
    # layer outputs of hundreds of MB: reuse freed memory instead of page-faulting fresh mappings
    keep_freed_memory()
    strategy = "full" if args.full_dense else (args.strategy or "grow")
    try:
        model_dir = find_model_dir(args.model, args.dataset, args.plans)
        folds = args.folds if args.folds != ["all"] else "all"
        predictor = Predictor.from_model_dir(
            model_dir, folds, args.checkpoint, args.device, threshold,
            postprocessing=False if args.no_postprocessing else None, strategy=strategy,
            segment_size=args.segment_size, batch_size=args.batch_size,
            keep_members=_clinical_wanted(args), engine=args.engine)
    except (ModelError, ValueError) as e:
        print(f"lvs_predict: {e}", file=sys.stderr)
        return 2
    if threshold == "auto" and load_inference_config(model_dir) is None:
        print(f"lvs_predict: --threshold auto: {model_dir} has no inference_config.json (run "
              f"lvs_find_best_threshold); using the plans' threshold {predictor.threshold:g}", file=sys.stderr)
    if predictor.threshold != 0.5 or threshold == "auto":
        print(f"lvs_predict: threshold {predictor.threshold:g}, post-processing "
              f"{'on (' + predictor.postprocessing_mode + ')' if predictor.postprocessing else 'off'}",
              file=sys.stderr)
    if not single_file_out:
        out.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict] = {}
    failed: dict[str, str] = {}
    t_all = time.perf_counter()
    bar = tqdm(todo, desc="lvs_predict", unit="case", file=sys.stderr, dynamic_ncols=True)
    for case, path in bar:
        bar.set_postfix_str(case.case_id)
        try:
            r = predict_case(predictor, case, path, args)
        except (ImageReadError, InputError, ValueError, RuntimeError, OSError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if case.describe() not in msg and str(case.path) not in msg:
                msg = f"{case.describe()}: {msg}"
            failed[case.case_id] = msg
            tqdm.write(f"ERROR {case.case_id}: {msg}", file=sys.stderr)
            continue
        results[case.case_id] = r
        removed = r["removed_ml"]
        extra = f", post-processing removed {len(removed)} part(s), {sum(removed):.1f} mL" if removed else ""
        inf = r["inference"]
        tqdm.write(f"{case.case_id}: liver {r['liver_ml']:.0f} mL in {r['timings_s']['total']:.1f} s "
                   f"({inf['segments_evaluated']}/{inf['segments_candidates']} segments){extra} -> {path}",
                   file=sys.stderr)
    bar.close()
    _summary(results, failed, skipped, time.perf_counter() - t_all)
    return 1 if failed else 0


def _summary(results: dict, failed: dict, skipped: list, seconds: float) -> None:
    lines = [f"lvs_predict: {len(results)} done, {len(failed)} failed, {len(skipped)} skipped in {seconds:.1f} s"]
    if results:
        stages = ["read", "preprocess", "network", "restore", "postprocess", "write", "total"]
        lines.append("  case".ljust(28) + "".join(s.rjust(12) for s in stages))
        for cid, r in results.items():
            lines.append(f"  {cid[:26]:<26}" + "".join(f"{r['timings_s'].get(s, 0.0):12.1f}" for s in stages))
    for cid, msg in failed.items():
        lines.append(f"  FAILED {cid}: {msg}")
    print("\n".join(lines), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
