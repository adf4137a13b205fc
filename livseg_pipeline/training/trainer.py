"""The training loop of one fold: BCE (or BCE + soft Dice), SGD with Nesterov momentum, step (or poly)
LR decay, full-volume validation every ``val_interval_epochs``, best/latest checkpoints and exact
resumption.

Exactness of ``--continue``: the checkpoint written after each epoch holds the weights, the optimizer
(momentum buffers), the LR scheduler, the epoch counter, the history and the python / numpy / torch RNG
states; training batches are a pure function of ``(seed, rank, batch index)``
(:mod:`livseg_pipeline.training.sampling`). Resuming after a crash therefore repeats the interrupted
epoch exactly; on CPU the weights equal those of an uninterrupted run.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from livseg_pipeline.experiment_planning.plans import Plans
from livseg_pipeline.inference.dense import available_threads
from livseg_pipeline.network.deepmedic import DeepMedic
from livseg_pipeline.paths import raw_root, results_root
from livseg_pipeline.training import ddp
from livseg_pipeline.training.checkpoint import (
    checkpoint_plans,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from livseg_pipeline.training.data import (
    TrainingDataError,
    case_weights,
    duplicate_groups,
    fold_cases,
    load_folder_plans,
    load_splits,
    load_training_cases,
    one_per_group,
    plans_folder,
    plans_json,
    preprocessed_cases,
)
from livseg_pipeline.training.progress import epoch_line, plot_progress, print_line, write_csv
from livseg_pipeline.training.sampling import SamplerConfig, SegmentSampler, make_loader
from livseg_pipeline.training.validation import autocast_context, export_validation, load_validation_cases, validate


@dataclass
class TrainConfig:
    dataset: str                      # DatasetNNN_Name
    fold: int | str                   # 0..4 or "all"
    plans_name: str | None = None     # preprocessed plans folder; None: "paper" or the only one
    epochs: int | None = None         # overrides plans.training.epochs
    resume: bool = False
    device: str = "cpu"
    num_workers: int | None = None    # overrides plans.training.num_workers
    seed: int = 12345
    validate_first: bool = False      # validation DSC of the untrained network as "epoch 0"
    validate: bool = True             # False: no validation at all (benchmarks)
    channels_last: bool = True        # NDHWC activations (faster convolutions on CPU and GPU)
    time_limit_s: float | None = None  # stop (validate, save) after the epoch that passes this (benchmarks)
    num_threads: int | None = None    # torch CPU threads of the training process (None: torch's default)
    export: bool = True               # validation predictions on the original grid at the end
    amp: bool = True                  # autocast on CUDA (never on CPU)
    progress: bool = True
    plans_override: Plans | None = None  # train with these plans instead of the folder's (tests, benchmarks)


class TrainingError(RuntimeError):
    """Training cannot start or continue; one line naming the file and reason."""


class DiceBCELoss(nn.Module):
    """BCE plus soft Dice loss (``plans.training.loss = "dice_bce"``).

    The Dice term is computed over the whole batch (one sum over every segment, "batch Dice"):
    background-centred segments often hold no liver, where a per-segment Dice is undefined.
    ``smooth`` keeps it finite for an all-background batch.

    >>> y = torch.tensor([[1.0, 0.0]])
    >>> round(float(DiceBCELoss()(torch.tensor([[20.0, -20.0]]), y)), 4)
    0.0
    >>> round(float(DiceBCELoss()(torch.tensor([[0.0, 0.0]]), y)), 4)  # ln 2 + (1 - 2 * 0.5 / 2)
    1.1931
    """

    def __init__(self, smooth: float = 1e-5):
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        inter = (p * target).sum()
        dice = (2.0 * inter + self.smooth) / (p.sum() + target.sum() + self.smooth)
        return self.bce(logits, target) + (1.0 - dice)


def make_loss(name: str) -> nn.Module:
    """The training loss named by ``plans.training.loss``."""
    if name == "bce":
        return nn.BCEWithLogitsLoss()
    if name == "dice_bce":
        return DiceBCELoss()
    raise TrainingError(f"plans field 'training.loss' is {name!r}; choose 'bce' or 'dice_bce'")


def make_scheduler(optimizer: torch.optim.Optimizer, plans: Plans, total_epochs: int):
    """``step``: ``lr_decay_factor`` every ``lr_decay_every_epochs`` epochs (the paper). ``poly``:
    nnU-Net's ``lr * (1 - epoch / total_epochs) ** 0.9``, stepped per epoch (its last epoch keeps a
    small positive rate)."""
    o = plans.training.optimizer
    if o.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=o.lr_decay_every_epochs, gamma=o.lr_decay_factor)
    if o.lr_schedule == "poly":
        total = max(1, int(total_epochs))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: max(0.0, 1.0 - e / total) ** 0.9)
    raise TrainingError(f"plans field 'training.optimizer.lr_schedule' is {o.lr_schedule!r}; choose 'step' or 'poly'")


def fold_dir(dataset: str, plans_name: str, fold: int | str) -> Path:
    return results_root() / dataset / plans_name / f"fold_{fold}"


class Trainer:
    """Trains one fold. ``on_iteration(epoch, iteration)`` is called after every optimizer step."""

    def __init__(self, cfg: TrainConfig, on_iteration: Callable[[int, int], None] | None = None):
        self.cfg = cfg
        self.on_iteration = on_iteration
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise TrainingError("--device cuda asked for, but torch sees no CUDA device")
        self.dist = ddp.init_distributed(self.device.type)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.folder = plans_folder(cfg.dataset, cfg.plans_name)
        self.plans = cfg.plans_override or load_folder_plans(self.folder)
        self.out = fold_dir(cfg.dataset, self.plans.plans_name, cfg.fold)
        self.latest, self.best = self.out / "checkpoint_latest.pth", self.out / "checkpoint_best.pth"
        self.start_epoch, self.history, self.best_dsc, self.best_epoch = 0, [], -math.inf, 0
        ckpt = None
        if cfg.resume and self.latest.is_file():
            ckpt = load_checkpoint(self.latest)
            self.plans = checkpoint_plans(ckpt, self.latest)
        elif cfg.resume:
            self._log(f"no {self.latest} to continue from; starting fold {cfg.fold} from scratch")
        elif self.latest.is_file() and not self._finished_without_resume():
            raise TrainingError(f"{self.latest}: fold {cfg.fold} was started before; use --continue to resume it "
                                f"(or delete {self.out} to start over)")
        t = self.plans.training
        self.total_epochs = int(cfg.epochs or (ckpt["total_epochs"] if ckpt else t.epochs))
        self.iters = t.iterations_per_epoch
        torch.manual_seed(cfg.seed if ckpt is None else int(ckpt["seed"]))
        self.seed = cfg.seed if ckpt is None else int(ckpt["seed"])
        self.net = DeepMedic.from_plans(self.plans, cfg.channels_last).to(self.device)
        o = t.optimizer
        if o.name != "sgd":
            raise TrainingError(f"plans field 'training.optimizer.name' is {o.name!r}; only 'sgd' is implemented")
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                                         weight_decay=o.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, self.plans, self.total_epochs)
        if ckpt is not None:
            self.net.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.start_epoch = int(ckpt["epoch"])
            self.history = list(ckpt["history"])
            self.best_dsc, self.best_epoch = float(ckpt["best"]["dsc"]), int(ckpt["best"]["epoch"])
            self._resume_rng = ckpt["rng"]
        else:
            self._resume_rng = None
        self.model: nn.Module = self.net
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        self.amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and not torch.cuda.is_bf16_supported()) \
            if self.device.type == "cuda" else None
        self.loss_fn = make_loss(t.loss)

    # ------------------------------------------------------------------------------------------
    def _finished_without_resume(self) -> bool:
        """A finished fold (latest at its last epoch and a validation summary) is skipped on rerun."""
        if not (self.out / "validation_summary.json").is_file():
            return False
        ckpt = load_checkpoint(self.latest)
        total = self.cfg.epochs or ckpt["total_epochs"]
        return int(ckpt["epoch"]) >= int(total)

    def _log(self, text: str) -> None:
        if self.dist.is_main:
            print(f"[lvs_train] {text}", file=sys.stderr, flush=True)

    def _payload(self, epoch: int) -> dict:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": epoch, "total_epochs": self.total_epochs,
                "fold": str(self.cfg.fold), "dataset": self.cfg.dataset, "plans": plans_json(self.plans),
                "history": self.history, "best": {"dsc": self.best_dsc, "epoch": self.best_epoch},
                "seed": self.seed, "rng": rng_state()}

    def _data(self):
        splits = load_splits(self.cfg.dataset, self.folder)
        available = preprocessed_cases(self.folder)
        train_ids, val_ids = fold_cases(splits, self.cfg.fold, available, where=str(self.folder.parent))
        if not train_ids:
            raise TrainingDataError(f"{self.folder.parent}: fold {self.cfg.fold} has no training cases")
        groups = duplicate_groups(self.cfg.dataset)
        weights = case_weights(train_ids, groups)
        n_groups = round(sum(weights.values()))
        self._log(f"fold {self.cfg.fold}: {len(train_ids)} training cases ({n_groups} after weighting duplicate "
                  f"groups once), {len(val_ids)} validation cases")
        show = self.cfg.progress and self.dist.is_main
        cases = load_training_cases(self.folder, train_ids, self.plans, weights, seed=self.seed, progress=show)
        val = load_validation_cases(self.folder, val_ids, self.plans) if self.dist.is_main else []
        # the DSC that picks the best checkpoint counts each duplicate group once (as training weights
        # it): predicting the same scan twice only costs time (a third of the cpu_demo validation)
        keep = set(one_per_group([c.case_id for c in val], groups))
        self.val_unique = [c for c in val if c.case_id in keep]
        if len(self.val_unique) < len(val):
            self._log(f"validation DSC during training on {len(self.val_unique)} of {len(val)} validation cases "
                      f"(one per duplicate group)")
        return cases, val

    def _validate(self) -> float:
        """Mean full-volume DSC on rank 0, broadcast to every rank."""
        dsc = math.nan
        if self.dist.is_main and self.val_cases:
            if self.device.type == "cpu":
                # the loader workers idle while rank 0 validates: give the dense inference every core
                # (_train_epoch sets the training thread count again)
                torch.set_num_threads(available_threads())
            per_case = validate(self.net, self.val_unique, self.plans, self.device, self.amp)
            dsc = float(sum(per_case.values()) / len(per_case))
        ddp.barrier(self.dist)
        return ddp.broadcast_float(dsc, self.dist)

    def _train_epoch(self, loader, indices, epoch: int) -> dict:
        if self.cfg.num_threads:
            # again every epoch: dense validation sets its own thread count
            torch.set_num_threads(self.cfg.num_threads)
        self.model.train()
        indices.set_epoch(epoch)
        t0 = time.perf_counter()
        wait = 0.0
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        it = iter(loader)
        for i in range(self.iters):
            tw = time.perf_counter()
            batch = next(it)
            xs = [x.to(self.device, non_blocking=True) for x in batch["x"]]
            y = batch["y"].to(self.device, non_blocking=True)
            wait += time.perf_counter() - tw
            with autocast_context(self.device, self.amp):
                logits = self.model(*xs)
            loss = self.loss_fn(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None and self.scaler.is_enabled():
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            loss_sum += loss.detach()
            if self.on_iteration is not None:
                self.on_iteration(epoch, i)
        del it
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        seg = self.iters * self.batch_size * self.dist.world_size
        return {"train_loss": ddp.mean_over_ranks(float(loss_sum.item()) / self.iters, self.dist),
                "epoch_time_s": dt, "segments_per_s": seg / dt, "data_wait_share": wait / dt}

    # ------------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Train (or continue) to ``total_epochs``, then export validation predictions. Returns a summary."""
        cfg = self.cfg
        if not cfg.resume and self.latest.is_file():
            self._log(f"fold {cfg.fold} is finished ({self.latest}); nothing to do (use --continue --epochs N "
                      f"to train longer)")
            return {"skipped": True, "output": str(self.out)}
        self.out.mkdir(parents=True, exist_ok=True)
        cases, self.val_cases = self._data()
        t = self.plans.training
        self.batch_size = ddp.rank_batch_size(t.batch_size, self.dist)
        sampler = SegmentSampler(cases, SamplerConfig.from_plans(self.plans, self.batch_size), self.seed,
                                 self.dist.rank)
        workers = t.num_workers if cfg.num_workers is None else cfg.num_workers
        if self.device.type == "cpu" and not cfg.num_threads:
            # leave the loader workers their cores: oversubscribed OpenMP threads spin-wait for each other
            # (2 cores, 2 workers, 2 threads measured 8x slower than 1 thread)
            cfg.num_threads = max(1, available_threads() - workers)
        loader, indices = make_loader(sampler, self.total_epochs, self.iters, workers,
                                      pin_memory=self.device.type == "cuda")
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
            self._log(f"continuing fold {cfg.fold} at epoch {self.start_epoch + 1} of {self.total_epochs} "
                      f"(lr {self.optimizer.param_groups[0]['lr']:.3g})")
        elif cfg.validate_first and self.start_epoch == 0:
            dsc = self._validate()
            self.history.append({"epoch": 0, "train_loss": None, "val_dsc": dsc,
                                 "lr": self.optimizer.param_groups[0]["lr"], "epoch_time_s": 0.0,
                                 "segments_per_s": 0.0, "data_wait_share": 0.0})
            if self.dist.is_main:
                print_line(f"epoch 0/{self.total_epochs}  untrained network: val DSC {dsc:.4f}")
        t_start = time.perf_counter()
        for epoch in range(self.start_epoch, self.total_epochs):
            lr = self.optimizer.param_groups[0]["lr"]
            row = {"epoch": epoch + 1, "lr": lr, **self._train_epoch(loader, indices, epoch)}
            self.scheduler.step()
            val = math.nan
            last = epoch + 1 == self.total_epochs
            if cfg.time_limit_s is not None:
                last = last or ddp.broadcast_float(float(time.perf_counter() - t_start > cfg.time_limit_s),
                                                   self.dist) > 0
            if cfg.validate and ((epoch + 1) % t.val_interval_epochs == 0 or last):
                tv = time.perf_counter()
                val = self._validate()
                row["val_time_s"] = time.perf_counter() - tv
            row["val_dsc"] = None if math.isnan(val) else val
            self.history.append(row)
            improved = not math.isnan(val) and val > self.best_dsc
            if improved:
                self.best_dsc, self.best_epoch = val, epoch + 1
            if self.dist.is_main:
                payload = self._payload(epoch + 1)
                save_checkpoint(self.latest, payload)
                if improved:
                    save_checkpoint(self.best, payload)
                write_csv(self.history, self.out / "training_log.csv")
                plot_progress(self.history, self.out / "progress.png",
                              f"{cfg.dataset} {self.plans.plans_name} fold {cfg.fold}")
                print_line(epoch_line(row, self.total_epochs))
            ddp.barrier(self.dist)
            if last:
                break
        del loader
        summary = {"output": str(self.out), "epochs": len([r for r in self.history if r["epoch"] > 0]),
                   "best_dsc": self.best_dsc, "best_epoch": self.best_epoch,
                   "train_time_s": time.perf_counter() - t_start}
        if self.dist.is_main and cfg.export and self.val_cases:
            src = self.best if self.best.is_file() else self.latest
            self.net.load_state_dict(load_checkpoint(src)["model"])
            labels = raw_root() / cfg.dataset / "labelsTr"
            res = export_validation(self.net, self.val_cases, self.plans, self.device, self.out, src, labels,
                                    self.amp, cfg.progress)
            summary["validation"] = {k: res[k] for k in ("mean_dsc", "median_dsc", "n_cases")}
            self._log(f"fold {cfg.fold} done: best val DSC {self.best_dsc:.4f} (epoch {self.best_epoch}); "
                      f"original-grid DSC of {src.name}: mean {res['mean_dsc']}, median {res['median_dsc']} "
                      f"-> {self.out}")
        ddp.barrier(self.dist)
        return summary
