"""The box inference engine on a CUDA device: same probabilities as the reference segment engine,
and the time of growth / body / full inference on real preprocessed cases with a trained model.

    python benchmarks/gpu_box_engine.py --data benchmarks/data/ircad_paper --model DIR [--device cuda]

``--data``: a preprocessed plans folder (plans.json, CASE.npz); ``--model``: a model folder
(fold_K/checkpoint_*.pth, e.g. the one ``gpu_benchmark.py --save-model`` writes). Prints one table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    from livseg_pipeline.inference.dense import candidate_segments, make_runner, segment_grid
    from livseg_pipeline.inference.grow import predict_grow
    from livseg_pipeline.inference.predictor import load_ensemble
    from livseg_pipeline.preprocessing.preprocessor import preprocessed_body_mask

    device = torch.device(args.device)
    nets, plans, _ = load_ensemble(args.model, "all", device=device)
    rows = [("device", torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")]
    cases = sorted(p.stem for p in args.data.glob("*.npz"))
    for case in cases:
        with np.load(args.data / f"{case}.npz") as z:
            image, label = z["image"], z["label"] > 0
        body = preprocessed_body_mask(image, plans, dilate_mm=5.0)
        # equality on a corner of the volume: boxes vs one-segment-at-a-time, same device
        sub = np.ascontiguousarray(image[:45, :90, :90])
        ref = make_runner(nets, sub, plans, device, 45, 1, engine="segments")
        ref.run(segment_grid(sub.shape, 45))
        box = make_runner(nets, sub, plans, device, 15)
        box.run(segment_grid(sub.shape, 15))
        rows.append((f"{case}: max |boxes - segments|", f"{float(np.abs(box.result() - ref.result()).max()):.2e}"))
        for name in ("grow", "body", "full"):
            sync(device)
            t0 = time.perf_counter()
            if name == "grow":
                runner = predict_grow(nets, image, plans, device, 15, 0, body_mask=body).runner
            else:
                runner = make_runner(nets, image, plans, device, 15)
                runner.run(candidate_segments(image.shape, 15, body if name == "body" else None))
            prob = runner.result()
            sync(device)
            dt = time.perf_counter() - t0
            m = prob >= plans.inference.threshold
            dsc = 2 * np.count_nonzero(m & label) / max(1, np.count_nonzero(m) + np.count_nonzero(label))
            rows.append((f"{case}: {name}", f"{dt:.2f} s, {runner.flops() / 1e12:.2f} TFLOP, "
                                              f"{len(runner.boxes)} boxes, DSC {dsc:.4f}"))
    w = max(len(k) for k, _ in rows)
    print("\n| measure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k.ljust(w)} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
