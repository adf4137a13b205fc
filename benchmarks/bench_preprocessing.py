"""Preprocessing time and peak memory per case on the real 3D-IRCADb cases, by step.

    python benchmarks/bench_preprocessing.py [--shared ../shared] [--preset paper] [--repeats 1] [--write-docs]

The cases are first converted to NIfTI (imagesTr layout, as lvs_convert writes them; not timed), then
each case runs in a fresh process, as a preprocessing worker does: read the NIfTI CT and label,
``preprocess_case`` (reorient, crop, resample, median, normalize, body box: its own step timings),
save ``CASE.npz`` + ``CASE.json``; and, for inference, ``restore_to_original`` of the label.
Peak RSS is the process's high-water mark (``ru_maxrss``), and the increase over the idle process
after imports. ``--write-docs`` replaces the "Preprocessing" section of documentation/benchmarks.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = ("read", "reorient", "crop", "resample", "median", "normalize", "body_box", "save")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _one_case(args: tuple[str, str, str, str, int], queue) -> None:
    image_path, label_path, preset, out_dir, threads = args
    import numpy as np
    import SimpleITK as sitk

    from livseg_pipeline.experiment_planning.plans import load_preset
    from livseg_pipeline.io.image_io import read_image
    from livseg_pipeline.preprocessing.preprocessor import (
        preprocess_case,
        restore_to_original,
        save_preprocessed_case,
    )

    if threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    plans = load_preset(preset)
    idle = _rss_mb()
    t0 = time.perf_counter()
    image, label = read_image(image_path), read_image(label_path)
    t_read = time.perf_counter() - t0
    arrays, props = preprocess_case(image, label, plans)
    t1 = time.perf_counter()
    case = Path(label_path).name.split(".")[0]
    save_preprocessed_case(out_dir, case, arrays, props)
    t_save = time.perf_counter() - t1
    rss_pre = _rss_mb()
    t2 = time.perf_counter()
    back = restore_to_original(arrays["label"].astype(np.float32), props)
    t_restore = time.perf_counter() - t2
    a, b = back >= 0.5, label.array > 0
    queue.put({
        "case": case, "shape": list(image.array.shape), "spacing": [round(s, 3) for s in image.spacing],
        "pre_shape": props["preprocessed"]["shape_zyx"], "steps": {"read": t_read, **props["timings_s"],
                                                                   "save": t_save},
        "restore": t_restore, "rss_idle_mb": idle, "rss_peak_mb": rss_pre, "rss_peak_restore_mb": _rss_mb(),
        "volume_change_pct": props["liver_volume_change_pct"],
        "dsc_roundtrip": 2 * float((a & b).sum()) / float(a.sum() + b.sum()),
        "npz_mb": (Path(out_dir) / f"{case}.npz").stat().st_size / 1e6,
    })


def convert_cases(ircad: Path, out: Path) -> list[tuple[Path, Path]]:
    from livseg_pipeline.io.archives import read_dicom_zip
    from livseg_pipeline.io.image_io import write_image

    pairs = []
    for case_dir in sorted(p for p in ircad.iterdir() if p.is_dir()):
        name = case_dir.name.replace(".", "_")
        img_p, lab_p = out / f"{name}_0000.nii.gz", out / f"{name}.nii.gz"
        if not img_p.exists():
            write_image(read_dicom_zip(case_dir / "PATIENT_DICOM.zip"), img_p)
            lab = read_dicom_zip(case_dir / "MASKS_DICOM.zip", "liver")
            lab.array = (lab.array > 0).astype("uint8")
            write_image(lab, lab_p)
        pairs.append((img_p, lab_p))
    return pairs


def run(shared: Path, preset: str, repeats: int, threads: int) -> list[dict]:
    ircad = shared / "data" / "3Dircadb1"
    if not ircad.is_dir():
        sys.exit(f"bench_preprocessing: no IRCAD data at {ircad}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_pre_") as tmp:
        pairs = convert_cases(ircad, Path(tmp))
        ctx = multiprocessing.get_context("spawn")
        for _ in range(repeats):
            for img_p, lab_p in pairs:
                q = ctx.Queue()
                p = ctx.Process(target=_one_case, args=((str(img_p), str(lab_p), preset, tmp, threads), q))
                p.start()
                results.append(q.get())
                p.join()
    return results


def table(results: list[dict]) -> str:
    head = ("| case | grid (z, y, x) -> preprocessed | " + " | ".join(STEPS)
            + " | **total** | restore | peak RSS (MB) | ΔRSS (MB) | volume Δ | DSC back | npz (MB) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        steps = r["steps"]
        total = sum(steps.get(s, 0.0) for s in STEPS)
        lines.append(
            f"| {r['case']} | {'×'.join(map(str, r['shape']))} -> {'×'.join(map(str, r['pre_shape']))} | "
            + " | ".join(f"{steps.get(s, 0.0):.2f}" for s in STEPS)
            + f" | **{total:.2f}** | {r['restore']:.2f} | {r['rss_peak_mb']:.0f} | "
            f"{r['rss_peak_mb'] - r['rss_idle_mb']:.0f} | {r['volume_change_pct']:+.2f} % | "
            f"{r['dsc_roundtrip']:.4f} | {r['npz_mb']:.1f} |")
    return "\n".join(lines)


def write_docs(text: str, path: Path = REPO / "documentation" / "benchmarks.md") -> None:
    """Replace (or append) the '## Preprocessing' section, leaving the other sections alone."""
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = old.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == "## Preprocessing"), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "\n".join(lines[:start] + text.rstrip("\n").splitlines() + ([""] + lines[end:] if end < len(lines)
                                                                          else [])) + "\n"
    from livseg_pipeline.utils.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(new, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    p.add_argument("--preset", default="paper")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="SimpleITK threads (0: its default, all cores)")
    p.add_argument("--write-docs", action="store_true")
    p.add_argument("--note", default="", help="machine conditions, written with the numbers")
    args = p.parse_args(argv)
    results = run(args.shared, args.preset, args.repeats, args.threads)
    tab = table(results)
    load = os.getloadavg()
    cond = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) at the end of the run")
    print(tab)
    print(cond)
    if args.write_docs:
        write_docs(SECTION.format(preset=args.preset, date=time.strftime("%Y-%m-%d"), cond=cond,
                                  note=args.note, table=tab))
    return 0


SECTION = """## Preprocessing

`python benchmarks/bench_preprocessing.py --preset {preset}` (needs `../shared`): each real
3D-IRCADb case, already converted to NIfTI, in a fresh process like a preprocessing worker. Seconds
per step: read (NIfTI CT + label), the steps of `preprocess_case` (reorient, crop incl. body box,
resample of CT and label, median 3×3×3, HU mapping, body box on the result), save
(`CASE.npz` compressed + `CASE.json`); "restore" is `restore_to_original` of the label (what
inference does once per case). Peak RSS is the worker's high-water mark, ΔRSS the part above the
idle process after imports. "DSC back" = label preprocessed then restored vs the original mask.

Measured {date}: {cond}. {note}

{table}
"""


if __name__ == "__main__":
    sys.exit(main())
