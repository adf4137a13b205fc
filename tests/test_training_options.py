"""Opt-in training options of the plans: boundary-centred segments, BCE + soft Dice loss, poly LR.

Each is off in the paper preset; these tests check what they do, on small analytic inputs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from livseg_pipeline.experiment_planning.plans import Plans, PlansError, load_preset, plans_from_dict
from livseg_pipeline.preprocessing.context import context_volumes
from livseg_pipeline.training.data import TrainingCase, surface_shell
from livseg_pipeline.training.sampling import SamplerConfig, SegmentSampler
from livseg_pipeline.training.synthetic import tiny_plans
from livseg_pipeline.training.trainer import DiceBCELoss, make_loss, make_scheduler


def _sphere_case() -> TrainingCase:
    shape = (40, 44, 48)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    label = ((z - 20) ** 2 + (y - 22) ** 2 + (x - 24) ** 2 < 12 ** 2).astype(np.uint8)
    image = (0.1 * label).astype(np.float32)
    case = TrainingCase("s", image, label, context_volumes(image, (1, 5, 15), -0.2), np.flatnonzero(label))
    case.boundary = np.flatnonzero(surface_shell(label))
    return case


def _config(**kw) -> SamplerConfig:
    cfg = SamplerConfig.from_plans(tiny_plans(), batch_size=8, augment=False)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_surface_shell_is_the_two_voxel_band_around_the_surface():
    label = np.zeros((9, 9, 9), np.uint8)
    label[2:7, 2:7, 2:7] = 1
    shell = surface_shell(label)
    inner = np.zeros_like(label, bool)
    inner[3:6, 3:6, 3:6] = True
    outer = np.zeros_like(label, bool)
    outer[1:8, 1:8, 1:8] = True
    # liver voxels with a non-liver neighbour + non-liver voxels with a liver neighbour
    np.testing.assert_array_equal(shell, outer & ~inner)
    # a liver cut by the volume's edge has no surface there
    full = np.ones((4, 4, 4), np.uint8)
    assert not surface_shell(full).any()


def test_boundary_segments_are_centred_on_the_surface():
    case = _sphere_case()
    batch = SegmentSampler([case], _config(boundary_ratio=0.5, foreground_ratio=0.25), seed=4).batch(3)
    y = batch["y"][:, 0]
    centre = y[:, 7, 7, 7]
    # 4 boundary-centred segments (first), then 2 liver-centred, then 2 background-centred
    assert centre[4:6].tolist() == [1, 1] and centre[6:].tolist() == [0, 0]
    for b in range(4):
        # the centre voxel lies in the shell: within one voxel of both liver and non-liver
        around = y[b, 6:9, 6:9, 6:9]
        assert around.min() == 0 and around.max() == 1, b
    # a sphere of radius 12 voxels: a random liver voxel sees background in its 3^3 block far less often
    liver = SegmentSampler([case], _config(boundary_ratio=0.0, foreground_ratio=1.0), seed=4)
    mixed = [np.ptp(liver.batch(i)["y"][b, 0, 6:9, 6:9, 6:9]) for i in range(4) for b in range(8)]
    assert np.mean(mixed) < 0.5


def test_zero_boundary_ratio_keeps_the_plain_batches():
    case = _sphere_case()
    plain = SegmentSampler([case], _config(), seed=9).batch(5)
    case.boundary = np.zeros(0, np.int64)
    again = SegmentSampler([case], _config(boundary_ratio=0.0), seed=9).batch(5)
    assert all(np.array_equal(a, b) for a, b in zip(plain["x"], again["x"]))
    assert np.array_equal(plain["y"], again["y"])


def test_dice_bce_loss_matches_the_formula():
    logits = torch.tensor([[0.0, 2.0, -1.0, 3.0]])
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    p = torch.sigmoid(logits)
    bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    dice = 2 * (p * y).sum() / (p.sum() + y.sum())
    assert float(DiceBCELoss(smooth=0.0)(logits, y)) == pytest.approx(float(bce + 1 - dice), rel=1e-6)
    # an all-background batch predicted as background costs nothing (the smoothing keeps it finite)
    assert float(DiceBCELoss()(torch.full((2, 3), -30.0), torch.zeros(2, 3))) == pytest.approx(0.0, abs=1e-6)
    assert isinstance(make_loss("bce"), torch.nn.BCEWithLogitsLoss)


def test_poly_schedule_and_step_schedule():
    plans = Plans()
    plans.training.optimizer.lr_schedule = "poly"
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make_scheduler(opt, plans, total_epochs=4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1 * (1 - e / 4) ** 0.9 for e in range(4)])
    plans.training.optimizer.lr_schedule = "step"
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert isinstance(make_scheduler(opt, plans, 4), torch.optim.lr_scheduler.StepLR)


def test_paper_preset_keeps_the_defaults_and_bad_values_are_refused():
    t = load_preset("paper").training
    assert (t.boundary_ratio, t.loss, t.optimizer.lr_schedule) == (0.0, "bce", "step")
    base = Plans().to_dict()
    for key, value, text in (("boundary_ratio", 1.5, "training.boundary_ratio"),
                             ("loss", "dice", "training.loss")):
        bad = {**base, "training": {**base["training"], key: value}}
        with pytest.raises(PlansError, match=text):
            plans_from_dict(bad)
    bad = {**base, "training": {**base["training"], "optimizer": {**base["training"]["optimizer"],
                                                                  "lr_schedule": "cosine"}}}
    with pytest.raises(PlansError, match="lr_schedule"):
        plans_from_dict(bad)
    assert math.isclose(Plans().training.foreground_ratio, 0.5)
