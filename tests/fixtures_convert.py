"""Session fixtures of the conversion stage, for its own tests and the later stages' tests.

* ``raw_dataset``: the ``phantom_cohort`` (tests/fixtures_phantom.py; all five native layouts) plus a
  generic ``imagesTr/labelsTr`` folder, converted by ``lvs_convert`` into one raw dataset
  ``Dataset100_Phantoms``. Returns a
  :class:`ConvertedDataset` (``.path``, ``.cohort_dir``, ``.manifest``, ``.reports``, ``.case_of``).
* ``ircad_raw``: the two real 3D-IRCADb cases converted into ``Dataset101_Ircad`` (skips when
  ../shared is absent).

Both live in their own session temporary ``LVS_RAW``; tests must not modify them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

PHANTOM_SOURCES = (("lits", "LiTS"), ("msd", "Task03_Liver"), ("sliver07", "SLIVER07"),
                   ("ircadb", "3Dircadb1"), ("sirt", "SIRT"))
GENERIC_SEEDS = (901, 902)


@dataclass
class ConvertedDataset:
    path: Path                      # $LVS_RAW/DatasetNNN_Name
    raw_root: Path                  # the LVS_RAW it was written under
    cohort_dir: Path | None = None
    manifest: dict | None = None
    reports: dict = field(default_factory=dict)   # source -> run_conversion report
    case_of: dict = field(default_factory=dict)   # manifest case id -> converted case id


def _convert(source: str, folder: Path, dataset_id: int, name: str, raw_root: Path) -> dict:
    from dataset_conversion import CONVERTERS, run_conversion

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LVS_RAW", str(raw_root))
        return run_conversion(CONVERTERS[source](), folder, dataset_id, name, num_processes=2, verbose=False)


def write_generic(folder: Path, seeds=GENERIC_SEEDS, size_scale: float = 0.35) -> Path:
    """A generic nnU-Net-like folder (imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz) of phantoms."""
    from livseg_pipeline.io.image_io import write_image
    from livseg_pipeline.phantom.generator import generate_phantom

    for seed in seeds:
        case = generate_phantom(seed, size_scale=size_scale)
        write_image(case.ct, folder / "imagesTr" / f"generic_{seed}_0000.nii.gz")
        write_image(case.label, folder / "labelsTr" / f"generic_{seed}.nii.gz")
    return folder


@pytest.fixture(scope="session")
def raw_dataset(phantom_cohort, tmp_path_factory) -> ConvertedDataset:
    cohort_dir, manifest = phantom_cohort
    raw_root = tmp_path_factory.mktemp("raw_convert")
    ds = ConvertedDataset(path=raw_root / "Dataset100_Phantoms", raw_root=raw_root, cohort_dir=Path(cohort_dir),
                          manifest=manifest)
    for source, sub in PHANTOM_SOURCES:
        if (Path(cohort_dir) / sub).is_dir():
            ds.reports[source] = _convert(source, Path(cohort_dir) / sub, 100, "Phantoms", raw_root)
    generic = write_generic(tmp_path_factory.mktemp("generic_layout"))
    ds.reports["nifti"] = _convert("nifti", generic, 100, "Phantoms", raw_root)

    from livseg_pipeline.utils.files import load_json

    by_path = {p: c for c, rec in load_json(ds.path / "dataset.json")["cases"].items()
               for p in rec["original_paths"]}
    for rec in manifest["cases"]:
        image = str((Path(cohort_dir) / rec["files"]["image"]).resolve())
        if image in by_path:
            ds.case_of[rec["case_id"]] = by_path[image]
    return ds


@pytest.fixture(scope="session")
def ircad_raw(ircad_dir, tmp_path_factory) -> ConvertedDataset:
    raw_root = tmp_path_factory.mktemp("raw_ircad")
    report = _convert("ircadb", ircad_dir, 101, "Ircad", raw_root)
    return ConvertedDataset(path=raw_root / "Dataset101_Ircad", raw_root=raw_root, reports={"ircadb": report})


@pytest.fixture
def use_raw_root(monkeypatch):
    """Point LVS_RAW at a converted dataset's root for one test: ``use_raw_root(ds)``."""
    def apply(ds: ConvertedDataset) -> Path:
        monkeypatch.setenv("LVS_RAW", str(ds.raw_root))
        return ds.raw_root
    return apply
