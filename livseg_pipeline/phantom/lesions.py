"""Liver lesions: hypo- and hyperdense tumours, cysts and (for the hard case) very dense or very dark
ones. Lesions replace liver tissue only, so they stay inside the whole-liver label."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from livseg_pipeline.phantom.shapes import Grid, ellipsoid, ellipsoid_level, rotation
from livseg_pipeline.phantom.tissues import LIVER_TISSUES, T


@dataclass
class Lesion:
    center: tuple[float, float, float]    # mm, LPS
    radii: tuple[float, float, float]     # mm
    kind: str                             # "hypo" | "hyper" | "cyst" | "dense"
    hu: float                             # mean HU of the lesion
    rim: float = 0.0                      # extra HU on a peripheral ring (rim enhancement)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


KIND_TISSUE = {"hypo": T.LESION_HYPO, "hyper": T.LESION_HYPER, "cyst": T.CYST, "dense": T.DENSE_LESION}


def draw_lesions(rng: np.random.Generator, liver_hu: float, contrast: str, hard: str | None) -> list[dict]:
    """Random lesion recipes (kind, size, HU). Centres are chosen later inside the painted liver."""
    n = int(rng.choice([0, 1, 1, 2, 2, 3, 4, 6]))
    recipes = []
    for _ in range(n):
        kind = str(rng.choice(["hypo", "hypo", "hypo", "hyper", "cyst"]))
        size = float(rng.uniform(4, 10) if rng.uniform() < 0.5 else rng.uniform(10, 28))
        if kind == "hypo":
            hu = liver_hu - rng.uniform(25, 60) * (1.0 if contrast == "portal" else 0.5)
        elif kind == "hyper":
            hu = liver_hu + rng.uniform(25, 60) * (1.0 if contrast == "portal" else 0.3)
        else:
            hu = rng.uniform(2, 15)
        rim = float(rng.uniform(25, 45)) if kind == "hypo" and contrast == "portal" and rng.uniform() < 0.4 else 0.0
        recipes.append({"kind": kind, "size": size, "hu": float(hu), "rim": rim})
    if hard == "dense_lesion":
        # The paper's failure: a round lesion with a very large density difference to the liver.
        recipes.append({"kind": "cyst", "size": float(rng.uniform(30, 40)), "hu": float(rng.uniform(-5, 8)),
                        "rim": 0.0, "round": True})
        recipes.append({"kind": "dense", "size": float(rng.uniform(12, 18)), "hu": float(rng.uniform(350, 600)),
                        "rim": 0.0, "round": True})
    return recipes


def place_lesions(tissue: np.ndarray, grid: Grid, recipes: list[dict], rng: np.random.Generator,
                  delta: np.ndarray, table_hu: dict) -> list[Lesion]:
    """Paint lesions into the liver (tissue map) and their per-lesion HU offsets into ``delta``."""
    liver = tissue == T.LIVER
    if not liver.any() or not recipes:
        return []
    cand = np.flatnonzero(liver.ravel())
    lesions = []
    liver_ids = np.asarray(LIVER_TISSUES, np.uint8)
    for rec in sorted(recipes, key=lambda r: -r["size"]):
        # A centre where most of a ball of ~the lesion size is liver (tries random liver voxels;
        # cheaper than a distance transform of the whole liver).
        best, best_frac = None, -1.0
        for _ in range(25):
            iz, iy, ix = np.unravel_index(cand[rng.integers(len(cand))], liver.shape)
            c = (float(grid.x[ix]), float(grid.y[iy]), float(grid.z[iz]))
            box, ball = ellipsoid(grid, c, (rec["size"] * 1.1,) * 3)
            frac = float(liver[box.slices][ball].mean()) if ball.any() else 0.0
            if frac > best_frac:
                best, best_frac = (iz, iy, ix), frac
            if frac > 0.97:
                break
        iz, iy, ix = best
        c = (float(grid.x[ix]), float(grid.y[iy]), float(grid.z[iz]))
        if rec.get("round"):
            radii = (rec["size"],) * 3
        else:
            radii = tuple(float(rec["size"] * f) for f in rng.uniform(0.75, 1.2, 3))
        rot = rotation(*rng.uniform(-90, 90, 3))
        box, m = ellipsoid(grid, c, radii, rot)
        view = tissue[box.slices]
        m &= np.isin(view, liver_ids)
        tis = KIND_TISSUE[rec["kind"]]
        view[m] = tis
        liver[box.slices][m] = False
        delta[box.slices][m] = rec["hu"] - table_hu[tis].mean
        if rec["rim"] > 0:
            inner = ellipsoid_level(box, c, tuple(r - 2.5 for r in radii), rot) <= 1
            ring = m & ~inner
            delta[box.slices][ring] += rec["rim"]
        lesions.append(Lesion(c, radii, rec["kind"], rec["hu"], rec["rim"]))
    return lesions
