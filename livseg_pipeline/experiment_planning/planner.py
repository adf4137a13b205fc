"""The planner: a preset plus what the data and this machine allow, written as plans.json.

Everything the paper fixes (spacing, HU window, network, optimiser, ...) comes from the preset
unchanged. The planner fills in only what depends on the dataset or the hardware, and records each
choice with its reason in ``plans.planner_notes`` (and prints it):

* ``dataset_name``;
* ``training.batch_size``: the preset's (the paper's 16) unless one training step would not fit in
  the memory budget, then the largest batch that fits;
* ``inference.segment_size_out``: the largest multiple of 15 whose forward pass fits the inference
  memory budget, no larger than the typical preprocessed volume (bigger segments waste less of the
  21-voxel receptive-field border per output voxel);
* ``training.foreground_ratio``: the preset's liver-centred share (the paper's 50/50), raised to the
  liver's own share of the cropped volume if the liver is that common (never under-sample it);
* ``training.num_workers``: from the CPU cores.

Memory figures are estimates from the network's activation sizes (``estimate_*`` below), not
measurements; they are deliberately conservative.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livseg_pipeline.experiment_planning.plans import Plans, load_plans, load_preset, plans_from_dict, save_plans
from livseg_pipeline.network.segments import pathway_input_sizes, receptive_radius
from livseg_pipeline.utils.files import load_json

GIB = 1024 ** 3
#: share of free GPU memory one training step / one inference batch may use (cuDNN workspaces, AMP copies)
GPU_TRAIN_SHARE, GPU_INFER_SHARE = 0.5, 0.4
#: share of available RAM on a CPU-only machine, and a hard cap for inference (laptop target <= 4 GB RSS)
CPU_TRAIN_SHARE, CPU_INFER_SHARE, CPU_INFER_CAP = 0.25, 0.25, 2.0 * GIB
#: bytes kept per activation voxel-feature in training: conv out, BN out, PReLU out (+ their gradients);
#: paper network, batch 16 of 15^3 on CPU: 1.92 GiB measured, 2.38 GiB estimated (conservative)
TRAIN_BYTES_PER_ACTIVATION = 4 * 4
#: largest inference segment considered (output voxels per side)
MAX_SEGMENT = {"cuda": 300, "cpu": 195}
#: framework overhead of a forward/backward pass (oneDNN / cuDNN workspaces, allocator slack)
FIXED_OVERHEAD_BYTES = 128 * 1024 ** 2
#: preprocessing peak memory per original voxel (int16 CT, float32 copies, SimpleITK buffers): measured
#: up to ~7.5 B/voxel above the idle worker on IRCAD (documentation/benchmarks.md), x2 headroom
PREPROCESS_BYTES_PER_VOXEL = 16


@dataclass
class Hardware:
    """What the planner knows about the machine."""

    device: str                 # "cuda" | "cpu"
    device_name: str
    memory_bytes: int           # free GPU memory, or available RAM on a CPU-only machine
    ram_available_bytes: int
    cpu_cores: int

    def to_dict(self) -> dict:
        return {"device": self.device, "device_name": self.device_name,
                "memory_gib": round(self.memory_bytes / GIB, 2),
                "ram_available_gib": round(self.ram_available_bytes / GIB, 2), "cpu_cores": self.cpu_cores}


def cpu_cores() -> int:
    """Cores this process may use (respects taskset / cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def detect_hardware() -> Hardware:
    import psutil

    ram = int(psutil.virtual_memory().available)
    cores = cpu_cores()
    try:
        import torch

        if torch.cuda.is_available():
            free, _total = torch.cuda.mem_get_info()
            return Hardware("cuda", torch.cuda.get_device_name(0), int(free), ram, cores)
    except Exception:  # noqa: BLE001 - a broken CUDA setup means planning for the CPU
        pass
    import platform

    return Hardware("cpu", platform.processor() or platform.machine() or "CPU", ram, ram, cores)


# ----------------------------------------------------------------------------------------------
# Network memory estimates
# ----------------------------------------------------------------------------------------------
def activation_counts(plans: Plans, segment_size_out: int) -> dict[str, int]:
    """Activation sizes (voxels x features) of one segment through the network of ``plans``:
    ``total`` (all layers), ``largest`` (one layer), ``head`` (up-sampled concat + FC + classifier).

    >>> activation_counts(Plans(), 15)["head"] == 15 ** 3 * (50 + 60 + 60 + 150 + 150 + 1)
    True
    """
    n = plans.network
    radius = receptive_radius(len(n.pathway_features[0]), n.kernel_size)
    sizes = pathway_input_sizes(segment_size_out, n.pathway_factors, radius)
    half = (n.kernel_size - 1) // 2
    total, largest = 0, 0
    for size, feats in zip(sizes, n.pathway_features):
        for layer, f in enumerate(feats):
            count = (size - 2 * half * (layer + 1)) ** 3 * f
            total += count
            largest = max(largest, count)
    s3 = segment_size_out ** 3
    head = s3 * (sum(f[-1] for f in n.pathway_features) + sum(n.fc_features) + 1)
    return {"total": total + head, "largest": max(largest, s3 * max(n.fc_features)), "head": head}


def estimate_training_bytes(plans: Plans, batch_size: int) -> int:
    """Memory of one training step (forward + backward) for ``batch_size`` segments, bytes."""
    per_sample = activation_counts(plans, plans.training.segment_size_out)["total"] * TRAIN_BYTES_PER_ACTIVATION
    return int(batch_size * per_sample + _parameter_bytes(plans) * 4 + FIXED_OVERHEAD_BYTES)


def estimate_inference_bytes(plans: Plans, segment_size_out: int, batch_size: int = 1) -> int:
    """Peak memory of one inference forward pass (no gradients), bytes: 2.5 times the largest
    activation (a layer's input and output, and temporaries) plus the up-sampled pathway outputs and
    FC activations, float32, plus a fixed overhead. Checked against the peak RSS increase of the
    paper's network on CPU (torch 2, 2 threads): S = 45: 392-444 MiB measured, 422 estimated;
    S = 75: 1415-1427 MiB measured, 1488 estimated."""
    c = activation_counts(plans, segment_size_out)
    return int(batch_size * 4 * (2.5 * c["largest"] + c["head"]) + _parameter_bytes(plans) + FIXED_OVERHEAD_BYTES)


def _parameter_bytes(plans: Plans) -> int:
    n = plans.network
    k3 = n.kernel_size ** 3
    params = 0
    for feats in n.pathway_features:
        prev = 1
        for f in feats:
            params += prev * f * k3 + 3 * f
            prev = f
    prev = sum(f[-1] for f in n.pathway_features)
    for f in [*n.fc_features, 1]:
        params += prev * f + f
        prev = f
    return 4 * params


# ----------------------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------------------
def load_or_extract_fingerprint(raw_dataset_dir: str | Path, num_processes: int = 2) -> dict:
    """The raw dataset's ``fingerprint.json``, extracted first when it is missing."""
    raw_dataset_dir = Path(raw_dataset_dir)
    path = raw_dataset_dir / "fingerprint.json"
    if path.is_file():
        return load_json(path)
    from livseg_pipeline.experiment_planning.fingerprint import extract_fingerprint

    print(f"[plan] {path} is missing; extracting the fingerprint", flush=True)
    return extract_fingerprint(raw_dataset_dir, num_processes)


def usable_cases(fingerprint: dict) -> dict[str, dict]:
    """Fingerprint records with a readable image of known geometry."""
    return {c: r for c, r in fingerprint.get("cases", {}).items() if "spacing" in r and "shape" in r}


def estimated_preprocessed_shapes(fingerprint: dict, target_spacing_xyz) -> np.ndarray:
    """(n, 3) z, y, x sizes at the target spacing before the body crop (an upper bound)."""
    cases = usable_cases(fingerprint)
    if not cases:
        return np.zeros((0, 3))
    shapes = np.array([r["shape"] for r in cases.values()], float)
    spacing_zyx = np.array([r["spacing"][::-1] for r in cases.values()], float)
    return np.rint(shapes * spacing_zyx / np.asarray(target_spacing_xyz[::-1], float))


def plan_experiment(raw_dataset_dir: str | Path, preset: str | Plans = "paper", num_processes: int = 2,
                    hardware: Hardware | None = None, verbose: bool = True) -> Plans:
    """A preset completed for the dataset in ``raw_dataset_dir`` and this machine (not saved)."""
    raw_dataset_dir = Path(raw_dataset_dir)
    # a fresh copy: the planner edits it
    plans = load_preset(preset) if isinstance(preset, str) else plans_from_dict(preset.to_dict())
    hw = hardware or detect_hardware()
    fp = load_or_extract_fingerprint(raw_dataset_dir, num_processes)
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        if verbose:
            print(f"[plan] {text}", flush=True)

    plans.dataset_name = raw_dataset_dir.name
    cases = usable_cases(fp)
    note(f"dataset {raw_dataset_dir.name}: {len(cases)} readable case(s) of {len(fp.get('cases', {}))}; "
         f"preset '{plans.plans_name}'; {hw.device} ({hw.device_name}), "
         f"{hw.memory_bytes / GIB:.1f} GiB {'free GPU memory' if hw.device == 'cuda' else 'RAM available'}, "
         f"{hw.cpu_cores} CPU core(s)")
    flagged = {c: sorted(r.get("verdicts", {})) for c, r in fp.get("cases", {}).items() if r.get("verdicts")}
    if flagged:
        listing = "; ".join(f"{c}: {', '.join(v)}" for c, v in list(flagged.items())[:8])
        more = f" (+{len(flagged) - 8} more)" if len(flagged) > 8 else ""
        note(f"fingerprint flagged {len(flagged)} case(s), check them: {listing}{more}")

    shapes = estimated_preprocessed_shapes(fp, plans.preprocessing.target_spacing_mm)
    median_shape = np.median(shapes, axis=0) if len(shapes) else np.array([200.0, 250.0, 250.0])

    _plan_batch_size(plans, hw, note)
    _plan_inference_segment(plans, hw, median_shape, note)
    _plan_foreground_ratio(plans, cases, note)
    _plan_workers(plans, hw, note)

    plans.planner_notes = notes
    plans.planner_info = {
        "hardware": hw.to_dict(),
        "n_cases": len(cases),
        "median_spacing_xyz": fp.get("summary", {}).get("median_spacing"),
        "median_shape_zyx": fp.get("summary", {}).get("median_shape"),
        "estimated_median_preprocessed_shape_zyx": [int(v) for v in median_shape],
        "estimated_training_step_gib": round(estimate_training_bytes(plans, plans.training.batch_size) / GIB, 3),
        "estimated_inference_batch_gib": round(
            estimate_inference_bytes(plans, plans.inference.segment_size_out, plans.inference.batch_size) / GIB, 3),
        "flagged_cases": flagged,
    }
    return plans.validate()


def _plan_batch_size(plans: Plans, hw: Hardware, note) -> None:
    t = plans.training
    share = GPU_TRAIN_SHARE if hw.device == "cuda" else CPU_TRAIN_SHARE
    budget = hw.memory_bytes * share
    wanted = t.batch_size
    fits = wanted
    while fits > 1 and estimate_training_bytes(plans, fits) > budget:
        fits -= 1
    need = estimate_training_bytes(plans, wanted) / GIB
    if fits < wanted:
        t.batch_size = fits
        note(f"training.batch_size = {fits} (preset {wanted} needs ~{need:.2f} GiB per step, more than "
             f"{share:.0%} of {hw.memory_bytes / GIB:.1f} GiB)")
    else:
        note(f"training.batch_size = {wanted} (preset value; ~{need:.2f} GiB per step fits in {share:.0%} of "
             f"{hw.memory_bytes / GIB:.1f} GiB)")


def _plan_inference_segment(plans: Plans, hw: Hardware, median_shape_zyx: np.ndarray, note) -> None:
    inf = plans.inference
    step = math.lcm(*plans.network.pathway_factors)
    if hw.device == "cuda":
        budget = hw.memory_bytes * GPU_INFER_SHARE
        why = f"{GPU_INFER_SHARE:.0%} of {hw.memory_bytes / GIB:.1f} GiB free GPU memory"
    else:
        budget = min(hw.memory_bytes * CPU_INFER_SHARE, CPU_INFER_CAP)
        why = f"min({CPU_INFER_SHARE:.0%} of {hw.memory_bytes / GIB:.1f} GiB RAM, {CPU_INFER_CAP / GIB:.1f} GiB)"
    # No point in a segment larger than the volume (rounded up to a multiple of the step).
    volume_cap = int(math.ceil(float(max(median_shape_zyx)) / step) * step)
    cap = max(step, min(MAX_SEGMENT[hw.device], volume_cap))
    size = step
    while size + step <= cap and estimate_inference_bytes(plans, size + step, inf.batch_size) <= budget:
        size += step
    est = estimate_inference_bytes(plans, size, inf.batch_size) / GIB
    limit = "the volume size" if size + step > cap else "memory"
    inf.segment_size_out = size
    note(f"inference.segment_size_out = {size} (largest multiple of {step} within {why}: ~{est:.2f} GiB "
         f"per batch of {inf.batch_size}; limited by {limit}, median volume ~"
         f"{'x'.join(str(int(v)) for v in median_shape_zyx)} voxels)")


def _plan_foreground_ratio(plans: Plans, cases: dict[str, dict], note) -> None:
    t = plans.training
    fracs = [r["liver_fraction"] for r in cases.values() if r.get("liver_fraction")]
    if not fracs:
        note(f"training.foreground_ratio = {t.foreground_ratio} (preset; no liver fractions in the fingerprint)")
        return
    # The fingerprint's fraction is of the whole scan; the body crop keeps roughly two thirds of it.
    frac = min(1.0, float(np.median(fracs)) * 1.5)
    preset = t.foreground_ratio
    if frac > preset:
        t.foreground_ratio = round(min(0.9, frac), 3)
        note(f"training.foreground_ratio = {t.foreground_ratio} (the liver fills ~{frac:.0%} of the cropped "
             f"volumes, more than the preset's {preset}: never sample it less often than uniform sampling would)")
    else:
        note(f"training.foreground_ratio = {preset} (preset; the liver fills ~{frac:.1%} of the cropped volumes, "
             f"so liver-centred segments are over-sampled ~{preset / max(frac, 1e-6):.0f}x)")


def _plan_workers(plans: Plans, hw: Hardware, note) -> None:
    t = plans.training
    if hw.device == "cuda":
        workers = max(1, min(12, hw.cpu_cores - 1))
        why = "one per spare CPU core (max 12) to keep the GPU fed"
    else:
        workers = max(1, hw.cpu_cores // 2)
        why = "half the CPU cores: the CPU also runs the network"
    t.num_workers = workers
    note(f"training.num_workers = {workers} ({why}; {hw.cpu_cores} core(s))")


def preprocessing_processes(fingerprint: dict, requested: int | None, hw: Hardware | None = None) -> tuple[int, str]:
    """Worker processes for preprocessing: the request (or the cores), bounded so that the largest
    case fits in half the available RAM per worker."""
    hw = hw or detect_hardware()
    n = requested if requested and requested > 0 else hw.cpu_cores
    voxels = [int(np.prod(r["shape"])) for r in usable_cases(fingerprint).values()]
    if not voxels:
        return max(1, n), f"{max(1, n)} worker(s)"
    per_case = max(voxels) * PREPROCESS_BYTES_PER_VOXEL
    by_memory = max(1, int(hw.ram_available_bytes * 0.5 // per_case))
    if by_memory < n:
        return by_memory, (f"{by_memory} worker(s) (asked {n}; the largest case needs ~{per_case / GIB:.1f} GiB, "
                           f"{hw.ram_available_bytes / GIB:.1f} GiB RAM available)")
    return n, f"{n} worker(s)"


def plans_path(preprocessed_dataset_dir: str | Path, plans_name: str) -> Path:
    """``$LVS_PREPROCESSED/DatasetNNN_Name/<plans_name>/plans.json``."""
    return Path(preprocessed_dataset_dir) / plans_name / "plans.json"


def plan_and_save(raw_dataset_dir: str | Path, preprocessed_dataset_dir: str | Path, preset: str = "paper",
                  num_processes: int = 2, replan: bool = False, verbose: bool = True,
                  hardware: Hardware | None = None) -> tuple[Plans, Path, bool]:
    """Plan and write ``plans.json``; an existing one (possibly hand-edited) is kept unless ``replan``.
    Returns ``(plans, path, planned_now)``."""
    name = load_preset(preset).plans_name
    path = plans_path(preprocessed_dataset_dir, name)
    if path.is_file() and not replan:
        plans = load_plans(path)
        if verbose:
            print(f"[plan] using the existing {path} (--replan plans again from the preset)", flush=True)
        return plans, path, False
    plans = plan_experiment(raw_dataset_dir, preset, num_processes, hardware, verbose)
    save_plans(plans, path)
    if verbose:
        print(f"[plan] wrote {path}", flush=True)
    return plans, path, True
