"""DistributedDataParallel plumbing (torchrun). NCCL on CUDA, gloo on CPU (used by the tests).

Under torchrun every process trains on its own batches (``batch_size / world_size`` segments each, so
one optimizer step still sees ``batch_size`` segments); rank 0 validates, writes checkpoints and logs
while the others wait at a barrier.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"   # where collective tensors live (NCCL needs CUDA tensors)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun set up (no-op when not under torchrun)."""
    if not under_torchrun():
        return DistInfo()
    local = int(os.environ.get("LOCAL_RANK", 0))
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local,
                    f"cuda:{local}" if device_type == "cuda" else "cpu")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        # rank 0 validates whole volumes while the others wait at a barrier: allow for it
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=2))
    return info


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_over_ranks(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def broadcast_float(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.broadcast(t, src=0)
    return float(t.item())


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def rank_batch_size(batch_size: int, info: DistInfo) -> int:
    """Segments per process so that the ranks together make (at least) ``batch_size``.

    >>> rank_batch_size(16, DistInfo(0, 2, 0)), rank_batch_size(16, DistInfo(0, 3, 0))
    (8, 6)
    """
    return max(1, -(-batch_size // info.world_size))


def relaunch_with_torchrun(module: str, argv: list[str], nproc: int) -> int:
    """Run ``python -m module argv`` in ``nproc`` processes through torchrun; returns its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", module, *argv]
    print(f"[lvs_train] starting {nproc} processes: torchrun --standalone --nproc_per_node={nproc} -m {module} "
          f"{' '.join(argv)}", file=sys.stderr, flush=True)
    return subprocess.call(cmd)
