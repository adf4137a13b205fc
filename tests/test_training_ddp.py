"""The DistributedDataParallel path of lvs_train: torchrun, 2 CPU processes, gloo backend."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from livseg_pipeline.paths import results_root
from livseg_pipeline.training.checkpoint import load_checkpoint
from livseg_pipeline.training.synthetic import make_phantom_dataset, tiny_plans

DATASET = "Dataset951_DDPPhantoms"


@pytest.mark.timeout(300)
def test_lvs_train_ddp_gloo_two_processes():
    plans = tiny_plans()
    plans.training.iterations_per_epoch = 2
    plans.training.batch_size = 4   # 2 segments per process
    plans.network.pathway_features = [[2] * 10 for _ in range(3)]
    plans.network.fc_features = [4, 4]
    make_phantom_dataset(DATASET, plans, n_cases=3, size_scale=0.2, n_folds=3)
    cmd = [sys.executable, "-m", "livseg_pipeline.cli.train", DATASET, "0", "--preset", "tiny", "--device", "cpu",
           "--epochs", "1", "--num-gpus", "2", "--num-workers", "0", "--no-export"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting 2 processes" in proc.stderr
    fold = results_root() / DATASET / "tiny" / "fold_0"
    ckpt = load_checkpoint(fold / "checkpoint_latest.pth")
    assert ckpt["epoch"] == 1 and not any(k.startswith("module.") for k in ckpt["model"])
    rows = list(csv.DictReader(open(fold / "training_log.csv")))
    assert len(rows) == 1 and float(rows[0]["val_dsc"]) >= 0.0
    # one epoch line from rank 0 only
    assert proc.stdout.count("epoch 1/1") == 1
