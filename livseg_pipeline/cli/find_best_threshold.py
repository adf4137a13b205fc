"""lvs_find_best_threshold: tune the probability threshold and decide on post-processing from the
cross-validation predictions of a trained model (see livseg_pipeline/inference/threshold.py).

    lvs_find_best_threshold -d 3 [-p paper]

Writes ``$LVS_RESULTS/DatasetNNN_Name/<plans>/inference_config.json`` (used by
``lvs_predict --threshold auto``) and ``threshold_sweep.png``.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lvs_find_best_threshold", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", help="dataset id or name")
    p.add_argument("-p", "--plans", help="plans name (model folder under the dataset)")
    p.add_argument("--model", help="model folder (overrides -d/-p; references still come from -d)")
    p.add_argument("--labels", help="reference labels folder (default $LVS_RAW/<dataset>/labelsTr)")
    p.add_argument("--step", type=float, default=0.01, help="threshold grid step (default 0.01)")
    args = p.parse_args(argv)

    import numpy as np

    from livseg_pipeline.inference.predictor import ModelError, find_model_dir, fold_checkpoints
    from livseg_pipeline.inference.threshold import ThresholdError, tune
    from livseg_pipeline.paths import raw_root, resolve_dataset
    from livseg_pipeline.training.checkpoint import CheckpointError, checkpoint_plans, load_checkpoint

    try:
        model_dir = find_model_dir(args.model, args.dataset, args.plans)
        if args.labels:
            labels = args.labels
        elif args.dataset is not None:
            labels = raw_root() / resolve_dataset(args.dataset, raw_root()) / "labelsTr"
        else:
            labels = raw_root() / model_dir.parent.name / "labelsTr"
        ckpt_path = next(iter(fold_checkpoints(model_dir, "all").values()))
        plans = checkpoint_plans(load_checkpoint(ckpt_path), ckpt_path)
        if not 0 < args.step <= 0.5:
            raise ValueError(f"--step must be in (0, 0.5], got {args.step}")
        grid = np.round(np.arange(args.step, 1.0 - 1e-9, args.step), 4).tolist()
        cfg = tune(model_dir, labels, plans, thresholds=grid)
    except (ModelError, ThresholdError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"lvs_find_best_threshold: {e}", file=sys.stderr)
        return 2
    pp = cfg["postprocessing"]
    print(f"{cfg['n_cases']} cross-validation cases ({', '.join(cfg['folds'])})")
    print(f"best threshold {cfg['threshold']:.2f}: median DSC {cfg['median_dsc']:.4f} "
          f"vs {cfg['median_dsc_at_0.5']:.4f} at 0.5 "
          f"(gain {cfg['gain_over_0.5']:+.4f}, {cfg['gain_over_0.5_pct']:+.2f} %)")
    meds = ", ".join(f"{k} {v:.4f}" for k, v in pp["median_dsc"].items())
    print(f"post-processing at that threshold, median DSC: {meds} -> "
          f"{'use ' + pp['mode'] if pp['enabled'] else 'off'}")
    print(f"stored in {model_dir / 'inference_config.json'} (lvs_predict --threshold auto)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
