"""lvs_train DATASET FOLD: train the 3-pathway DeepMedic on one fold of a preprocessed dataset.

Examples::

    lvs_train 3 0                       # Dataset003_*, fold 0, plans 'paper' (or the only plans)
    lvs_train Liver all --preset cpu_demo --device cpu
    lvs_train 3 0 --continue            # resume exactly where checkpoint_latest.pth left off
    lvs_train 3 0 --num-gpus 4          # DistributedDataParallel through torchrun
"""

from __future__ import annotations

import argparse
import sys

from livseg_pipeline.experiment_planning.plans import PlansError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lvs_train",
        description="Train the 3-pathway DeepMedic (Tang et al. 2020) on one fold. Output: "
                    "$LVS_RESULTS/DatasetNNN_Name/<plans>/fold_K/ (checkpoints, training_log.csv, progress.png, "
                    "validation/ predictions on the original grid, validation_summary.json).")
    p.add_argument("dataset", help="dataset id (3, 003) or name (Liver, Dataset003_Liver)")
    p.add_argument("fold", help="fold 0-4 of splits_final.json, or 'all' (train on every case)")
    p.add_argument("--preset", "-p", default=None,
                   help="plans name = preprocessed folder to train on (default: 'paper', or the only one)")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (default: plans.training.epochs)")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="resume from checkpoint_latest.pth (model, optimizer, LR schedule, epoch, RNG states)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    p.add_argument("--num-gpus", type=int, default=1, help="train on N GPUs with DistributedDataParallel (torchrun)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="data loading processes per GPU/process (default: plans.training.num_workers)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of the training process (default on CPU: cores minus loader workers)")
    p.add_argument("--seed", type=int, default=12345, help="seed of weights init and segment sampling")
    p.add_argument("--val-at-start", action="store_true",
                   help="also validate the untrained network (logged as epoch 0)")
    p.add_argument("--no-export", action="store_true",
                   help="skip writing validation predictions on the original grid at the end")
    return p


def _fold(text: str) -> int | str:
    if text == "all":
        return "all"
    if text.isdigit():
        return int(text)
    raise ValueError(f"FOLD must be 0-4 or 'all', got {text!r}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    import torch

    from livseg_pipeline.training import ddp

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.num_gpus > 1 and not ddp.under_torchrun():
        if device == "cuda" and torch.cuda.device_count() < args.num_gpus:
            print(f"lvs_train: --num-gpus {args.num_gpus} but torch sees {torch.cuda.device_count()} GPU(s)",
                  file=sys.stderr)
            return 2
        return ddp.relaunch_with_torchrun("livseg_pipeline.cli.train", argv, args.num_gpus)

    from livseg_pipeline.paths import resolve_dataset
    from livseg_pipeline.training.checkpoint import CheckpointError
    from livseg_pipeline.training.data import TrainingDataError
    from livseg_pipeline.training.trainer import TrainConfig, Trainer, TrainingError

    try:
        cfg = TrainConfig(dataset=resolve_dataset(args.dataset), fold=_fold(args.fold), plans_name=args.preset,
                          epochs=args.epochs, resume=args.resume, device=device, num_workers=args.num_workers,
                          seed=args.seed, num_threads=args.threads, validate_first=args.val_at_start,
                          export=not args.no_export)
        Trainer(cfg).run()
    except (FileNotFoundError, ValueError, PlansError, TrainingDataError, TrainingError, CheckpointError) as e:
        print(f"lvs_train: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lvs_train: interrupted; resume with --continue (the last finished epoch is kept)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
