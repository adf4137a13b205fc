"""Checkpoints that ``torch.load(..., weights_only=True)`` can read: tensors and plain values only.

A checkpoint is a dict with ``format``, ``model`` (state dict), ``optimizer``, ``scheduler``, ``epoch``
(epochs completed), ``total_epochs``, ``fold``, ``plans`` (the plans as a JSON string), ``history``
(one dict of numbers per epoch), ``best`` ({"dsc", "epoch"}), ``seed`` and ``rng`` (python, numpy and
torch generator states as tuples, lists and tensors). Anything that needs an arbitrary pickled class
is refused with a one-line :class:`CheckpointError`, so a model file from elsewhere cannot run code.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from livseg_pipeline.experiment_planning.plans import Plans, plans_from_dict
from livseg_pipeline.utils.files import atomic_path

FORMAT = "livseg-deepmedic-1"


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and why."""


def rng_state() -> dict:
    """Python, numpy and torch (CPU and CUDA) global RNG states as weights_only-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically (a crash never leaves a half-written checkpoint in place)."""
    payload = {"format": FORMAT, **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load with ``weights_only=True``; refuse (one line) anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: refused: the checkpoint holds pickled objects other than tensors and "
                              f"plain values ({first[:160]})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a livseg checkpoint (format {FORMAT!r} expected)")
    return ckpt


def checkpoint_plans(ckpt: dict, path: str | Path = "") -> Plans:
    import json

    try:
        return plans_from_dict(json.loads(ckpt["plans"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: the checkpoint's plans are unusable ({e})") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Plans]:
    """The trained network (eval mode, on ``device``) and its plans from a checkpoint file."""
    from livseg_pipeline.network.deepmedic import DeepMedic

    ckpt = load_checkpoint(path)
    plans = checkpoint_plans(ckpt, path)
    net = DeepMedic.from_plans(plans)
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the network of its plans ({str(e).splitlines()[0]})") \
            from None
    return net.to(device).eval(), plans
