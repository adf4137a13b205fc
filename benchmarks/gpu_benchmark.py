"""GPU benchmark: train the paper net on real preprocessed cases for a few minutes, then time inference.

Reports (one table, plus JSON): compute-only training throughput (random inputs, no data loading),
real training throughput with the multi-process loader and the share of step time spent waiting for
data, the full-volume validation DSC reached in the time budget, and dense-inference time per case for
several segment sizes.

Data: a preprocessed plans folder (plans.json + CASE.npz + CASE.json), e.g. the two real IRCAD cases:

    lvs_convert ...                      # 3D-IRCADb -> $LVS_RAW/Dataset001_IRCAD (see documentation)
    lvs_plan_preprocess 1 --preset paper
    mkdir -p benchmarks/data && cp -r $LVS_PREPROCESSED/Dataset001_IRCAD/paper benchmarks/data/ircad_paper
    python benchmarks/gpu_benchmark.py --data benchmarks/data/ircad_paper --val ircadb_1_01 --minutes 4 \
        --save-model /tmp/ircad_gpu_model --out benchmarks/out/gpu_benchmark.json

The last case (or ``--val CASE``) is held out for validation, the others are trained on. ``--out X.json``
gets the details, ``X.md`` the table. ``--save-model DIR`` writes the trained network as a model folder
for ``lvs_predict --model DIR`` (``DIR/fold_0/checkpoint_best.pth``, float32 CPU weights + plans, no
optimizer state, ``torch.load(weights_only=True)`` safe), right after training, before the inference
timing, so a run cut short still leaves the model. Without a GPU, check the script with tiny settings:

    python benchmarks/gpu_benchmark.py --phantoms 3 --tiny --device cpu --minutes 0.3
    python benchmarks/gpu_benchmark.py --data benchmarks/data/ircad_paper --tiny --device cpu --minutes 0.2 \
        --save-model /tmp/x
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

BENCH_DATASET = "Dataset998_GPUBench"
T_START = time.perf_counter()


def log(text: str) -> None:
    """One flushed progress line with the time since start (the device run shows only its output's tail)."""
    print(f"[gpu_benchmark {time.perf_counter() - T_START:6.1f} s] {text}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stage_tree(data: Path, root: Path, val: str | None) -> tuple[str, list[str], list[str]]:
    """Link the cases into a throw-away data tree with a one-fold split; returns plans name, train, val."""
    from livseg_pipeline.experiment_planning.plans import load_plans
    from livseg_pipeline.utils.files import save_json

    plans = load_plans(data / "plans.json")
    cases = sorted(p.name[:-4] for p in data.glob("*.npz") if not p.name.startswith("."))
    if not cases:
        raise SystemExit(f"{data}: no CASE.npz files (expected a preprocessed plans folder)")
    val_ids = [val] if val else cases[-1:]
    if any(v not in cases for v in val_ids):
        raise SystemExit(f"{data}: no case {val_ids[0]!r} (have {', '.join(cases)})")
    train_ids = [c for c in cases if c not in val_ids] or cases
    folder = root / "pre" / BENCH_DATASET / plans.plans_name
    folder.mkdir(parents=True, exist_ok=True)
    for c in cases:
        for ext in (".npz", ".json"):
            src = (data / f"{c}{ext}").resolve()
            if src.is_file() and not (folder / src.name).exists():
                (folder / src.name).symlink_to(src)
    shutil.copy(data / "plans.json", folder / "plans.json")
    save_json([{"train": train_ids, "val": val_ids}], root / "pre" / BENCH_DATASET / "splits_final.json")
    return plans.plans_name, train_ids, val_ids


def compute_only(net: torch.nn.Module, plans, device: torch.device, steps: int, amp: bool) -> float:
    """Segments/s of forward + backward + SGD step on random inputs (no data loading)."""
    from livseg_pipeline.training.validation import autocast_context

    t = plans.training
    B, S = t.batch_size, t.segment_size_out
    xs = [torch.randn(B, 1, n, n, n, device=device) for n in net.input_sizes(S)]
    y = (torch.rand(B, 1, S, S, S, device=device) > 0.5).float()
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.6)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    net.train()

    def step():
        with autocast_context(device, amp):
            out = net(*xs)
        loss = loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(min(3, steps)):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * B / (time.perf_counter() - t0)


def time_inference(net, plans, folder: Path, cases: list[str], device: torch.device, sizes: list[int],
                   amp: bool) -> list[dict]:
    from livseg_pipeline.evaluation.metrics import dice
    from livseg_pipeline.inference.dense import predict_preprocessed
    from livseg_pipeline.preprocessing.preprocessor import preprocessed_body_mask
    from livseg_pipeline.training.data import load_case
    from livseg_pipeline.training.validation import autocast_context

    rows = []
    for case in cases:
        image, label, _ = load_case(folder, case)
        body = preprocessed_body_mask(image, plans) if plans.inference.skip_outside_body else None
        for S in sizes:
            with autocast_context(device, amp):
                predict_preprocessed(net, image[:S, :S, :S], plans, device, segment_size=S)  # warm-up
                sync(device)
                t0 = time.perf_counter()
                prob = predict_preprocessed(net, image, plans, device, segment_size=S, body_mask=body)
                sync(device)
            dt = time.perf_counter() - t0
            rows.append({"case": case, "segment": S, "shape": list(image.shape), "seconds": dt,
                         "mvox_per_s": image.size / dt / 1e6,
                         "dsc_preprocessed": dice(prob >= plans.inference.threshold, label > 0)})
    return rows


def save_model(net: torch.nn.Module, plans, model_dir: Path, info: dict, history: list[dict],
               val_dsc: float | None) -> Path:
    """``model_dir/fold_0/checkpoint_best.pth`` (float32 CPU weights + plans) and ``model_info.json``."""
    from livseg_pipeline.training.checkpoint import save_checkpoint
    from livseg_pipeline.training.data import plans_json
    from livseg_pipeline.utils.files import save_json

    # float32, contiguous, on the CPU: loads anywhere (channels_last / CUDA tensors would not travel as well)
    state = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
             for k, v in net.state_dict().items()}
    epochs = len([r for r in history if r["epoch"] > 0])
    path = model_dir / "fold_0" / "checkpoint_best.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"model": state, "epoch": epochs, "total_epochs": epochs, "fold": "0",
                           "dataset": BENCH_DATASET, "plans": plans_json(plans), "history": history,
                           "best": {"dsc": float("nan") if val_dsc is None else float(val_dsc), "epoch": epochs},
                           "seed": 12345})
    save_json({**info, "val_dsc_preprocessed": val_dsc, "epochs": epochs,
               "note": "trained by benchmarks/gpu_benchmark.py; one fold, validated once at the end"},
              model_dir / "model_info.json")
    return path


def write_results(out: Path, result: dict, rows: list[tuple[str, str]]) -> None:
    """JSON details at ``out`` and the Markdown table at ``out`` with suffix .md (both atomic)."""
    from livseg_pipeline.utils.files import atomic_path, save_json

    out.parent.mkdir(parents=True, exist_ok=True)
    save_json(result, out)
    w = max(len(k) for k, _ in rows)
    table = "| measure | value |\n|---|---|\n" + "".join(f"| {k.ljust(w)} | {v} |\n" for k, v in rows)
    with atomic_path(out.with_suffix(".md")) as tmp:
        Path(tmp).write_text(table)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="preprocessed plans folder (plans.json, CASE.npz, CASE.json)")
    src.add_argument("--phantoms", type=int, help="generate N phantom cases instead (CPU self-check)")
    ap.add_argument("--val", default=None, help="validation case id (default: the last case)")
    ap.add_argument("--minutes", type=float, default=4.0, help="training time budget")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny network and epochs (CPU check of the script)")
    ap.add_argument("--iterations", type=int, default=None, help="iterations per epoch (default 50; tiny 4)")
    ap.add_argument("--workers", type=int, default=None, help="loader processes (default min(12, cpus - 2))")
    ap.add_argument("--segments", type=int, nargs="+", default=None, help="inference segment sizes")
    ap.add_argument("--no-amp", action="store_true", help="train and infer in float32 on CUDA")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/gpu_benchmark.json"),
                    help="JSON details; the table goes beside it with suffix .md")
    ap.add_argument("--save-model", type=Path, default=None, metavar="DIR",
                    help="write the trained network as a model folder for lvs_predict --model DIR")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    root = Path(tempfile.mkdtemp(prefix="lvs_gpu_bench_"))
    os.environ.update(LVS_RAW=str(root / "raw"), LVS_PREPROCESSED=str(root / "pre"), LVS_RESULTS=str(root / "res"))
    from livseg_pipeline.experiment_planning.plans import load_plans, load_preset
    from livseg_pipeline.network.deepmedic import DeepMedic, flops_per_output_voxel
    from livseg_pipeline.training.synthetic import make_phantom_dataset, tiny_plans
    from livseg_pipeline.training.trainer import TrainConfig, Trainer

    if args.phantoms:
        p = tiny_plans() if args.tiny else load_preset("paper")
        data = make_phantom_dataset("Dataset997_PhantomSrc", p, n_cases=args.phantoms, size_scale=0.25 if args.tiny
                                    else 0.6, n_folds=2)
    else:
        data = args.data.resolve()
    plans_name, train_ids, val_ids = stage_tree(data, root, args.val)
    plans = load_plans(root / "pre" / BENCH_DATASET / plans_name / "plans.json")
    if args.tiny:
        plans.network = tiny_plans().network
        plans.training.batch_size = 4
    t = plans.training
    t.iterations_per_epoch = args.iterations or (4 if args.tiny else 50)
    t.val_interval_epochs = 10 ** 6  # validate once, when the time is up
    t.num_workers = args.workers if args.workers is not None else max(1, min(12, (os.cpu_count() or 4) - 2))
    amp = device.type == "cuda" and not args.no_amp
    sizes = args.segments or ([45] if args.tiny else ([75, 105, 135] if device.type == "cuda" else [75]))

    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "amp": "bf16/fp16 autocast" if amp else "float32",
            "train_cases": train_ids, "val_cases": val_ids, "batch": t.batch_size, "workers": t.num_workers,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "data": str(args.data) if args.data else f"{args.phantoms} phantoms"}
    log(f"{info}")

    net = DeepMedic.from_plans(plans).to(device)
    flop = flops_per_output_voxel(net, t.segment_size_out) * t.segment_size_out ** 3 * 3
    log("compute-only training throughput (random inputs) ...")
    seg_compute = compute_only(net, plans, device, 5 if args.tiny else 30, amp)
    log(f"compute-only: {seg_compute:.1f} segments/s")
    del net

    last_report = [time.perf_counter()]

    def on_iteration(epoch: int, iteration: int) -> None:
        # the trainer prints one line per epoch; this shows life inside long epochs (first CUDA steps)
        if time.perf_counter() - last_report[0] > 20:
            last_report[0] = time.perf_counter()
            log(f"training epoch {epoch + 1}, iteration {iteration + 1}/{t.iterations_per_epoch}")

    trainer = Trainer(TrainConfig(BENCH_DATASET, 0, plans_name, epochs=10 ** 6, device=device.type, export=False,
                                  progress=False, plans_override=plans, time_limit_s=args.minutes * 60),
                      on_iteration=on_iteration)
    log(f"training for {args.minutes} min (loading cases, then one line per epoch) ...")
    t0 = time.perf_counter()
    trainer.run()
    train_s = time.perf_counter() - t0
    hist = [r for r in trainer.history if r["epoch"] > 0]
    steady = hist[1:] or hist
    seg_train = float(np.mean([r["segments_per_s"] for r in steady]))
    wait = float(np.mean([r["data_wait_share"] for r in steady]))
    val_dsc = hist[-1]["val_dsc"]
    log(f"trained {len(hist)} epochs in {train_s / 60:.2f} min; validation DSC {val_dsc}")
    if args.save_model:
        path = save_model(trainer.net, plans, args.save_model, info, trainer.history, val_dsc)
        log(f"model saved: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    result = {**info, "compute_segments_per_s": seg_compute, "train_segments_per_s": seg_train,
              "data_wait_share": wait, "epochs": len(hist), "train_seconds": train_s, "val_dsc": val_dsc,
              "history": trainer.history, "inference": []}
    write_results(args.out, result, [("device", info["device"]), ("status", "training done, inference pending")])

    net = trainer.net.eval()
    log(f"timing inference, segment sizes {sizes} ...")
    inf = time_inference(net, plans, root / "pre" / BENCH_DATASET / plans_name, train_ids[:1] + val_ids, device,
                         sizes, amp)

    rows = [("device", info["device"]), ("precision", info["amp"]),
            ("compute-only training", f"{seg_compute:.1f} segments/s ({seg_compute * flop / 1e9:.1f} GFLOP/s)"),
            ("training with loader", f"{seg_train:.1f} segments/s, data wait {100 * wait:.0f}% "
                                     f"({t.num_workers} workers, batch {t.batch_size})"),
            ("trained", f"{len(hist)} epochs x {t.iterations_per_epoch} iterations in {train_s / 60:.1f} min"),
            ("validation DSC (full volume)", f"{val_dsc:.4f} on {', '.join(val_ids)}" if val_dsc is not None else "-")]
    for r in inf:
        role = "val" if r["case"] in val_ids else "train"
        rows.append((f"inference {r['case']} ({role}) S={r['segment']}",
                     f"{r['seconds']:.2f} s for {'x'.join(map(str, r['shape']))} ({r['mvox_per_s']:.2f} Mvox/s), "
                     f"DSC {r['dsc_preprocessed']:.4f}"))
    w = max(len(k) for k, _ in rows)
    print("\n| measure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k.ljust(w)} | {v} |")
    result["inference"] = inf
    write_results(args.out, result, rows)
    log(f"details: {args.out}, table: {args.out.with_suffix('.md')}")
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
