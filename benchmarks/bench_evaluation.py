"""Time the evaluation metrics on a real 512x512 CT-sized pair.

The pair: an IRCAD liver mask (MASKS_DICOM.zip, liver folder; 3Dircadb1.1: 129 x 512 x 512,
0.57 x 0.57 x 1.6 mm; 3Dircadb1.7: 151 x 512 x 512, 0.78 x 0.78 x 1.6 mm) against itself shifted by
2 voxels along each axis in turn. Reports the time
of ``compute_metrics`` (k-d tree, the default, and the EDT variant of ``surface_distances``) and of
a whole ``evaluate_sets`` run (reading both files, metrics, outputs).

    python benchmarks/bench_evaluation.py [--shared ../shared] [--cases 1 7] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from livseg_pipeline.evaluation.evaluate import evaluate_sets
from livseg_pipeline.evaluation.metrics import compute_metrics, surface_distances
from livseg_pipeline.io.image_io import read_image, write_image

REPO = Path(__file__).resolve().parents[1]


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _shift(mask: np.ndarray, axis: int, k: int) -> np.ndarray:
    out = np.zeros_like(mask)
    src = [slice(None)] * 3
    dst = [slice(None)] * 3
    src[axis], dst[axis] = slice(0, -k), slice(k, None)
    out[tuple(dst)] = mask[tuple(src)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--cases", nargs="+", default=["1", "7"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    for case in args.cases:
        zpath = args.shared / "data" / "3Dircadb1" / f"3Dircadb1.{case}" / "MASKS_DICOM.zip"
        if not zpath.is_file():
            print(f"{zpath}: not found (give --shared)", file=sys.stderr)
            return 2
        bench_case(zpath, f"3Dircadb1.{case}", args.repeats)
    return 0


def bench_case(zpath: Path, title: str, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with zipfile.ZipFile(zpath) as z:
            z.extractall(tmp, [n for n in z.namelist() if n.startswith("MASKS_DICOM/liver/")])
        ref = read_image(tmp / "MASKS_DICOM" / "liver")
        m = ref.array > 0
        sp = ref.spacing_zyx
        print(f"\n{title} liver: shape {m.shape}, spacing zyx {tuple(round(s, 3) for s in sp)} mm, "
              f"{m.sum()} voxels")
        print("| shift | DSC | HD (mm) | HD95 (mm) | MSD (mm) | compute_metrics (s, median) |")
        print("|---|---|---|---|---|---|")
        for axis, name in enumerate("zyx"):
            pred = _shift(m, axis, 2)
            t_kd, res = _timed(lambda p=pred: compute_metrics(m, p, sp), repeats)
            print(f"| 2 voxels along {name} | {res['dsc']:.4f} | {res['hd_mm']:.3f} | {res['hd95_mm']:.3f} | "
                  f"{res['msd_mm']:.3f} | {t_kd:.2f} |")
        pred = _shift(m, 0, 2)
        t_kd, _ = _timed(lambda: surface_distances(m, pred, sp, method="kdtree"), 1)
        t_edt, _ = _timed(lambda: surface_distances(m, pred, sp, method="edt"), 1)
        print(f"surface distances alone (z shift): k-d tree {t_kd:.2f} s, EDT variant {t_edt:.2f} s")
        write_image(ref.with_array(_shift(m, 0, 2).astype(np.uint8)), tmp / "pred.nii.gz")
        t_run, _ = _timed(lambda: evaluate_sets(tmp / "MASKS_DICOM" / "liver", tmp / "pred.nii.gz", tmp / "out",
                                                force=True, progress=False), 1)
        print(f"evaluate_sets (read DICOM mask + NIfTI, metrics, CSV/JSON/PNG): {t_run:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
