"""Plans: the presets hold the paper's numbers, plans.json round-trips, bad fields fail clearly,
and the planner fills in data- and hardware-dependent fields with reasons."""

from __future__ import annotations

import json

import pytest

from livseg_pipeline.experiment_planning.planner import (
    GIB,
    Hardware,
    estimate_inference_bytes,
    estimate_training_bytes,
    plan_and_save,
    plan_experiment,
    preprocessing_processes,
)
from livseg_pipeline.experiment_planning.plans import (
    Plans,
    PlansError,
    load_plans,
    load_preset,
    plans_from_dict,
    preprocessing_hash,
    preset_names,
    save_plans,
)


def test_paper_preset_holds_the_papers_numbers():
    p = load_preset("paper")
    pp = p.preprocessing
    assert pp.target_spacing_mm == [1.4, 1.4, 1.4]
    assert pp.hu_window == [-200.0, 200.0] and pp.intensity_range == [-0.2, 0.2]
    assert pp.median_filter_size == 3 and pp.crop.keep_full_z
    assert p.network.pathway_factors == [1, 5, 15] and all(len(f) == 10 for f in p.network.pathway_features)
    assert p.training.segment_size_out == 15 and p.training.batch_size == 16
    assert p.training.optimizer.lr == 0.007 and p.training.optimizer.lr_decay_every_epochs == 32
    assert p.training.val_interval_epochs == 8 and p.training.loss == "bce"
    a = p.training.augmentation
    assert (a.hu_shift_mean, a.hu_shift_sd, a.flip_axes, a.flip_p) == (-40.0, 40.0, ["x", "y"], 0.5)
    assert p.inference.threshold == 0.5


def test_cpu_demo_preset_uses_2mm_and_the_same_design():
    demo, paper = load_preset("cpu_demo"), load_preset("paper")
    assert demo.preprocessing.target_spacing_mm == [2.0, 2.0, 2.0]
    assert demo.network.pathway_factors == paper.network.pathway_factors
    assert demo.preprocessing.hu_window == paper.preprocessing.hu_window
    assert set(preset_names()) >= {"paper", "cpu_demo"}


@pytest.mark.parametrize("name", ["paper", "cpu_demo"])
def test_plans_json_round_trips(tmp_path, name):
    p = load_preset(name)
    p.planner_notes = ["a note"]
    p.planner_info = {"hardware": {"device": "cpu"}}
    save_plans(p, tmp_path / "plans.json")
    q = load_plans(tmp_path / "plans.json")
    assert q == p and q.to_dict() == p.to_dict()
    assert plans_from_dict(json.loads((tmp_path / "plans.json").read_text())) == p


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["preprocessing"].update(target_spacing=[1, 1, 1]),
     "unknown plans field(s) 'preprocessing.target_spacing' (did you mean 'preprocessing.target_spacing_mm'?)"),
    (lambda d: d["training"].update(batch_size="16"), "plans field 'training.batch_size' must be an integer"),
    (lambda d: d["training"]["optimizer"].update(lr=-1), "plans field 'training.optimizer.lr' must be > 0"),
    (lambda d: d["inference"].update(segment_size_out=50), "plans field 'inference.segment_size_out' must be a "
                                                           "positive multiple of 15"),
    (lambda d: d["preprocessing"].update(median_filter_size=4), "'preprocessing.median_filter_size' must be 0"),
    (lambda d: d["preprocessing"].update(hu_window=[200, -200]), "'preprocessing.hu_window'"),
    (lambda d: d["preprocessing"]["crop"].update(margin_mm=-1), "'preprocessing.crop.margin_mm'"),
    (lambda d: d["training"]["augmentation"].update(flip_axes=["q"]), "'training.augmentation.flip_axes'"),
    (lambda d: d.update(network=[]), "plans field 'network' must be an object"),
    (lambda d: d.update(planner_info=[]), "plans field 'planner_info' must be an object"),
])
def test_wrong_field_gives_a_clear_error_naming_it(tmp_path, edit, message):
    d = load_preset("paper").to_dict()
    edit(d)
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(d))
    with pytest.raises(PlansError) as e:
        load_plans(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_broken_json_and_unknown_preset(tmp_path):
    with pytest.raises(PlansError, match="no plans preset 'papr'; available: .*paper"):
        load_preset("papr")
    bad = tmp_path / "plans.json"
    bad.write_text('{"plans_name": "x",')
    with pytest.raises(PlansError, match=r"plans.json: not valid JSON \(") as e:
        load_plans(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(PlansError, match="no such plans file"):
        load_plans(tmp_path / "missing.json")


def test_missing_fields_take_the_papers_defaults():
    p = plans_from_dict({"plans_name": "x", "training": {"batch_size": 4}})
    assert p.training.batch_size == 4 and p.preprocessing.target_spacing_mm == [1.4, 1.4, 1.4]


def test_preprocessing_hash_tracks_only_preprocessing():
    a, b = load_preset("paper"), load_preset("paper")
    b.training.batch_size = 2
    b.planner_notes = ["x"]
    assert preprocessing_hash(a) == preprocessing_hash(b)
    b.preprocessing.crop.margin_mm = 5.0
    assert preprocessing_hash(a) != preprocessing_hash(b)


# ----------------------------------------------------------------------------------------------
# Planner
# ----------------------------------------------------------------------------------------------
def fake_raw_dataset(tmp_path, liver_fraction=0.03, n=4):
    raw = tmp_path / "Dataset950_Plan"
    raw.mkdir()
    cases = {f"c{i}": {"shape": [120, 512, 512], "spacing": [0.7, 0.7, 2.5], "liver_volume_ml": 1500.0,
                       "liver_fraction": liver_fraction, "verdicts": {}} for i in range(n)}
    cases["c1"]["verdicts"] = {"liver_on_left": "the liver lies on the patient's left"}
    (raw / "fingerprint.json").write_text(json.dumps({"cases": cases, "summary": {"median_spacing": [0.7, 0.7, 2.5],
                                                                                   "median_shape": [120, 512, 512]}}))
    return raw


def test_planner_keeps_paper_values_when_memory_allows(tmp_path):
    raw = fake_raw_dataset(tmp_path)
    hw = Hardware("cuda", "test GPU", 40 * GIB, 60 * GIB, 16)
    plans = plan_experiment(raw, "paper", hardware=hw, verbose=False)
    assert plans.dataset_name == "Dataset950_Plan"
    assert plans.training.batch_size == 16 and plans.training.foreground_ratio == 0.5
    assert plans.training.num_workers == 12
    s = plans.inference.segment_size_out
    assert s % 15 == 0 and s > 75                               # big GPU: big segments ...
    assert s <= 225                                             # ... but not beyond the volume (~214 voxels)
    assert estimate_inference_bytes(plans, s) <= 0.4 * 40 * GIB
    notes = " ".join(plans.planner_notes)
    assert "training.batch_size = 16 (preset value" in notes and "inference.segment_size_out" in notes
    assert "c1: liver_on_left" in notes
    assert plans.planner_info["hardware"]["device"] == "cuda"
    # the fixed recipe is untouched
    assert plans.preprocessing == load_preset("paper").preprocessing and plans.network == load_preset("paper").network


def test_planner_shrinks_batch_and_segment_on_small_memory(tmp_path):
    raw = fake_raw_dataset(tmp_path)
    hw = Hardware("cpu", "cpu", 2 * GIB, 2 * GIB, 2)
    plans = plan_experiment(raw, "paper", hardware=hw, verbose=False)
    assert 1 <= plans.training.batch_size < 16
    assert estimate_training_bytes(plans, plans.training.batch_size) <= 0.25 * 2 * GIB
    assert plans.inference.segment_size_out < 75
    assert plans.training.num_workers == 1
    assert any("more than 25% of 2.0 GiB" in n for n in plans.planner_notes)


def test_planner_raises_foreground_ratio_for_liver_dominated_crops(tmp_path):
    raw = fake_raw_dataset(tmp_path, liver_fraction=0.5)
    plans = plan_experiment(raw, "paper", hardware=Hardware("cpu", "cpu", 16 * GIB, 16 * GIB, 4), verbose=False)
    assert 0.5 < plans.training.foreground_ratio <= 0.9


def test_plans_json_is_kept_unless_replan(tmp_path):
    raw = fake_raw_dataset(tmp_path)
    pre = tmp_path / "pre" / raw.name
    hw = Hardware("cpu", "cpu", 8 * GIB, 8 * GIB, 2)
    plans, path, planned = plan_and_save(raw, pre, "cpu_demo", verbose=False, hardware=hw)
    assert planned and path == pre / "cpu_demo" / "plans.json"
    d = json.loads(path.read_text())
    d["training"]["epochs"] = 3                         # a hand edit
    path.write_text(json.dumps(d))
    kept, _, planned = plan_and_save(raw, pre, "cpu_demo", verbose=False)
    assert not planned and kept.training.epochs == 3
    again, _, planned = plan_and_save(raw, pre, "cpu_demo", replan=True, verbose=False, hardware=hw)
    assert planned and again.training.epochs == load_preset("cpu_demo").training.epochs


def test_preprocessing_workers_bounded_by_memory(tmp_path):
    fp = json.loads((fake_raw_dataset(tmp_path) / "fingerprint.json").read_text())
    n, why = preprocessing_processes(fp, 8, Hardware("cpu", "cpu", 1 * GIB, 1 * GIB, 8))
    assert n == 1 and "asked 8" in why
    n, _ = preprocessing_processes(fp, 3, Hardware("cpu", "cpu", 64 * GIB, 64 * GIB, 8))
    assert n == 3


def test_plans_default_object_is_valid():
    assert Plans().validate().plans_name == "paper"


def test_every_plans_field_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "documentation" / "plans.md").read_text(encoding="utf-8")

    def leaves(d: dict, prefix: str = ""):
        for k, v in d.items():
            if isinstance(v, dict) and k != "planner_info":
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield prefix, k

    missing = []
    for prefix, key in leaves(Plans().to_dict()):
        section = prefix.split(".")[0]
        sub = prefix[len(section) + 1:] if section else ""
        if f"`{sub}{key}`" not in doc:
            missing.append(f"{prefix}{key}")
    assert not missing, f"documentation/plans.md does not describe: {missing}"
