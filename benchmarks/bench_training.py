"""Training throughput on CPU: segments/s and the share of step time spent waiting for data.

Runs the real training loop (:class:`livseg_pipeline.training.trainer.Trainer`, validation off) on
phantoms preprocessed at each preset's spacing, for the paper net and the cpu_demo net, and prints a
markdown table (paste it into documentation/benchmarks.md, section "Training"). The first epoch
(worker start-up, allocator warm-up) is discarded; the second one is reported.

    python benchmarks/bench_training.py                      # both presets
    python benchmarks/bench_training.py --presets cpu_demo --iterations 20 --workers 0 2
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch


def run(preset: str, iterations: int, workers: int, root: Path, cases: int, size_scale: float,
        channels_last: bool = True) -> dict:
    os.environ["LVS_RAW"], os.environ["LVS_PREPROCESSED"] = str(root / "raw"), str(root / "pre")
    results = root / f"res_{preset}_{workers}_{int(channels_last)}"
    shutil.rmtree(results, ignore_errors=True)  # a fresh run every time (a kept data folder is reused)
    os.environ["LVS_RESULTS"] = str(results)
    from livseg_pipeline.experiment_planning.plans import load_preset
    from livseg_pipeline.network import deepmedic
    from livseg_pipeline.training.synthetic import make_phantom_dataset
    from livseg_pipeline.training.trainer import TrainConfig, Trainer

    plans = load_preset(preset)
    dataset = f"Dataset990_Bench{preset.replace('_', '')}"
    if not (root / "pre" / dataset / plans.plans_name / "plans.json").is_file():
        t = time.perf_counter()
        make_phantom_dataset(dataset, plans, n_cases=cases, size_scale=size_scale, n_folds=2)
        print(f"[bench] {cases} phantoms for {preset} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    plans.training.iterations_per_epoch = iterations
    plans.training.num_workers = workers
    tr = Trainer(TrainConfig(dataset, 0, plans.plans_name, epochs=2, device="cpu", validate=False, export=False,
                             progress=False, plans_override=plans, channels_last=channels_last))
    tr.run()
    row = tr.history[-1]
    # CPU cost of making one batch in one process (what each loader worker spends per batch)
    from livseg_pipeline.training.data import load_training_cases
    from livseg_pipeline.training.sampling import SamplerConfig, SegmentSampler

    sampler = SegmentSampler(load_training_cases(tr.folder, ["phantom_000"], plans, progress=False),
                             SamplerConfig.from_plans(plans))
    sampler.batch(0)
    c = time.process_time()
    for i in range(1, 6):
        sampler.batch(i)
    batch_cpu = (time.process_time() - c) / 5
    net = deepmedic.DeepMedic.from_plans(plans)
    flop = deepmedic.flops_per_output_voxel(net, plans.training.segment_size_out) * \
        plans.training.segment_size_out ** 3 * 3  # forward + backward ~ 3x forward
    return {"preset": preset, "batch": plans.training.batch_size, "workers": workers,
            "layout": "NDHWC" if channels_last else "NCDHW",
            "seg_s": row["segments_per_s"], "step_s": row["epoch_time_s"] / iterations,
            "wait": row["data_wait_share"], "batch_cpu_ms": 1000 * batch_cpu,
            "gflops": row["segments_per_s"] * flop / 1e9}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["cpu_demo", "paper"])
    ap.add_argument("--iterations", type=int, default=None, help="per epoch (default: 12 cpu_demo, 3 paper)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--layouts", nargs="+", default=["NDHWC"], choices=["NDHWC", "NCDHW"])
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--size-scale", type=float, default=0.5, help="phantom size (1 = adult abdomen)")
    ap.add_argument("--keep", type=Path, default=None, help="data folder to reuse (default: a temporary one)")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="lvs_bench_train_"))
    rows = []
    for preset in args.presets:
        its = args.iterations or (12 if preset == "cpu_demo" else 3)
        for w in args.workers:
            for layout in args.layouts:
                rows.append(run(preset, its, w, root, args.cases, args.size_scale, layout == "NDHWC"))
                print(f"[bench] {rows[-1]}", file=sys.stderr, flush=True)
    print(f"\nCPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; 15^3 output segments\n")
    print("| preset | batch | loader workers | layout | segments/s | s/step | data wait | GFLOP/s (fwd+bwd) "
          "| CPU ms to make a batch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['batch']} | {r['workers']} | {r['layout']} | {r['seg_s']:.2f} | {r['step_s']:.2f} "
              f"| {100 * r['wait']:.0f}% | {r['gflops']:.1f} | {r['batch_cpu_ms']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
