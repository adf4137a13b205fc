"""One synthetic abdominal CT with its whole-liver label: :func:`generate_phantom`.

A seed fixes the patient (anatomy, lesions) and the acquisition (spacing, field of view, contrast
phase, noise). The anatomy is defined in millimetres, so forcing another spacing or ``size_scale``
samples the same patient on another grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from livseg_pipeline.io.image_io import Geometry, Image, reorient
from livseg_pipeline.phantom.anatomy import draw_body_plan, paint_anatomy
from livseg_pipeline.phantom.lesions import draw_lesions, place_lesions
from livseg_pipeline.phantom.shapes import Grid, grid_noise
from livseg_pipeline.phantom.tissues import HU, LESION_TISSUES, LIVER_TISSUES, T, hu_table

HARD_CASES = ("low_contrast", "dense_lesion", "abnormal_position")
MAX_VOXELS = 3.2e6          # random acquisitions stay below this
MAX_GRID_VOXELS = 120e6     # forced spacing / size_scale: refuse what would not fit in memory


@dataclass
class PhantomCase:
    """A generated CT (int16 HU), its whole-liver label (uint8 0/1), tumour and tissue maps on the
    same grid, and a description of how it was made (``meta``)."""

    ct: Image
    label: Image
    meta: dict
    tumour: Image | None = field(default=None, repr=False)
    tissue: Image | None = field(default=None, repr=False)

    @property
    def liver_volume_ml(self) -> float:
        return float(self.label.array.sum()) * self.label.voxel_volume_ml


@dataclass
class Acquisition:
    spacing: tuple[float, float, float]
    slice_thickness: float
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    contrast: str
    noise_sd: float
    blur_mm: float


def _draw_acquisition(rng: np.random.Generator, plan, hard: str | None, contrast: str | None,
                      spacing: tuple[float, float, float] | None, size_scale: float) -> Acquisition:
    if contrast is None:
        contrast = "none" if rng.uniform() < 0.3 else "portal"
    if hard == "low_contrast":
        contrast = "none"
    if contrast not in ("portal", "none"):
        raise ValueError(f"contrast must be 'portal', 'none' or None, got {contrast!r}")
    fov = float(rng.uniform(2 * plan.A + 15, 2 * plan.A + 70))
    cx, cy = rng.uniform(-15, 15), rng.uniform(5, 25)
    top = float(rng.uniform(15, 50))
    bottom = float(rng.uniform(-240, -195)) - (60 if plan.abnormal == "elongated" else 0)
    sx = float(rng.uniform(1.5, 2.5))
    sz = float(rng.choice([2.5, 3.0, 4.0, 5.0]))
    while (fov / sx) ** 2 * (top - bottom) / sz > MAX_VOXELS:
        sx += 0.1
    if spacing is None:
        spacing = (round(sx, 4), round(sx, 4), sz)
    spacing = tuple(float(s) / size_scale for s in spacing)
    if hard == "low_contrast":
        noise = float(rng.uniform(35, 55))
    elif contrast == "none":
        noise = float(rng.uniform(14, 28))
    else:
        noise = float(rng.uniform(7, 18))
    thickness = float(max(spacing[2], rng.choice([1.0, 1.0, 1.25]) * spacing[2]))
    # Only the noise level is scaled for tiny grids: the anatomy keeps its size in mm.
    return Acquisition(spacing, thickness, (cx - fov / 2, cy - fov / 2, bottom), (cx + fov / 2, cy + fov / 2, top),
                       contrast, noise, float(rng.uniform(0.6, 1.0)))


def _case_table(rng: np.random.Generator, contrast: str, hard: str | None) -> dict[T, HU]:
    """The phase's HU table with per-patient jitter of the parenchyma and blood values."""
    table = dict(hu_table(contrast))
    for t in (T.LIVER, T.SPLEEN, T.KIDNEY_CORTEX, T.KIDNEY_MEDULLA, T.PANCREAS, T.AORTA, T.IVC,
              T.PORTAL_VEIN, T.PORTAL_BRANCH, T.HEPATIC_VEIN, T.HEART, T.MUSCLE):
        base = table[t]
        table[t] = HU(base.mean + rng.normal(0, 0.06 * abs(base.mean - 20) + 2), base.texture)
    if hard == "low_contrast":
        # Liver barely separable from its neighbours.
        table[T.LIVER] = HU(float(rng.uniform(46, 52)), 4)
    return table


def _valid_orientation(code: str) -> bool:
    """Three letters, one from each of R/L, A/P, S/I.

    >>> _valid_orientation("RAS"), _valid_orientation("PIR"), _valid_orientation("RRS")
    (True, True, False)
    """
    code = str(code).upper()
    return len(code) == 3 and all(sum(c in pair for c in code) == 1 for pair in ("RL", "AP", "SI"))


def generate_phantom(seed: int, *, hard: str | None = None, contrast: str | None = None,
                     spacing: tuple[float, float, float] | None = None, size_scale: float = 1.0,
                     orientation: str = "LPS", scan_index: int = 0) -> PhantomCase:
    """Generate one synthetic abdominal CT (HU, int16) with its whole-liver label (uint8 0/1).

    ``hard`` plants one of the paper's failure cases: ``'low_contrast'`` (non-contrast, low dose),
    ``'dense_lesion'`` (a large very dark lesion and a very bright one) or ``'abnormal_position'``
    (left lobe far left lateral, or an elongated flat liver). ``contrast`` is ``'portal'`` (liver
    ~110 HU), ``'none'`` (~55 HU) or None (random). ``spacing`` (x, y, z, mm) overrides the random
    spacing; ``size_scale`` < 1 makes every spacing larger by 1/size_scale (tiny test volumes).
    ``orientation`` is the ITK/DICOM code of the output axes (the physical content is the same).
    ``scan_index`` > 0 gives another scan of the same patient (new acquisition, same anatomy).

    >>> case = generate_phantom(1, size_scale=0.25)
    >>> case.ct.array.dtype, case.label.array.dtype, case.ct.array.shape == case.label.array.shape
    (dtype('int16'), dtype('uint8'), True)
    """
    if hard is not None and hard not in HARD_CASES:
        raise ValueError(f"hard must be None or one of {HARD_CASES}, got {hard!r}")
    if size_scale <= 0:
        raise ValueError(f"size_scale must be > 0, got {size_scale}")
    if not _valid_orientation(orientation):
        raise ValueError(f"orientation must be a 3-letter ITK code like 'LPS' or 'RAS', got {orientation!r}")
    if spacing is not None and (len(spacing) != 3 or min(spacing) <= 0):
        raise ValueError(f"spacing must be three positive numbers (x, y, z mm), got {spacing!r}")
    anat_ss, acq_ss = np.random.SeedSequence(seed).spawn(2)
    anat_rng, lesion_rng, place_rng = (np.random.default_rng(s) for s in anat_ss.spawn(3))
    acq_rng, noise_rng = (np.random.default_rng(s) for s in
                          np.random.SeedSequence([seed, 7919, scan_index]).spawn(2)) if scan_index else \
        (np.random.default_rng(s) for s in acq_ss.spawn(2))

    abnormal = None
    if hard == "abnormal_position":
        abnormal = "left_lateral" if seed % 2 == 0 else "elongated"
    plan = draw_body_plan(anat_rng, abnormal)
    acq = _draw_acquisition(acq_rng, plan, hard, contrast, spacing, size_scale)
    grid = Grid.from_extent(acq.lo, acq.hi, acq.spacing)
    if np.prod(grid.shape, dtype=float) > MAX_GRID_VOXELS:
        raise ValueError(f"phantom grid {grid.shape} (z, y, x) would hold {np.prod(grid.shape, dtype=float) / 1e6:.0f} "
                         f"Mvoxel (limit {MAX_GRID_VOXELS / 1e6:.0f}); use a larger spacing or a smaller size_scale")

    tissue = np.zeros(grid.shape, np.uint8)
    paint_anatomy(tissue, grid, plan, anat_rng)
    table = _case_table(lesion_rng, acq.contrast, hard)
    delta = np.zeros(grid.shape, np.float32)
    recipes = draw_lesions(lesion_rng, table[T.LIVER].mean, acq.contrast, hard)
    lesions = place_lesions(tissue, grid, recipes, place_rng, delta, table)

    hu = _render_hu(tissue, delta, table, grid, acq, noise_rng)
    geom = Geometry(tuple(float(s) for s in acq.spacing), grid.origin)
    label = np.isin(tissue, np.asarray(LIVER_TISSUES, np.uint8)).astype(np.uint8)
    tumour = np.isin(tissue, np.asarray(LESION_TISSUES, np.uint8)).astype(np.uint8)
    ct_img, lab_img = Image(hu, geom), Image(label, geom)
    tum_img, tis_img = Image(tumour, geom), Image(tissue, geom)
    if orientation.upper() != "LPS":
        ct_img, lab_img, tum_img, tis_img = (reorient(im, orientation.upper())
                                             for im in (ct_img, lab_img, tum_img, tis_img))
    meta = {
        "seed": int(seed), "scan_index": int(scan_index), "hard": hard, "abnormal": abnormal,
        "contrast": acq.contrast, "noise_sd": round(acq.noise_sd, 2),
        "spacing": [round(s, 5) for s in acq.spacing], "slice_thickness": round(acq.slice_thickness, 3),
        "shape_zyx": list(ct_img.array.shape), "orientation": orientation.upper(),
        "fov_mm": round(acq.hi[0] - acq.lo[0], 1), "size_scale": size_scale,
        "liver_volume_ml": round(float(label.sum()) * float(np.prod(acq.spacing)) / 1000.0, 2),
        "tumour_volume_ml": round(float(tumour.sum()) * float(np.prod(acq.spacing)) / 1000.0, 2),
        "liver_hu_design": round(table[T.LIVER].mean, 1),
        "hu_design": {t.name.lower(): round(v.mean, 1) for t, v in table.items()},
        "lesions": [les.to_dict() for les in lesions],
        "body": {"half_width_mm": round(plan.A, 1), "half_depth_mm": round(plan.B, 1),
                 "fat_mm": round(plan.fat, 1)},
    }
    return PhantomCase(ct_img, lab_img, meta, tum_img, tis_img)


def _render_hu(tissue: np.ndarray, delta: np.ndarray, table: dict[T, HU], grid: Grid, acq: Acquisition,
               rng: np.random.Generator) -> np.ndarray:
    """Tissue map -> HU: mean + organ texture, partial-volume blur, correlated quantum noise."""
    n = max(int(t) for t in T) + 1
    mean = np.zeros(n, np.float32)
    tex = np.zeros(n, np.float32)
    for t, v in table.items():
        mean[t], tex[t] = v.mean, v.texture
    sx, sy, sz = acq.spacing
    hu = mean[tissue] + delta
    texture = grid_noise(rng, grid.shape, (3.0 / sz, 3.0 / sy, 3.0 / sx))
    hu += tex[tissue] * texture
    # Lung: small bright vessels in the parenchyma.
    zl = np.flatnonzero((tissue == T.LUNG).any(axis=(1, 2)))
    if len(zl):
        sl = slice(zl[0], zl[-1] + 1)
        vess = grid_noise(rng, hu[sl].shape, (1.5 / sz, 1.5 / sy, 1.5 / sx))
        hu[sl][(tissue[sl] == T.LUNG) & (vess > 2.0)] += 500
    # Partial volume: in-plane point spread and the slice profile.
    sig = (0.45 * acq.slice_thickness / sz, acq.blur_mm / sy, acq.blur_mm / sx)
    hu = ndimage.gaussian_filter(hu, sig, mode="nearest", truncate=3.0)
    # CT noise is correlated in-plane (reconstruction kernel) and roughly independent across slices.
    noise = grid_noise(rng, grid.shape, (0.0, 0.7, 0.7))
    hu += acq.noise_sd * noise
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
