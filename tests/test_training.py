"""Training on phantoms: DSC rises, outputs are complete, resumption is exact, checkpoints are safe."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from livseg_pipeline.cli.train import main as lvs_train
from livseg_pipeline.io.image_io import read_image
from livseg_pipeline.network.segments import extract_pathway_input
from livseg_pipeline.paths import raw_root
from livseg_pipeline.preprocessing.context import context_volumes
from livseg_pipeline.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from livseg_pipeline.training.data import TrainingCase
from livseg_pipeline.training.sampling import SamplerConfig, SegmentSampler
from livseg_pipeline.training.synthetic import make_phantom_dataset, tiny_plans
from livseg_pipeline.training.trainer import TrainConfig, Trainer, TrainingError

DATASET = "Dataset950_TrainPhantoms"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A raw + preprocessed phantom dataset (6 cases, 3 folds) in its own data tree."""
    root = tmp_path_factory.mktemp("train_tree")
    env = {"LVS_RAW": str(root / "raw"), "LVS_PREPROCESSED": str(root / "pre"), "LVS_RESULTS": str(root / "res")}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        make_phantom_dataset(DATASET, tiny_plans(), n_cases=6, size_scale=0.25, n_folds=3)
    return env


@pytest.fixture()
def in_tree(tree, monkeypatch):
    for k, v in tree.items():
        monkeypatch.setenv(k, v)
    return tree


def test_training_raises_validation_dsc_and_writes_outputs(in_tree, capsys):
    cfg = TrainConfig(DATASET, 0, "tiny", device="cpu", validate_first=True, progress=False, num_threads=1)
    summary = Trainer(cfg).run()
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if line.startswith("epoch ")]) == 5  # untrained + 4
    fold = raw_root().parent / "res" / DATASET / "tiny" / "fold_0"
    rows = list(csv.DictReader(open(fold / "training_log.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(5))
    start = float(rows[0]["val_dsc"])
    vals = [float(r["val_dsc"]) for r in rows[1:] if r["val_dsc"]]
    assert len(vals) == 2  # every 2 epochs
    assert max(vals) > start + 0.2 and max(vals) > 0.3, (start, vals)
    assert summary["best_dsc"] == pytest.approx(max(vals))
    for name in ("checkpoint_best.pth", "checkpoint_latest.pth", "progress.png", "validation_summary.json"):
        assert (fold / name).is_file(), name
    # validation predictions lie on the ORIGINAL grid of the raw label, DSC against it
    for case in ["phantom_000", "phantom_003"]:
        ref = read_image(raw_root() / DATASET / "labelsTr" / f"{case}.nii.gz")
        pred = read_image(fold / "validation" / f"{case}.nii.gz")
        assert pred.array.shape == ref.array.shape and np.allclose(pred.spacing, ref.spacing)
        prob = np.load(fold / "validation" / f"{case}_prob.npz")["probabilities"]
        assert prob.dtype == np.float16 and prob.shape == ref.array.shape
    res = summary["validation"]
    assert res["n_cases"] == 2 and res["mean_dsc"] > 0.25
    # a rerun of a finished fold does nothing
    assert Trainer(cfg).run()["skipped"]


class Crash(RuntimeError):
    pass


def test_kill_and_continue_equals_uninterrupted_run(in_tree, tmp_path, monkeypatch):
    def plans_for(name):
        p = tiny_plans(plans_name=name)
        p.training.iterations_per_epoch, p.training.val_interval_epochs = 3, 100
        p.training.optimizer.lr_decay_every_epochs = 1  # the LR changes every epoch
        p.training.augmentation.elastic.p = 0.5
        return p

    def cfg(name, **kw):
        return TrainConfig(DATASET, 1, "tiny", epochs=3, device="cpu", export=False, progress=False, validate=False,
                           num_threads=1, plans_override=plans_for(name), **kw)

    Trainer(cfg("straight")).run()

    def crash(epoch, it):
        if epoch == 1 and it == 1:
            raise Crash("killed mid-epoch 2")

    with pytest.raises(Crash):
        Trainer(cfg("resumed", num_workers=1), on_iteration=crash).run()
    res = raw_root().parent / "res" / DATASET
    mid = load_checkpoint(res / "resumed" / "fold_1" / "checkpoint_latest.pth")
    assert mid["epoch"] == 1
    with pytest.raises(TrainingError, match="--continue"):
        Trainer(cfg("resumed"))
    Trainer(cfg("resumed", resume=True, num_workers=2)).run()

    a = load_checkpoint(res / "straight" / "fold_1" / "checkpoint_latest.pth")
    b = load_checkpoint(res / "resumed" / "fold_1" / "checkpoint_latest.pth")
    assert a["epoch"] == b["epoch"] == 3
    lr_a, lr_b = a["optimizer"]["param_groups"][0]["lr"], b["optimizer"]["param_groups"][0]["lr"]
    assert lr_a == lr_b == pytest.approx(0.05 * 0.5 ** 3)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


class Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_checkpoint_with_pickled_objects_is_refused(in_tree, tmp_path, capsys):
    bad = tmp_path / "checkpoint_latest.pth"
    torch.save({"format": "livseg-deepmedic-1", "model": {}, "evil": Payload()}, bad)
    with pytest.raises(CheckpointError, match="refused") as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    assert "this would run on load" not in capsys.readouterr().out
    # a plain-value checkpoint round-trips
    good = tmp_path / "ok.pth"
    save_checkpoint(good, {"model": {"w": torch.ones(2)}, "history": [{"epoch": 1, "val_dsc": None}]})
    assert load_checkpoint(good)["history"][0]["epoch"] == 1
    # and lvs_train --continue on a poisoned latest checkpoint fails in one line
    fold = raw_root().parent / "res" / DATASET / "tiny" / "fold_2"
    fold.mkdir(parents=True)
    bad.replace(fold / "checkpoint_latest.pth")
    assert lvs_train([DATASET, "2", "--preset", "tiny", "--continue", "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused" in err[0]


def test_cli_errors_are_one_line(in_tree, capsys):
    assert lvs_train(["Dataset999_Missing", "0", "--device", "cpu"]) == 1
    assert lvs_train([DATASET, "7", "--preset", "tiny", "--device", "cpu"]) == 1
    assert lvs_train([DATASET, "0", "--preset", "nope", "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "no fold 7" in err[1] and "nope" in err[2]


# ---------------------------------------------------------------------------------------------
# sampling and augmentation
# ---------------------------------------------------------------------------------------------
def _analytic_case(seed=0):
    """Image = 0.1 * label + a smooth ramp, so image and label must move together."""
    rng = np.random.default_rng(seed)
    shape = (40, 44, 48)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    label = ((z - 20) ** 2 / 100 + (y - 20) ** 2 / 150 + (x - 18) ** 2 / 120 < 1).astype(np.uint8)
    image = (0.1 * label + 0.0005 * (x - y) + rng.normal(0, 0.001, shape)).astype(np.float32)
    ctx = context_volumes(image, (1, 5, 15), -0.2)
    return TrainingCase("a", image, label, ctx, np.flatnonzero(label))


def _config(**kw):
    cfg = SamplerConfig.from_plans(tiny_plans(), batch_size=6)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_batches_are_reproducible_and_centred():
    case = _analytic_case()
    s = SegmentSampler([case], _config(elastic_p=0.5), seed=3)
    a, b, c = s.batch(7), s.batch(7), s.batch(8)
    assert all(np.array_equal(u, v) for u, v in zip(a["x"], b["x"])) and np.array_equal(a["y"], b["y"])
    assert not np.array_equal(a["x"][0], c["x"][0])
    assert [x.shape for x in a["x"]] == [(6, 1, 35, 35, 35), (6, 1, 23, 23, 23), (6, 1, 21, 21, 21)]
    assert a["y"].shape == (6, 1, 15, 15, 15)
    # half the segments are liver-centred (without augmentation the centre label is exact)
    plain = SegmentSampler([case], _config(augment=False), seed=1).batch(0)
    assert plain["y"][:, 0, 7, 7, 7].tolist() == [1, 1, 1, 0, 0, 0]


def test_flipped_inputs_equal_inputs_of_the_flipped_volume():
    """Flipping the extracted pathway inputs = extracting them from the flipped volume (odd factors,
    centred boxes), so flips keep all three pathways and the label consistent."""
    case = _analytic_case(1)
    start = (3, 10, 21)
    for axis in (1, 2):
        n = case.image.shape[axis]
        flipped_start = list(start)
        flipped_start[axis] = n - start[axis] - 15
        fl_ctx = context_volumes(np.flip(case.image, axis).copy(), (1, 5, 15), -0.2)
        for f, ctx, fctx in zip((1, 5, 15), case.contexts, fl_ctx):
            a = np.flip(extract_pathway_input(ctx, start, 15, f, -0.2), axis)
            b = extract_pathway_input(fctx, flipped_start, 15, f, -0.2)
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_elastic_deformation_moves_image_and_label_together():
    case = _analytic_case(2)
    cfg = _config(elastic_p=1.0, elastic_alpha=(300.0, 300.0), flip_p=0.5, shift_sd=0.0, shift_mean=0.0)
    batch = SegmentSampler([case], cfg, seed=5).batch(0)
    fine = batch["x"][0][:, 0, 10:25, 10:25, 10:25]
    label = batch["y"][:, 0]
    ramp_free = fine > 0.05  # liver voxels are 0.1 above a ramp of at most +-0.03
    assert np.mean(ramp_free == (label > 0)) > 0.97
    unde = SegmentSampler([case], _config(elastic_p=0.0, flip_p=0.5, shift_sd=0.0, shift_mean=0.0), seed=5).batch(0)
    assert not np.array_equal(unde["x"][0], batch["x"][0])


def test_intensity_shift_is_one_value_per_segment_in_normalized_units():
    case = _analytic_case(3)
    cfg = _config(elastic_p=0.0, flip_p=0.0)
    assert cfg.shift_mean == pytest.approx(-0.04) and cfg.shift_sd == pytest.approx(0.04)
    plain = SegmentSampler([case], _config(augment=False), seed=2).batch(4)
    shifted = SegmentSampler([case], cfg, seed=2).batch(4)
    for b in range(6):
        d = shifted["x"][0][b] - plain["x"][0][b]
        inside = (plain["x"][0][b] > -0.15) & (plain["x"][0][b] < 0.15)
        vals = d[inside]
        assert np.ptp(vals) < 1e-6 and not math.isclose(float(vals.mean()), 0.0, abs_tol=1e-9)
