"""Inference benchmark on the real 3D-IRCADb 1.1 CT: DICOM folder in -> NIfTI mask out, with the
paper's network (plans/paper.json), one model and the 5-fold ensemble; wall time by stage and peak RSS.

    python benchmarks/bench_inference.py                      # grow (new and old engine), 5 folds, body, full
    python benchmarks/bench_inference.py --runs grow:1 body:1  # a subset (strategy:folds[:engine])
    python benchmarks/bench_inference.py --runs grow:1 --model DIR   # a trained model (e.g. the GPU one)
    python benchmarks/bench_inference.py --count-only         # box / segment / FLOP counts only (no network)

Engines: ``boxes`` (default: coarse pathways once per volume, cells merged into large boxes) and
``segments`` (the previous one-segment-at-a-time runner; ``grow:1:segments`` times it as it was:
30^3 segments, batch 4).

Without ``--model`` the networks have random weights, so their probability maps are not liver-like
and would make the growth strategy visit everything or nothing. Timing the growth honestly then uses
a stand-in: every evaluated cell is computed by the real network (the cost is real), then its output
is replaced by the reference liver mask of the case, preprocessed and smoothed (Gaussian, sigma 1.5
voxels), before the faces decide where to grow, so exactly the cells a good trained model would need
are computed. ``body`` (every cell holding body voxels) and ``full`` (every cell) need no stand-in.
Each run is a fresh process (peak RSS is its own).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IRCAD = REPO.parent / "shared" / "data" / "3Dircadb1" / "3Dircadb1.1"


def unzip(zip_path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(dest)
    return dest


def make_models(folder: Path, n: int) -> Path:
    import torch

    from livseg_pipeline.experiment_planning.plans import load_preset
    from livseg_pipeline.network.deepmedic import DeepMedic
    from livseg_pipeline.training.checkpoint import save_checkpoint

    plans = load_preset("paper")
    model_dir = folder / "Dataset900_Bench" / "paper"
    for k in range(n):
        torch.manual_seed(k)
        net = DeepMedic.from_plans(plans).eval()
        save_checkpoint(model_dir / f"fold_{k}" / "checkpoint_best.pth",
                        {"model": net.state_dict(), "plans": json.dumps(plans.to_dict()), "epoch": 0, "fold": k})
    return model_dir


def stand_in_map(ct_dir: Path, liver_dir: Path):
    """The reference liver on the preprocessed grid, smoothed: what a good model would output."""
    import numpy as np
    from scipy import ndimage

    from livseg_pipeline.experiment_planning.plans import load_preset
    from livseg_pipeline.io.image_io import read_image
    from livseg_pipeline.preprocessing.preprocessor import preprocess_case

    ct, lab = read_image(ct_dir), read_image(liver_dir)
    arrays, _ = preprocess_case(ct, lab.with_array((lab.array > 0).astype(np.uint8)), load_preset("paper"))
    return ndimage.gaussian_filter(arrays["label"].astype(np.float32), 1.5)


def child(args) -> None:
    """One end-to-end run in this process; prints one JSON line."""
    import numpy as np
    import torch

    from livseg_pipeline.inference.dense import available_threads
    from livseg_pipeline.inference.predictor import Predictor
    from livseg_pipeline.io.image_io import read_image, write_image
    from livseg_pipeline.utils.memory import keep_freed_memory

    torch.set_num_threads(available_threads())
    if not args.default_malloc:
        keep_freed_memory()  # as lvs_predict does
    t0 = time.perf_counter()
    folds = list(range(args.folds))
    grow_options = {}
    if args.strategy == "grow" and args.stand_in:
        grow_options["stand_in_probabilities"] = np.load(args.stand_in)
    size, batch = args.segment_size or None, None
    if args.engine == "segments" and args.strategy == "grow":
        size, batch = size or 30, 4   # the one-segment-at-a-time growth as it was before the box engine
    t = time.perf_counter()
    pred = Predictor.from_model_dir(args.model_dir, [str(f) for f in folds], strategy=args.strategy,
                                    segment_size=size, batch_size=batch, grow_options=grow_options,
                                    engine=args.engine)
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    image = read_image(args.ct)
    t_read = time.perf_counter() - t
    p = pred.predict_image(image)
    t = time.perf_counter()
    write_image(p.mask, Path(args.out) / f"ircad1_{args.strategy}_{args.engine}_{args.folds}.nii.gz")
    t_write = time.perf_counter() - t
    total = time.perf_counter() - t0
    print(json.dumps({"strategy": args.strategy, "engine": args.engine, "folds": args.folds,
                      "segment_size": pred.segment_size, "stand_in": bool(grow_options),
                      "wall_s": round(total, 1), "end_to_end_s": round(total - t_load, 1),
                      "stages_s": {"load_model": round(t_load, 2), "read": round(t_read, 2), **p.timings_s,
                                   "write": round(t_write, 2)},
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 2),
                      "inference": p.inference, "liver_ml": round(p.liver_volume_ml, 1),
                      "threads": torch.get_num_threads(), "default_malloc": args.default_malloc}), flush=True)


def _compare_masks(a_path: Path, b_path: Path) -> dict:
    """DSC and differing voxels of two masks on the same grid."""
    import numpy as np

    from livseg_pipeline.io.image_io import read_image

    a, b = read_image(a_path).array > 0, read_image(b_path).array > 0
    dsc = 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))
    return {"compare": [a_path.name, b_path.name], "dsc": round(float(dsc), 6),
            "differing_voxels": int(np.count_nonzero(a != b))}


def count_only(ct_dir: Path, stand_in_path: Path) -> list[dict]:
    """Segments and TFLOP per strategy and segment size (no network run)."""
    import numpy as np

    from livseg_pipeline.experiment_planning.plans import load_preset
    from livseg_pipeline.inference.dense import candidate_segments, padded_shape, segment_grid
    from livseg_pipeline.inference.grow import grow_region, seed_order
    from livseg_pipeline.io.image_io import Geometry, read_image
    from livseg_pipeline.network.deepmedic import DeepMedic, flops_per_output_voxel
    from livseg_pipeline.preprocessing.preprocessor import preprocess_case, preprocessed_body_mask

    plans = load_preset("paper")
    arrays, props = preprocess_case(read_image(ct_dir), None, plans)
    img = arrays["image"]
    # the predictor's growth: exact for the mask thresholded on the original grid
    grids = (Geometry.from_dict(props["original"]), props["original"]["shape_zyx"],
             Geometry.from_dict(props["preprocessed"]))
    oracle = np.load(stand_in_path)
    body = preprocessed_body_mask(img, plans, dilate_mm=5.0)
    net = DeepMedic.from_plans(plans)
    rows = []
    for S in (30, 45, 60, 75, 90, 105):
        po = np.zeros(padded_shape(img.shape, S), np.float32)
        po[: img.shape[0], : img.shape[1], : img.shape[2]] = oracle

        def block(s, po=po, S=S):
            return po[s[0]: s[0] + S, s[1]: s[1] + S, s[2]: s[2] + S]

        cands = candidate_segments(img.shape, S, body)
        seeds = seed_order(img, plans, cands, S, body)[:2]
        grown = grow_region(lambda b: b, block, seeds, set(cands), S, 1, 0.25)
        fpv = flops_per_output_voxel(net, S)
        rows.append({"engine": "segments", "segment_size": S, "mflop_per_voxel": round(fpv / 1e6, 2),
                     **{k: {"segments": n, "tflop": round(n * S ** 3 * fpv / 1e12, 2)}
                        for k, n in (("full", len(segment_grid(img.shape, S))), ("body", len(cands)),
                                     ("grow", len(grown)))}})
    # the box engine: growth in waves over cells, each wave covered by a few boxes (dry run: the
    # boxes are chosen and costed, the network is not run; the stand-in decides the growth)
    from livseg_pipeline.inference.dense import make_runner
    from livseg_pipeline.inference.grow import predict_grow

    for C in (10, 15, 20, 30):
        res = predict_grow(net, img, plans, "cpu", C, 0, body_mask=body, stand_in_probabilities=oracle,
                           original_grid=grids, dry_run=True)
        rows.append({"engine": "boxes", "strategy": "grow", "cell_size": C, "cells": len(res.runner.done),
                     "boxes": len(res.runner.boxes), "tflop": round(res.runner.flops() / 1e12, 2)})
    for C in (15, 45):
        runner = make_runner(net, img, plans, "cpu", C, dry_run=True)
        runner.run(candidate_segments(img.shape, C, body))
        rows.append({"engine": "boxes", "strategy": "body", "cell_size": C, "cells": len(runner.done),
                     "boxes": len(runner.boxes), "tflop": round(runner.flops() / 1e12, 2)})
    liver_vox = int((oracle >= 0.5).sum())
    rows.append({"preprocessed_shape": list(img.shape), "body_voxels": int(body.sum()), "liver_voxels": liver_vox,
                 "floor_tflop_liver_only": round(liver_vox * flops_per_output_voxel(net, 15 * 1000) / 1e12, 2)})
    return rows


def throughput(specs: list[str], threads: list[int]) -> list[dict]:
    """GFLOP/s of one paper-network forward pass per segment size, batch, thread count and memory
    format (``SxB`` or ``SxBcl`` for channels_last_3d; ``mkldnn`` off with ``SxBnomkl``)."""
    import torch

    from livseg_pipeline.experiment_planning.plans import load_preset
    from livseg_pipeline.network.deepmedic import DeepMedic, flops_per_output_voxel

    net = DeepMedic.from_plans(load_preset("paper")).eval()
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for spec in specs:
            cl, nomkl = spec.endswith("cl"), spec.endswith("nomkl")
            S, B = (int(v) for v in spec.removesuffix("cl").removesuffix("nomkl").split("x"))
            xs = [torch.randn(B, 1, n, n, n) for n in net.input_sizes(S)]
            model = net
            if cl:
                model = net.to(memory_format=torch.channels_last_3d)
                xs = [x.to(memory_format=torch.channels_last_3d) for x in xs]
            with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=not nomkl):
                model(*xs)
                times = []
                for _ in range(2):
                    t = time.perf_counter()
                    model(*xs)
                    times.append(time.perf_counter() - t)
            dt = min(times)
            flop = flops_per_output_voxel(net, S) * S ** 3 * B
            rows.append({"segment_size": S, "batch": B, "threads": n_threads, "channels_last": cl,
                         "mkldnn": not nomkl, "s_per_forward": round(dt, 2), "gflop_per_s": round(flop / dt / 1e9, 1),
                         "mvoxel_per_s": round(B * S ** 3 / dt / 1e6, 3)})
            print(json.dumps(rows[-1]), flush=True)
            net = net.to(memory_format=torch.contiguous_format)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ircad", default=str(IRCAD), help="3Dircadb1.1 folder (PATIENT_DICOM.zip, MASKS_DICOM.zip)")
    ap.add_argument("--runs", nargs="+", default=["grow:1", "grow:1:segments", "grow:5", "body:1", "full:1"],
                    help="strategy:folds[:engine] (strategy grow | body | full; engine boxes (default) | segments)")
    ap.add_argument("--model", dest="trained", default=None,
                    help="a trained model folder (fold_K/checkpoint_*.pth): timed as it is, growth decided by "
                         "its own probabilities (no stand-in); default: random paper networks + stand-in")
    ap.add_argument("--segment-size", type=int, default=0, help="override the strategy's segment size")
    ap.add_argument("--count-only", action="store_true")
    ap.add_argument("--throughput", nargs="*", metavar="SxB[cl|nomkl]",
                    help="only time single forward passes, e.g. 30x4 45x1 75x1 105x1 75x1cl 75x1nomkl")
    ap.add_argument("--threads", type=int, nargs="+", default=[2], help="thread counts for --throughput")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's allocator as it is (lvs_predict keeps freed memory for reuse)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--strategy", help=argparse.SUPPRESS)
    ap.add_argument("--folds", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--engine", default="boxes", help=argparse.SUPPRESS)
    ap.add_argument("--ct", help=argparse.SUPPRESS)
    ap.add_argument("--stand-in", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    if args.throughput is not None:
        rows = throughput(args.throughput or ["30x4", "45x1", "75x1", "105x1", "75x1cl", "75x1nomkl"], args.threads)
        if args.json:
            Path(args.json).write_text(json.dumps({"loadavg": os.getloadavg(), "results": rows}, indent=2) + "\n")
        return 0
    ircad = Path(args.ircad)
    if not (ircad / "PATIENT_DICOM.zip").is_file():
        print(f"bench_inference: {ircad}/PATIENT_DICOM.zip not found", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lvs_bench_inf_") as tmp:
        tmp = Path(tmp)
        unzip(ircad / "PATIENT_DICOM.zip", tmp)
        unzip(ircad / "MASKS_DICOM.zip", tmp)
        ct_dir, liver_dir = tmp / "PATIENT_DICOM", tmp / "MASKS_DICOM" / "liver"
        import numpy as np

        stand_in = tmp / "stand_in.npy"
        np.save(stand_in, stand_in_map(ct_dir, liver_dir))
        results: list[dict] = []
        if args.count_only:
            results = count_only(ct_dir, stand_in)
            for r in results:
                print(json.dumps(r))
        else:
            max_folds = max(int(r.split(":")[1]) for r in args.runs)
            model_dir = Path(args.trained) if args.trained else make_models(tmp / "results", max_folds)
            for run in args.runs:
                strategy, folds, *rest = run.split(":")
                cmd = [sys.executable, __file__, "--child", "--strategy", strategy, "--folds", folds,
                       "--model-dir", str(model_dir), "--ct", str(ct_dir), "--out", str(tmp),
                       "--segment-size", str(args.segment_size), "--engine", rest[0] if rest else "boxes"]
                if not args.trained:
                    cmd += ["--stand-in", str(stand_in)]
                if args.default_malloc:
                    cmd.append("--default-malloc")
                print(f"running {run} ...", file=sys.stderr, flush=True)
                proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
                if proc.returncode != 0:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    return 1
                line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
                results.append(json.loads(line))
                print(line, flush=True)
            if args.trained:
                # skipping is exact: the grown mask against the body-skip mask (same model; with
                # random weights and the stand-in the two are not comparable)
                for r in results:
                    if r["strategy"] != "grow":
                        continue
                    ref = tmp / f"ircad1_body_{r['engine']}_{r['folds']}.nii.gz"
                    if ref.is_file():
                        results.append(_compare_masks(tmp / f"ircad1_grow_{r['engine']}_{r['folds']}.nii.gz", ref))
                        print(json.dumps(results[-1]), flush=True)
        load = os.getloadavg()
        meta = {"cpus": os.cpu_count(), "loadavg_at_end": [round(v, 2) for v in load]}
        print(json.dumps(meta))
        if args.json:
            Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
