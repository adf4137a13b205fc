"""Shared fixtures of the inference stage: small plans, a real DeepMedic whose weights are set so that
it is a known liver detector, phantom CTs, and model folders holding real checkpoints.

``intensity_deepmedic`` builds the real :class:`~livseg_pipeline.network.deepmedic.DeepMedic` of the
plans with explicit weights: every batch norm and PReLU is the identity, every convolution passes
channel 0 through its centre tap, so the network is exactly linear in the fine input voxel, and the
classifier is calibrated so that ``logit = gain * (x - level)`` (x normalized intensity). On a phantom
whose liver is the brightest soft tissue this gives a liver-like probability map, deterministic and
without training; it runs through exactly the code path of a trained model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from livseg_pipeline.experiment_planning.plans import Plans, load_preset, plans_from_dict
from livseg_pipeline.io.image_io import Geometry, Image

LIVER_HU, TISSUE_HU, FAT_HU, AIR_HU = 110.0, 40.0, -100.0, -1000.0


def small_plans(**overrides) -> Plans:
    """cpu_demo with 4 features per layer, 3 mm, 30^3 segments: fast on two cores."""
    d = load_preset("cpu_demo").to_dict()
    d["plans_name"] = "inferencetest"
    d["network"]["pathway_features"] = [[4] * 10 for _ in range(3)]
    d["network"]["fc_features"] = [8, 8]
    d["preprocessing"]["target_spacing_mm"] = [3.0, 3.0, 3.0]
    d["inference"]["segment_size_out"] = 30
    d["inference"]["batch_size"] = 2
    for k, v in overrides.items():
        d[k] = v
    return plans_from_dict(d)


def intensity_deepmedic(plans: Plans, level_hu: float = 75.0, gain_per_hu: float = 0.2) -> torch.nn.Module:
    """The plans' DeepMedic with weights making it ``sigmoid(gain * (HU - level))`` of the fine voxel."""
    from livseg_pipeline.network.deepmedic import DeepMedic

    net = DeepMedic.from_plans(plans).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, torch.nn.PReLU):
                m.weight.fill_(1.0)
            elif isinstance(m, torch.nn.Conv3d):
                m.weight.zero_()
                m.bias.zero_()
                c = m.kernel_size[0] // 2
                m.weight[0, 0, c, c, c] = 1.0
        # The network is now linear in the fine input; calibrate the classifier on two constants.
        sizes = net.input_sizes(15)
        lo, hi = (float(net(*[torch.full((1, 1, n, n, n), v) for n in sizes])[0, 0, 7, 7, 7]) for v in (0.0, 0.1))
        slope = (hi - lo) / 0.1
        pp = plans.preprocessing
        scale = (pp.intensity_range[1] - pp.intensity_range[0]) / (pp.hu_window[1] - pp.hu_window[0])
        level = pp.intensity_range[0] + (level_hu - pp.hu_window[0]) * scale
        gain = gain_per_hu / scale
        cls = net.classifier.conv
        cls.weight.mul_(gain / slope)
        cls.bias.fill_(-gain * level - lo * gain / slope)
    return net


def phantom_ct(shape=(40, 56, 64), spacing=(2.5, 2.5, 3.0), seed: int = 0, island: bool = True,
               bridge: bool = False) -> tuple[Image, np.ndarray]:
    """A small abdominal CT phantom in LPS (HU, int16) and its liver mask.

    Body: an elliptic cylinder of fat with soft tissue inside; liver: a bright ellipsoid on the
    patient's right (low x); ``island``: a smaller bright blob on the left (a "spleen"), separate
    unless ``bridge`` joins it to the liver with a thin bright tube.
    """
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing[::-1])], indexing="ij")
    cz, cy, cx = [(n - 1) * s / 2 for n, s in zip(shape, spacing[::-1])]
    ey, ex = cy * 0.85, cx * 0.9
    body = ((y - cy) / ey) ** 2 + ((x - cx) / ex) ** 2 <= 1.0
    inner = ((y - cy) / (ey - 8)) ** 2 + ((x - cx) / (ex - 8)) ** 2 <= 1.0
    lx, ly, lz = cx - 0.42 * ex, cy, cz
    liver = (((x - lx) / (0.4 * ex)) ** 2 + ((y - ly) / (0.55 * ey)) ** 2 + ((z - lz) / (0.35 * 2 * cz)) ** 2) <= 1
    hu = np.full(shape, AIR_HU, np.float32)
    hu[body] = FAT_HU
    hu[inner] = TISSUE_HU
    hu[liver] = LIVER_HU
    if island:
        sx = cx + 0.5 * ex
        blob = (((x - sx) / 12) ** 2 + ((y - cy) / 12) ** 2 + ((z - cz) / 12) ** 2) <= 1
        hu[blob] = LIVER_HU
        if bridge:
            tube = ((y - cy) ** 2 + (z - cz) ** 2 <= 2.0 ** 2) & (x >= lx) & (x <= sx)
            hu[tube & inner] = LIVER_HU
    hu += rng.normal(0, 8, shape).astype(np.float32)
    geom = Geometry(tuple(float(s) for s in spacing), (-80.0, -70.0, 100.0))
    return Image(np.rint(hu).astype(np.int16), geom, "phantom"), liver.astype(np.uint8)


def save_model_folder(root: Path, nets: list[torch.nn.Module], plans: Plans,
                      dataset: str = "Dataset901_InfTest") -> Path:
    """``root/dataset/<plans_name>/fold_K/checkpoint_best.pth`` for each net (the trainer's format)."""
    from livseg_pipeline.training.checkpoint import save_checkpoint

    model_dir = root / dataset / plans.plans_name
    for k, net in enumerate(nets):
        save_checkpoint(model_dir / f"fold_{k}" / "checkpoint_best.pth",
                        {"model": net.state_dict(), "plans": json.dumps(plans.to_dict()), "epoch": 1,
                         "fold": k})
    return model_dir


@pytest.fixture(scope="session")
def inf_plans() -> Plans:
    return small_plans()


@pytest.fixture(scope="session")
def liver_net(inf_plans) -> torch.nn.Module:
    return intensity_deepmedic(inf_plans)


@pytest.fixture(scope="session")
def two_fold_model(tmp_path_factory, inf_plans) -> Path:
    """A model folder with two folds that disagree slightly (different levels and gains)."""
    root = tmp_path_factory.mktemp("inf_results")
    nets = [intensity_deepmedic(inf_plans, 75.0, 0.2), intensity_deepmedic(inf_plans, 85.0, 0.1)]
    return save_model_folder(root, nets, inf_plans)
