"""Console entry point ``lvs_make_phantoms``: write a synthetic CT cohort in native dataset layouts."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from livseg_pipeline.phantom.generator import HARD_CASES
from livseg_pipeline.phantom.layouts import LAYOUT_ROOTS, LAYOUTS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lvs_make_phantoms",
        description="Generate synthetic abdominal CT phantoms (HU, whole-liver labels) in the native layouts "
                    "of LiTS17, MSD Task03_Liver, SLIVER07, 3D-IRCADb-01 and a SIRT hospital export, "
                    "with planted hard cases, one cross-format duplicate and a manifest.json.",
        epilog="Example: lvs_make_phantoms ./phantoms -n 20 --seed 0")
    p.add_argument("out", type=Path, help="output folder (created; cases already there are kept)")
    p.add_argument("-n", "--n-cases", type=int, default=20, help="number of cases (default 20)")
    p.add_argument("--seed", type=int, default=0, help="cohort seed (default 0)")
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS, metavar="LAYOUT",
                   help=f"layouts to write, cases are spread over them (default: {' '.join(LAYOUTS)})")
    p.add_argument("--hard", nargs="*", default=list(HARD_CASES), choices=HARD_CASES, metavar="HARD",
                   help=f"hard cases to plant (default: {' '.join(HARD_CASES)}; none: --hard)")
    p.add_argument("--no-duplicate", action="store_true", help="do not plant the cross-format duplicate")
    p.add_argument("--size-scale", type=float, default=1.0,
                   help="grid scale: 0.5 halves the voxels per axis (same anatomy in mm); default 1")
    p.add_argument("--sirt-mask-format", choices=("nifti", "rtstruct", "both"), default="nifti",
                   help="how SIRT liver masks are stored (default nifti)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n_cases < 1:
        print("lvs_make_phantoms: error: -n must be >= 1", file=sys.stderr)
        return 2
    if not 0.05 <= args.size_scale <= 4:
        print("lvs_make_phantoms: error: --size-scale must be within [0.05, 4]", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from livseg_pipeline.phantom.cohort import write_cohort

    t0 = time.time()
    with tqdm(total=args.n_cases, desc="phantoms", unit="case") as bar:
        def progress(plan) -> None:
            bar.set_postfix_str(plan.case_id)
            bar.update(1)
        try:
            manifest = write_cohort(args.out, n_cases=args.n_cases, seed=args.seed, layouts=args.layouts,
                                    hard_cases=args.hard, plant_duplicate=not args.no_duplicate,
                                    size_scale=args.size_scale, sirt_mask_format=args.sirt_mask_format,
                                    progress=progress)
        except (ValueError, OSError) as e:
            print(f"lvs_make_phantoms: error: {e}", file=sys.stderr)
            return 1
    cases = manifest["cases"]
    per_layout = Counter(c["layout"] for c in cases)
    print(f"\n{len(cases)} cases in {args.out} ({manifest['n_written']} written, "
          f"{len(cases) - manifest['n_written']} kept) in {time.time() - t0:.1f} s")
    for lay, n in per_layout.items():
        print(f"  {LAYOUT_ROOTS[lay]:<14} {n:3d} cases")
    vols = [c["liver_volume_ml"] for c in cases]
    print(f"  liver volume   {min(vols):.0f}-{max(vols):.0f} mL; contrast: "
          f"{sum(c['contrast'] == 'portal' for c in cases)} portal-venous, "
          f"{sum(c['contrast'] == 'none' for c in cases)} non-contrast")
    for c in cases:
        if c.get("hard"):
            print(f"  hard case      {c['case_id']}: {c['hard']}")
    for a, b in manifest["duplicates"]:
        print(f"  duplicate      {b} is {a} in another format")
    for pid, ids in manifest["patients"].items():
        print(f"  same patient   {pid}: {', '.join(ids)}")
    print(f"  manifest       {Path(args.out) / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
