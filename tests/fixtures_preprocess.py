"""Shared fixtures of the planning/preprocessing stage.

``preprocessed_dataset`` (session): a tiny raw dataset run through ``lvs_plan_preprocess`` (the real
CLI: fingerprint, planner, preprocessing) into its own temporary data tree. It uses the converter's
``raw_dataset`` fixture when that exists, else five synthetic phantoms (one stored RAS, one with
anisotropic spacing). The plans are the ``cpu_demo`` preset on a 4 mm grid (``plans_name``
``cpu_demo_tiny``) so that the volumes are ~0.3 Mvoxel and later stages' tests stay fast.

Tests that run stage commands against it set the environment with ``monkeypatch``::

    for k, v in preprocessed_dataset.env.items():
        monkeypatch.setenv(k, v)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from livseg_pipeline.experiment_planning.plans import Plans, load_plans, load_preset

TINY_SPACING_MM = 4.0
TINY_PLANS_NAME = "cpu_demo_tiny"
PHANTOM_SEEDS = (11, 12, 13, 14, 15)


@dataclass
class PreprocessedDataset:
    raw_root: Path
    preprocessed_root: Path
    name: str                       # DatasetNNN_Name
    plans: Plans
    case_ids: list[str]
    summary: dict = field(default_factory=dict)

    @property
    def raw_dir(self) -> Path:
        return self.raw_root / self.name

    @property
    def plans_dir(self) -> Path:
        """``$LVS_PREPROCESSED/DatasetNNN_Name/<plans_name>`` (plans.json, CASE.npz, CASE.json)."""
        return self.preprocessed_root / self.name / self.plans.plans_name

    @property
    def env(self) -> dict[str, str]:
        return {"LVS_RAW": str(self.raw_root), "LVS_PREPROCESSED": str(self.preprocessed_root)}


def tiny_preset(path: Path) -> Path:
    """The cpu_demo preset at 4 mm, as a JSON file ``lvs_plan_preprocess --preset`` accepts."""
    plans = load_preset("cpu_demo")
    plans.plans_name = TINY_PLANS_NAME
    plans.description = f"cpu_demo at {TINY_SPACING_MM} mm for fast tests"
    plans.preprocessing.target_spacing_mm = [TINY_SPACING_MM] * 3
    path.write_text(json.dumps(plans.to_dict(), indent=2))
    return path


def write_phantom_raw_dataset(raw_root: Path, name: str = "Dataset901_PreprocPhantoms", seeds=PHANTOM_SEEDS,
                              size_scale: float = 0.5) -> Path:
    """A raw dataset in the nnU-Net layout made of small phantoms (same layout lvs_convert writes,
    without fingerprint.json: the planner extracts it)."""
    from livseg_pipeline.io.image_io import write_image
    from livseg_pipeline.phantom.generator import generate_phantom

    raw = raw_root / name
    cases = {}
    for i, seed in enumerate(seeds):
        orientation = "RAS" if i == 1 else "LPS"
        spacing = (1.5, 1.5, 3.5) if i == 2 else None
        ph = generate_phantom(seed, size_scale=size_scale, orientation=orientation, spacing=spacing)
        case = f"phantom_{i:03d}"
        write_image(ph.ct, raw / "imagesTr" / f"{case}_0000.nii.gz")
        write_image(ph.label, raw / "labelsTr" / f"{case}.nii.gz")
        cases[case] = {"source": "phantom", "patient_id": case, "group_id": case}
    ids = sorted(cases)
    ds = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "numTraining": len(ids),
          "file_ending": ".nii.gz", "cases": cases}
    (raw / "dataset.json").write_text(json.dumps(ds, indent=2))
    splits = [{"train": [c for c in ids if c != v], "val": [v]} for v in ids]
    (raw / "splits_final.json").write_text(json.dumps(splits, indent=2))
    return raw


def _raw_from_converter(request) -> Path | None:
    try:
        raw = request.getfixturevalue("raw_dataset")
    except pytest.FixtureLookupError:
        return None
    for attr in ("raw_dir", "path", "dataset_dir"):
        if hasattr(raw, attr):
            raw = getattr(raw, attr)
            break
    raw = Path(raw)
    return raw if (raw / "imagesTr").is_dir() else None


@pytest.fixture(scope="session")
def preprocessed_dataset(request, tmp_path_factory) -> PreprocessedDataset:
    from livseg_pipeline.cli.plan_preprocess import main

    root = tmp_path_factory.mktemp("preprocessed_dataset")
    raw = _raw_from_converter(request)
    if raw is None:
        raw = write_phantom_raw_dataset(root / "raw")
    preset = tiny_preset(root / f"{TINY_PLANS_NAME}.json")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LVS_RAW", str(raw.parent))
        mp.setenv("LVS_PREPROCESSED", str(root / "preprocessed"))
        rc = main(["-d", raw.name, "--preset", str(preset), "-np", "2"])
    assert rc == 0, "lvs_plan_preprocess failed on the fixture dataset"
    plans_dir = root / "preprocessed" / raw.name / TINY_PLANS_NAME
    summary = json.loads((plans_dir / "preprocessing_summary.json").read_text())
    return PreprocessedDataset(raw.parent, root / "preprocessed", raw.name, load_plans(plans_dir / "plans.json"),
                               sorted(summary["cases"]), summary)
