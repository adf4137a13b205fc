"""Shared phantom fixtures (loaded by conftest for every test module).

``phantom_cohort``: a small cohort (10 cases, coarse grids) in all five native layouts, with the
planted hard cases, the LiTS/MSD duplicate and one SIRT patient scanned twice. Returns
``(out_dir, manifest)``; treat the folder as read-only (it is shared by the whole session).

``phantom_sirt_rtstruct``: one SIRT patient folder whose liver mask is a DICOM RTSTRUCT (ROI "Liver").
"""

from __future__ import annotations

from pathlib import Path

import pytest

PHANTOM_COHORT_KW = {"n_cases": 10, "seed": 0, "size_scale": 0.3}


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory) -> tuple[Path, dict]:
    from livseg_pipeline.phantom import write_cohort

    out = tmp_path_factory.mktemp("phantom_cohort")
    manifest = write_cohort(out, **PHANTOM_COHORT_KW)
    return out, manifest


@pytest.fixture(scope="session")
def phantom_sirt_rtstruct(tmp_path_factory) -> tuple[Path, dict]:
    """``(SIRT root folder, manifest)`` of a one-patient SIRT export with an RTSTRUCT liver mask."""
    from livseg_pipeline.phantom import write_cohort

    out = tmp_path_factory.mktemp("phantom_rtstruct")
    manifest = write_cohort(out, n_cases=1, seed=3, layouts=("sirt",), hard_cases=(), plant_duplicate=False,
                            size_scale=0.3, sirt_mask_format="rtstruct")
    return out / "SIRT", manifest
