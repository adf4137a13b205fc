"""Validation during and after training: full-volume dense inference and real DSC.

During training (every ``plans.training.val_interval_epochs``) each validation case is predicted over
its whole preprocessed volume with :func:`livseg_pipeline.inference.dense.predict_preprocessed` and
compared with its preprocessed label: the DSC the best checkpoint is chosen by.

After training the best checkpoint predicts the validation cases again and the probabilities are
mapped back onto each case's ORIGINAL grid (:func:`~livseg_pipeline.preprocessing.preprocessor.original_image`):
``validation/CASE_prob.npz`` (float16 ``probabilities``), ``validation/CASE.nii.gz`` (probability >=
``plans.inference.threshold``, no post-processing) and ``validation_summary.json`` with the DSC against
the raw label file (the one preprocessing read, ``properties["source_label"]``).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from livseg_pipeline.evaluation.metrics import dice
from livseg_pipeline.experiment_planning.plans import Plans
from livseg_pipeline.inference.dense import predict_preprocessed
from livseg_pipeline.io.image_io import Image, ImageReadError, read_image, same_grid, write_image
from livseg_pipeline.preprocessing.preprocessor import original_image, preprocessed_body_mask
from livseg_pipeline.training.data import load_case
from livseg_pipeline.utils.files import save_json, save_npz_atomic


@dataclass
class ValidationCase:
    case_id: str
    image: np.ndarray
    label: np.ndarray
    properties: dict = field(default_factory=dict)
    body: np.ndarray | None = None


def load_validation_cases(folder: Path, case_ids: list[str], plans: Plans) -> list[ValidationCase]:
    out = []
    for case_id in case_ids:
        image, label, props = load_case(folder, case_id)
        body = preprocessed_body_mask(image, plans) if plans.inference.skip_outside_body else None
        out.append(ValidationCase(case_id, image, label, props, body))
    return out


def autocast_context(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when asked for (and supported), nothing elsewhere."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def predict_case(net: torch.nn.Module, case: ValidationCase, plans: Plans, device: torch.device,
                 amp: bool = False) -> np.ndarray:
    with autocast_context(device, amp):
        return predict_preprocessed(net, case.image, plans, device, body_mask=case.body)


def validate(net: torch.nn.Module, cases: list[ValidationCase], plans: Plans, device: torch.device,
             amp: bool = False) -> dict[str, float]:
    """DSC per case on the preprocessed grid (threshold ``plans.inference.threshold``)."""
    thr = plans.inference.threshold
    return {c.case_id: dice(predict_case(net, c, plans, device, amp) >= thr, c.label > 0) for c in cases}


def _raw_label(case: ValidationCase, raw_labels_dir: Path | None) -> Image | None:
    candidates = []
    if case.properties.get("source_label"):
        candidates.append(Path(case.properties["source_label"]))
    if raw_labels_dir is not None:
        candidates.append(raw_labels_dir / f"{case.case_id}.nii.gz")
    for path in candidates:
        if path.is_file():
            try:
                return read_image(path)
            except ImageReadError as e:
                print(f"[lvs_train] warning: {e}", file=sys.stderr, flush=True)
    return None


def _fresh(path: Path, than: Path) -> bool:
    return path.is_file() and path.stat().st_mtime >= than.stat().st_mtime


def export_validation(net: torch.nn.Module, cases: list[ValidationCase], plans: Plans, device: torch.device,
                      out_dir: Path, checkpoint: Path, raw_labels_dir: Path | None = None, amp: bool = False,
                      progress: bool = True) -> dict:
    """Predictions on the original grid and ``validation_summary.json`` (see module docstring).

    Case outputs newer than ``checkpoint`` are kept (a rerun after a crash only does what is missing).
    """
    from tqdm import tqdm

    pred_dir = out_dir / "validation"
    pred_dir.mkdir(parents=True, exist_ok=True)
    thr = plans.inference.threshold
    per_case: dict[str, dict] = {}
    for case in tqdm(cases, desc="validation export", unit="case", disable=not progress, file=sys.stderr):
        nii, npz = pred_dir / f"{case.case_id}.nii.gz", pred_dir / f"{case.case_id}_prob.npz"
        prob_pre = None
        if _fresh(nii, checkpoint) and _fresh(npz, checkpoint):
            mask_img = read_image(nii)
        else:
            prob_pre = predict_case(net, case, plans, device, amp)
            prob_img = original_image(prob_pre, case.properties, order=1, fill=0.0)
            prob = np.clip(prob_img.array, 0.0, 1.0)
            mask_img = Image((prob >= thr).astype(np.uint8), prob_img.geometry, None)
            save_npz_atomic(npz, probabilities=prob.astype(np.float16))
            write_image(mask_img, nii)
        entry: dict = {"prediction": str(nii.name), "probabilities": str(npz.name)}
        if prob_pre is not None:
            entry["dsc_preprocessed_grid"] = dice(prob_pre >= thr, case.label > 0)
        ref = _raw_label(case, raw_labels_dir)
        if ref is not None and same_grid(ref, mask_img):
            entry["dsc"] = dice(mask_img.array > 0, ref.array > 0)
            entry["reference"] = ref.source
        elif ref is not None:
            entry["note"] = f"raw label {ref.source} is not on the original image grid; DSC skipped"
        else:
            entry["note"] = "raw label not found; DSC on the original grid skipped"
        per_case[case.case_id] = entry
    dscs = [e["dsc"] for e in per_case.values() if "dsc" in e]
    summary = {
        "checkpoint": checkpoint.name,
        "threshold": thr,
        "postprocessing": "none (raw thresholded network output)",
        "n_cases": len(per_case),
        "n_with_dsc": len(dscs),
        "mean_dsc": float(np.mean(dscs)) if dscs else None,
        "median_dsc": float(statistics.median(dscs)) if dscs else None,
        "min_dsc": float(np.min(dscs)) if dscs else None,
        "cases": per_case,
    }
    save_json(summary, out_dir / "validation_summary.json")
    return summary
