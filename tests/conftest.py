"""Shared pytest configuration: where ../shared is, and fixture modules of each stage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LVS_SHARED", REPO.parent / "shared"))
IRCAD = SHARED / "data" / "3Dircadb1"
TOTALSEG = SHARED / "data" / "totalsegmentator_examples"

# Each stage may keep fixtures in tests/fixtures_<stage>.py; the ones present are loaded.
pytest_plugins = sorted(f"fixtures_{p.stem[len('fixtures_'):]}"
                        for p in Path(__file__).parent.glob("fixtures_*.py"))


@pytest.fixture(scope="session")
def ircad_dir() -> Path:
    if not IRCAD.is_dir():
        pytest.skip(f"real IRCAD data not available at {IRCAD}")
    return IRCAD


@pytest.fixture(scope="session")
def totalseg_dir() -> Path:
    if not TOTALSEG.is_dir():
        pytest.skip(f"TotalSegmentator examples not available at {TOTALSEG}")
    return TOTALSEG


@pytest.fixture(autouse=True)
def _isolated_data_tree(tmp_path_factory, monkeypatch):
    """Tests never touch a user's data tree: LVS_* point into a temporary folder unless a test sets them."""
    root = tmp_path_factory.mktemp("lvs_tree")
    for var, sub in (("LVS_RAW", "raw"), ("LVS_PREPROCESSED", "preprocessed"), ("LVS_RESULTS", "results")):
        monkeypatch.setenv(var, str(root / sub))
