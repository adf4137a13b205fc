"""lvs_evaluate: segmentation metrics of the paper (DSC, RV, MSD, HD, HD95, volumes), per case and summarised.

    lvs_evaluate -r REF -p PRED [-o OUTDIR] [-np N]
    lvs_evaluate --compare cnn=DIR manual_e1=DIR adjusted_e1=DIR ... [--pairs A:B ...] [-o OUTDIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from livseg_pipeline.evaluation.cases import CaseMatchError
from livseg_pipeline.evaluation.compare import SUMMARY_KEYS, compare_sets
from livseg_pipeline.evaluation.evaluate import default_num_processes, evaluate_sets
from livseg_pipeline.evaluation.masks import MaskError
from livseg_pipeline.evaluation.summary import format_table
from livseg_pipeline.io.image_io import ImageReadError, strip_image_suffix

_SURFACE = {6: 1, 18: 2, 26: 3}


def _named_set(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, Path(path)


def _pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise argparse.ArgumentTypeError(f"expected A:B (two set names), got {text!r}")
    return a, b


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lvs_evaluate",
        description="Compare liver masks in 3D on their own grid: DSC, RV = V_pred/V_ref, MSD (mean of all "
                    "surface distances both ways), HD, HD95 (mm) and volumes (mL). Writes metrics.csv, "
                    "summary.json and box plots (the paper's Fig. 2). Definitions: documentation/evaluation.md.")
    p.add_argument("-r", "--reference", type=Path, help="reference mask file, DICOM series folder, or folder of masks")
    p.add_argument("-p", "--prediction", type=Path, help="predicted mask(s), matched to the references by case name")
    p.add_argument("--compare", nargs="+", type=_named_set, metavar="NAME=DIR",
                   help="inter-observer mode: compare every pair of these segmentation sets on their common cases")
    p.add_argument("--pairs", nargs="+", type=_pair, metavar="A:B",
                   help="with --compare: only these pairs (RV = V_A / V_B); default: every pair in the given order")
    p.add_argument("-o", "--output", type=Path,
                   help="output folder (default: PRED_evaluation beside PRED; ./lvs_compare with --compare)")
    p.add_argument("-np", "--num-processes", type=int, default=default_num_processes(),
                   help="cases evaluated in parallel (default: %(default)s)")
    p.add_argument("--label", type=int, help="foreground label in all masks (default: the single nonzero value)")
    p.add_argument("--ref-label", type=int, help="foreground label of the references (overrides --label)")
    p.add_argument("--pred-label", type=int, help="foreground label of the predictions (overrides --label)")
    p.add_argument("--surface", type=int, choices=sorted(_SURFACE), default=6,
                   help="surface voxels: foreground with a background neighbour among 6 (faces, default), 18 or 26")
    p.add_argument("--allow-missing", action="store_true",
                   help="evaluate the cases that have a prediction instead of stopping at a missing one")
    p.add_argument("--force", action="store_true", help="recompute cases already evaluated in OUTDIR")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG box plots")
    return p


def _default_output(pred: Path) -> Path:
    pred = pred.resolve()
    return pred.parent / f"{strip_image_suffix(pred.name)}_evaluation"


def _run_single(args: argparse.Namespace) -> int:
    out = args.output or _default_output(args.prediction)
    ref_label = args.ref_label if args.ref_label is not None else args.label
    pred_label = args.pred_label if args.pred_label is not None else args.label
    res = evaluate_sets(args.reference, args.prediction, out, args.num_processes, ref_label, pred_label,
                        _SURFACE[args.surface], args.allow_missing, args.force, plot=not args.no_plot)
    m = res.matching
    if m.missing:
        print(f"warning: {len(m.missing)} reference case(s) without prediction left out: "
              f"{', '.join(m.missing[:10])}{', ...' if len(m.missing) > 10 else ''}", file=sys.stderr)
    if m.extra:
        print(f"warning: {len(m.extra)} prediction(s) without reference ignored: "
              f"{', '.join(m.extra[:10])}{', ...' if len(m.extra) > 10 else ''}", file=sys.stderr)
    print(f"\n{len(res.rows)} case(s) evaluated ({res.n_cached} reused from an earlier run)")
    print(format_table(res.summary))
    print(f"\nwritten: {out / 'metrics.csv'}, {out / 'summary.json'}"
          + ("" if args.no_plot else f", {out / 'boxplots.png'}"))
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    sets = dict(args.compare)
    if len(sets) != len(args.compare):
        raise CaseMatchError("--compare: each set name must be given once")
    out = args.output or Path("lvs_compare")
    label = args.label
    res = compare_sets(sets, out, args.pairs, args.num_processes, label, _SURFACE[args.surface], args.force,
                       plot=not args.no_plot)
    print(f"\n{len(res.rows)} comparison(s) ({res.n_cached} reused from an earlier run)")
    head = f"{'pair':<36} {'n':>4} " + " ".join(f"{k:>9}" for k in SUMMARY_KEYS) + f" {'RV out':>9}"
    print(head + "\n" + "-" * len(head) + "   (medians)")
    for pair, s in res.summaries.items():
        med = " ".join(f"{s['metrics'][k]['median']:>9.3f}" for k in SUMMARY_KEYS)
        rv = s["rv_outside_0.9_1.1"]
        print(f"{pair:<36} {s['n_cases']:>4} {med} {rv['count']:>4}/{rv['n']:<4}")
    print(f"\nwritten: {out / 'pairwise_metrics.csv'}, {out / 'pairwise_summary.csv'}, "
          f"{out / 'pairwise_summary.json'}" + ("" if args.no_plot else f", {out / 'pairwise_boxplots.png'}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.compare:
        if args.reference or args.prediction:
            parser.error("use either -r/-p or --compare, not both")
        if args.ref_label is not None or args.pred_label is not None:
            parser.error("--compare takes --label (the same for every set)")
    else:
        if not (args.reference and args.prediction):
            parser.error("give -r REF and -p PRED, or --compare NAME=DIR NAME=DIR ...")
        if args.pairs:
            parser.error("--pairs goes with --compare")
    if args.num_processes < 1:
        parser.error("-np must be at least 1")
    try:
        return _run_compare(args) if args.compare else _run_single(args)
    except (CaseMatchError, MaskError, ImageReadError, OSError) as e:
        print(f"lvs_evaluate: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lvs_evaluate: interrupted; finished cases are kept and reused by a rerun", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
