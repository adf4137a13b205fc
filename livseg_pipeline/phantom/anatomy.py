"""Procedural upper-abdomen anatomy: draws the random body plan of one patient and paints it into a
tissue map.

Coordinates are LPS in mm: x to the patient's left, y to posterior, z to superior; z = 0 is the top of
the right diaphragm dome. The liver sits on the patient's right (negative x).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from livseg_pipeline.phantom.shapes import Box, Grid, SmoothField, ellipsoid, ellipsoid_level, rotation, tube
from livseg_pipeline.phantom.tissues import T

ABDOMEN = (T.VISCERAL_FAT, T.BOWEL_WALL, T.BOWEL_GAS, T.BOWEL_FLUID)


@dataclass
class BodyPlan:
    """All random anatomical parameters of one patient (drawn once per seed)."""

    A: float                  # body half-width (mm)
    B: float                  # body half-depth (mm)
    fat: float                # subcutaneous fat thickness
    muscle: float             # abdominal wall muscle thickness
    rv: float                 # vertebral body radius
    left_dome: float          # height of the left diaphragm dome relative to the right (mm, <0)
    liver_scale: float        # set by calibrate_liver() so that the liver reaches liver_target_ml
    liver_target_ml: float
    liver_shift: tuple[float, float, float]
    liver_yaw: float
    liver_warp: float         # amplitude of the smooth liver deformation (mm)
    left_lobe: float          # relative size of the left lobe
    riedel: float             # caudal extension of the lateral right lobe (mm)
    spleen_scale: float
    stomach_fill: float       # fraction of the stomach (anterior part) filled with gas
    gallbladder: bool
    abnormal: str | None = None
    fields: dict = field(default_factory=dict, repr=False)

    @property
    def Ai(self) -> float:  # abdominal cavity half-width
        return self.A - self.fat - self.muscle

    @property
    def Bi(self) -> float:
        return self.B - self.fat - self.muscle

    @property
    def y_spine(self) -> float:
        """y of the vertebral body centre."""
        return self.B - self.fat - 36.0 - self.rv


def draw_body_plan(rng: np.random.Generator, abnormal: str | None = None) -> BodyPlan:
    """Draw a patient. ``abnormal`` plants an abnormal liver: ``'left_lateral'`` (left lobe reaching the
    far left, around the spleen) or ``'elongated'`` (long caudal right lobe, flat in AP)."""
    A = rng.uniform(150, 185)
    target = rng.uniform(1250, 2000) if abnormal is None else rng.uniform(1700, 2400)
    plan = BodyPlan(
        A=A, B=A * rng.uniform(0.74, 0.84), fat=rng.uniform(8, 32), muscle=rng.uniform(9, 15),
        rv=rng.uniform(17, 21), left_dome=-rng.uniform(8, 22), liver_scale=1.0, liver_target_ml=target,
        liver_shift=tuple(rng.uniform(-8, 8, 3)), liver_yaw=rng.uniform(-6, 6),
        liver_warp=rng.uniform(6, 11), left_lobe=rng.uniform(0.75, 1.2), riedel=rng.uniform(0, 25),
        spleen_scale=rng.uniform(0.85, 1.2), stomach_fill=rng.uniform(0.15, 0.5),
        gallbladder=bool(rng.uniform() > 0.15), abnormal=abnormal)
    # Smooth random fields (fixed per patient, independent of the grid).
    for name, scale in (("liver_dx", 70), ("liver_dy", 70), ("liver_dz", 70), ("liver_bump", 35),
                        ("body", 90), ("bowel1", 45), ("bowel2", 45), ("bowel3", 30)):
        plan.fields[name] = SmoothField(rng, scale)
    plan.fields["vessel_seed"] = int(rng.integers(2**31))
    calibrate_liver(plan)
    return plan


def calibrate_liver(plan: BodyPlan, spacing: float = 5.0) -> None:
    """Scale the liver so its volume (measured on a coarse grid in mm, so independent of the final
    sampling) is close to ``plan.liver_target_ml``."""
    grid = Grid.from_extent((-plan.A, -plan.B, -320), (plan.A, plan.B, 40), (spacing,) * 3)
    for _ in range(3):
        box, m = liver_mask(grid, plan)
        vol = float(m.sum()) * spacing ** 3 / 1000.0
        if vol <= 0:
            break
        plan.liver_scale *= float(np.clip((plan.liver_target_ml / vol) ** (1 / 3), 0.8, 1.25))


def _put(tissue: np.ndarray, box: Box, mask: np.ndarray, value: T, only=None) -> None:
    """Paint ``value`` where ``mask``; with ``only``, just over those tissues."""
    view = tissue[box.slices]
    if only is not None:
        mask = mask & np.isin(view, np.asarray(only, np.uint8))
    view[mask] = value


def diaphragm_z(plan: BodyPlan, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Height of the diaphragm over (x, y): two domes, lower at the periphery and posteriorly."""
    def dome(xc, top):
        d = np.sqrt((X - xc) ** 2 + (0.8 * (Y + 0.1 * plan.Bi)) ** 2) / 100.0
        return top - 40 * d ** 2 - 22 * d ** 4
    zr = dome(-0.42 * plan.Ai, 0.0)
    zl = dome(0.42 * plan.Ai, plan.left_dome)
    return np.maximum(zr, zl) - 0.35 * np.maximum(Y - 0.1 * plan.Bi, 0)


def body_level(plan: BodyPlan, grid: Grid, shrink: float = 0.0) -> np.ndarray:
    """Superellipse level (y, x) of the body outline shrunk by ``shrink`` mm (<= 1 inside); the
    section changes slowly along z through :func:`body_scale`."""
    plane = grid.box((-1e9, -1e9, -1e9), (1e9, 1e9, 1e9))
    plane = Box((slice(0, 1),) + plane.slices[1:], plane.X, plane.Y, np.full((1, 1, 1), -60.0, np.float32))
    wob = 1.0 + 0.025 * plan.fields["body"].sample(plane)[0]
    X, Y = plane.X[0], plane.Y[0]
    a, b = (plan.A - shrink) * wob, (plan.B - shrink) * wob
    # Flatter back (the patient lies on the table).
    yy = np.where(Y > 0, np.abs(Y / b) ** 2.8, (Y / b) ** 2)
    return np.abs(X / a) ** 2.2 + yy


def body_scale(plan: BodyPlan, z: np.ndarray) -> np.ndarray:
    """Level threshold along z: the chest section is slightly larger than the waist."""
    return (1.0 + 0.04 * np.clip((z + 60) / 120.0, -1, 1)) ** 2.2


def paint_body(tissue: np.ndarray, grid: Grid, plan: BodyPlan) -> dict[str, np.ndarray]:
    """Skin/fat, muscle wall, cavity contents (visceral fat), thorax (lungs, heart) and the table."""
    box = grid.full()
    sc = body_scale(plan, box.Z)
    body = body_level(plan, grid)[None] <= sc
    wall = body_level(plan, grid, plan.fat)[None] <= sc
    cavity = body_level(plan, grid, plan.fat + plan.muscle)[None] <= sc
    tissue[body] = T.FAT
    tissue[wall] = T.MUSCLE
    zd = diaphragm_z(plan, box.X, box.Y)
    below = box.Z < zd - 4
    above = box.Z > zd
    tissue[cavity & below] = T.VISCERAL_FAT
    thorax = cavity & above
    tissue[thorax] = T.LUNG
    # Table under the patient.
    ytab = plan.B + 3
    tb = grid.box((-230, ytab, -1e9), (230, ytab + 12, 1e9))
    _put(tissue, tb, np.broadcast_to(np.abs(tb.X) < 230, tb.shape), T.TABLE, only=(T.AIR,))
    return {"cavity": cavity, "thorax": thorax, "zd": zd}


def paint_heart(tissue: np.ndarray, grid: Grid, plan: BodyPlan, thorax: np.ndarray) -> None:
    """Heart and pericardial fat resting on the diaphragm, and posterior mediastinal fat."""
    c = (22.0, -0.25 * plan.Bi, 48.0)
    r = (82.0, 62.0, 58.0)
    rot = rotation(yaw=30)
    for extra, tis in ((5.0, T.FAT), (0.0, T.HEART)):
        box, m = ellipsoid(grid, c, [v + extra for v in r], rot)
        _put(tissue, box, m & thorax[box.slices], tis)
    # Posterior mediastinum (aorta, oesophagus, azygos) between the lungs, in front of the spine.
    ys = plan.y_spine
    box = grid.box((-30, ys - plan.rv - 35, -1e9), (34, ys + plan.rv, 1e9))
    _put(tissue, box, thorax[box.slices], T.VISCERAL_FAT)


def paint_spine_ribs(tissue: np.ndarray, grid: Grid, plan: BodyPlan, rng: np.random.Generator) -> None:
    """Vertebrae (cortex, marrow, discs, canal, posterior arch), paraspinal muscles, psoas, ribs."""
    ys, rv = plan.y_spine, plan.rv
    # Paraspinal muscles and psoas first; bone is painted over them.
    for sx in (-1, 1):
        box, m = ellipsoid(grid, (sx * (rv + 26), ys + rv + 22, -100), (40, 26, 1e4))
        _put(tissue, box, m, T.MUSCLE, only=(T.VISCERAL_FAT, T.LUNG, T.MUSCLE))
        box = grid.box((sx * (rv + 14) - 40, ys - 40, -1e9), (sx * (rv + 14) + 40, ys + 40, -110))
        if not box.empty:
            rad = np.clip(6 + 0.22 * (-110 - box.Z), 6, 24)
            m = (box.X - sx * (rv + 14)) ** 2 + ((box.Y - ys + 4) / 1.1) ** 2 <= rad ** 2
            _put(tissue, box, m, T.MUSCLE, only=ABDOMEN + (T.FAT,))
    # Diaphragmatic crura wrapping the aorta in front of the spine (the liver stops at them).
    box = grid.box((-rv - 30, ys - 2 * rv - 30, -160), (rv + 30, ys + rv, 0))
    if not box.empty:
        m = ((box.X / (rv + 18)) ** 2 + ((box.Y - ys + 0.4 * rv) / (rv + 14)) ** 2 <= 1) & (box.Z > -150)
        _put(tissue, box, m, T.MUSCLE, only=(T.VISCERAL_FAT,))
    # Vertebral body: cortex rim, marrow, discs every ~30 mm.
    box = grid.box((-rv - 1, ys - rv - 1, -1e9), (rv + 1, ys + rv + 1, 1e9))
    rr = np.sqrt(box.X ** 2 + (box.Y - ys) ** 2)
    period, phase = 31.0, rng.uniform(0, 31)
    disc = (((box.Z - phase) % period) < 7.0)
    _put(tissue, box, np.broadcast_to(rr <= rv, box.shape), T.CORTICAL_BONE)
    _put(tissue, box, np.broadcast_to(rr <= rv - 2.2, box.shape), T.CANCELLOUS_BONE)
    _put(tissue, box, (rr <= rv) & disc, T.DISC)
    # Posterior arch: canal, lamina, spinous process (absent at disc levels).
    yc = ys + rv + 9
    box = grid.box((-rv - 10, ys, -1e9), (rv + 10, ys + rv + 60, 1e9))
    disc = (((box.Z - phase) % period) < 7.0)
    rc = np.sqrt(box.X ** 2 + (box.Y - yc) ** 2)
    arch = ((rc <= 15) & (box.Y >= yc - 2)) | ((np.abs(box.X) <= 4) & (box.Y >= yc) & (box.Y <= yc + 45))
    arch = arch | ((np.abs(box.X) <= rv + 8) & (np.abs(box.Y - yc + 3) <= 4))   # pedicles / transverse
    _put(tissue, box, arch & ~disc, T.CANCELLOUS_BONE)
    _put(tissue, box, np.broadcast_to(rc <= 8.5, box.shape), T.CSF)
    # Ribs: tubes in the chest wall descending anteriorly; lower ribs only posterolateral.
    ar, br = plan.Ai + 0.6 * plan.muscle, plan.Bi + 0.6 * plan.muscle
    n_ribs = 9
    for k in range(n_ribs):
        z0 = 75 - 27 * k + rng.uniform(-3, 3)
        lo_z, hi_z = z0 - 0.7 * br - 8, z0 + 0.7 * br + 8
        box = grid.box((-ar - 10, -br - 10, lo_z), (ar + 10, br + 10, hi_z))
        if box.empty:
            continue
        rn = np.sqrt((box.X / ar) ** 2 + (box.Y / br) ** 2)
        radial = (rn - 1.0) * 0.5 * (ar + br)
        theta = np.degrees(np.arctan2(box.Y, np.abs(box.X)))     # 90 = posterior, -90 = anterior
        reach = -75 + 11 * k                                       # lower ribs stop further back
        zc = z0 + 0.7 * box.Y
        dz = box.Z - zc
        along = (theta >= reach) & (theta <= 80)
        rib = along & (np.abs(radial) <= 3.5) & (np.abs(dz) <= 4.5)
        marrow = along & (np.abs(radial) <= 2.0) & (np.abs(dz) <= 3.0)
        cart = (theta < reach) & (theta >= reach - 25) & (np.abs(radial) <= 4) & (np.abs(dz) <= 5) & (k < 7)
        ok = (T.FAT, T.MUSCLE, T.LUNG, T.VISCERAL_FAT)
        _put(tissue, box, cart, T.RIB_CARTILAGE, only=ok)
        _put(tissue, box, rib, T.CORTICAL_BONE, only=ok)
        _put(tissue, box, marrow, T.CANCELLOUS_BONE, only=(T.CORTICAL_BONE,))


def paint_bowel(tissue: np.ndarray, grid: Grid, plan: BodyPlan, cavity: np.ndarray) -> None:
    """Small bowel loops (a tubular network from two smooth fields) and the colon with gas."""
    box = grid.box((-1e9, -1e9, -1e9), (1e9, 1e9, -70))
    if box.empty:
        return
    f1, f2, f3 = (plan.fields[k].sample(box) for k in ("bowel1", "bowel2", "bowel3"))
    loops = (np.abs(f1) < 0.6) & (np.abs(f2) < 0.6)
    core = (np.abs(f1) < 0.42) & (np.abs(f2) < 0.42)
    view = tissue[box.slices]
    fat = (view == T.VISCERAL_FAT) & cavity[box.slices]
    view[fat & loops] = T.BOWEL_WALL
    view[fat & core & (f3 < -0.7)] = T.BOWEL_FLUID
    view[fat & core & (f3 > 1.0)] = T.BOWEL_GAS
    # Colon frame: ascending (right), transverse, descending (left); gas rises anteriorly.
    ai, bi = plan.Ai, plan.Bi
    path = [(-0.72 * ai, 0.05 * bi, -330), (-0.72 * ai, 0.0, -140), (-0.45 * ai, -0.55 * bi, -118),
            (0.1 * ai, -0.6 * bi, -125), (0.62 * ai, -0.35 * bi, -95), (0.75 * ai, 0.1 * bi, -120),
            (0.75 * ai, 0.15 * bi, -330)]
    for rad, tis in ((21.0, T.BOWEL_WALL), (17.0, T.BOWEL_FLUID)):
        b2, m = tube(grid, path, [rad] * len(path))
        _put(tissue, b2, m & cavity[b2.slices], tis, only=ABDOMEN)
    b2, m = tube(grid, path, [17.0] * len(path))
    if not b2.empty:
        # Anterior part of the lumen holds gas (supine patient).
        gas = m & cavity[b2.slices] & ((b2.Y + 0.2 * bi) < 0.2 * bi)
        _put(tissue, b2, gas, T.BOWEL_GAS, only=(T.BOWEL_FLUID,))


KIDNEY_RADII = np.array([24.0, 30.0, 56.0])


def kidney_pose(plan: BodyPlan, side: int) -> tuple[tuple[float, float, float], np.ndarray]:
    """Centre and rotation of the right (``side=-1``, lower) or left (``+1``) kidney: upper pole
    medial and posterior, hilum turned anteromedially."""
    zc = -165.0 if side < 0 else -150.0
    return (side * (plan.rv + 50), plan.y_spine + 2, zc), rotation(yaw=side * -35, pitch=side * 8)


def paint_kidneys(tissue: np.ndarray, grid: Grid, plan: BodyPlan) -> None:
    """Kidneys (cortex, medulla, sinus fat opening medially) in their perirenal fat."""
    r = KIDNEY_RADII
    for side in (-1, 1):
        c, rot = kidney_pose(plan, side)
        box, m = ellipsoid(grid, c, r + 12, rot)
        _put(tissue, box, m, T.FAT, only=ABDOMEN + (T.MUSCLE,))
        box, m = ellipsoid(grid, c, r, rot)
        _put(tissue, box, m, T.KIDNEY_CORTEX, only=ABDOMEN + (T.FAT, T.MUSCLE))
        box, m = ellipsoid(grid, c, r - 7, rot)
        _put(tissue, box, m, T.KIDNEY_MEDULLA, only=(T.KIDNEY_CORTEX,))
        hil = (c[0] - side * 14, c[1] - 6, c[2])
        box, m = ellipsoid(grid, hil, (14, 10, 26), rot)
        _put(tissue, box, m, T.FAT, only=(T.KIDNEY_CORTEX, T.KIDNEY_MEDULLA))


def paint_spleen(tissue: np.ndarray, grid: Grid, plan: BodyPlan, below: np.ndarray) -> None:
    s = plan.spleen_scale
    c = np.array([0.66 * plan.Ai, 0.38 * plan.Bi, -55.0])
    if plan.abnormal == "left_lateral":
        c += (5, 10, -25)
    r = np.array([30.0, 56.0, 50.0]) * s
    rot = rotation(yaw=-38)
    box, m = ellipsoid(grid, c, r, rot)
    hollow = ellipsoid_level(box, c + np.array([-36.0, -24.0, 0.0]) * s, r * np.array([0.7, 0.6, 0.8]),
                             rot) <= 1
    _put(tissue, box, m & ~hollow & below[box.slices], T.SPLEEN, only=ABDOMEN)


def paint_stomach(tissue: np.ndarray, grid: Grid, plan: BodyPlan, below: np.ndarray) -> None:
    ai, bi = plan.Ai, plan.Bi
    parts = [((0.32 * ai, -0.05 * bi, -40.0), (42.0, 40.0, 42.0), rotation()),
             ((0.22 * ai, -0.38 * bi, -82.0), (38.0, 28.0, 45.0), rotation(yaw=25, roll=20)),
             ((-0.02 * ai, -0.55 * bi, -110.0), (45.0, 19.0, 20.0), rotation(yaw=-20))]
    lo = np.min([np.array(c) - max(r) for c, r, _ in parts], axis=0)
    hi = np.max([np.array(c) + max(r) for c, r, _ in parts], axis=0)
    box = grid.box(lo, hi)
    if box.empty:
        return
    lev = np.min([ellipsoid_level(box, c, r, rot) for c, r, rot in parts], axis=0)
    lev_in = np.min([ellipsoid_level(box, c, np.array(r) - 4.5, rot) for c, r, rot in parts], axis=0)
    ok = below[box.slices]
    outer, inner = (lev <= 1) & ok, (lev_in <= 1) & ok
    _put(tissue, box, outer, T.STOMACH_WALL, only=ABDOMEN)
    ymin = lo[1] + 4
    level = ymin + plan.stomach_fill * (hi[1] - lo[1]) * 0.6
    _put(tissue, box, inner & (box.Y >= level), T.STOMACH_FLUID, only=(T.STOMACH_WALL,))
    _put(tissue, box, inner & (box.Y < level), T.STOMACH_AIR, only=(T.STOMACH_WALL,))


def paint_pancreas(tissue: np.ndarray, grid: Grid, plan: BodyPlan) -> None:
    ys, rv, ai, bi = plan.y_spine, plan.rv, plan.Ai, plan.Bi
    pts = [(-38, ys - rv - 42, -135), (0, ys - rv - 52, -118), (45, ys - rv - 40, -100),
           (0.55 * ai, 0.12 * bi, -82)]
    box, m = tube(grid, pts, [17, 12, 11, 9])
    _put(tissue, box, m, T.PANCREAS, only=ABDOMEN)


def _smooth_union(levels: list[np.ndarray], k: float = 0.25) -> np.ndarray:
    """Blend ellipsoid levels (on sqrt scale, ~ normalised distance) into one smooth shape."""
    d = [np.sqrt(np.maximum(lv, 0)) for lv in levels]
    out = d[0]
    for di in d[1:]:
        h = np.clip(0.5 + 0.5 * (di - out) / k, 0, 1)
        out = di * (1 - h) + out * h - k * h * (1 - h)
    return out


def liver_mask(grid: Grid, plan: BodyPlan) -> tuple[Box, np.ndarray]:
    """The liver: a large right lobe, a left lobe tapering across the midline, a caudate/medial part,
    smoothly blended and deformed, held in by the diaphragm and the abdominal wall."""
    ai, bi, s = plan.Ai, plan.Bi, plan.liver_scale
    sh = np.asarray(plan.liver_shift)
    rot = rotation(yaw=plan.liver_yaw)
    ll = plan.left_lobe
    right_c = np.array([-0.5 * ai, 0.02 * bi, -80.0]) + sh
    right_r = np.array([0.52 * ai, 0.8 * bi, 90.0]) * s
    left_c = np.array([0.12 * ai, -0.5 * bi, -48.0]) + sh
    left_r = np.array([0.5 * ai * ll, 0.42 * bi, 36.0]) * s
    mid_c = np.array([-0.12 * ai, -0.1 * bi, -58.0]) + sh
    mid_r = np.array([0.32 * ai, 0.62 * bi, 50.0]) * s
    riedel = plan.riedel
    if plan.abnormal == "left_lateral":
        left_c = left_c + (0.3 * ai, 0.12 * bi, -5)
        left_r = left_r * (1.5, 1.15, 1.3)
    elif plan.abnormal == "elongated":
        right_r = right_r * (0.95, 0.72, 1.45)
        right_c = right_c + (0, -0.15 * bi, -45)
        riedel += 30
    box = grid.box((-ai - 5, -bi - 5, -300), (ai + 5, bi + 5, 30))
    if box.empty:
        return box, np.zeros(box.shape, bool)
    amp = plan.liver_warp
    warp = tuple(amp * plan.fields[k].sample(box) for k in ("liver_dx", "liver_dy", "liver_dz"))
    u0, v, w0 = _lobe_coords(box, right_c, rot, warp)
    # Long axis tilted in the coronal plane: the lateral right lobe reaches lowest, the inferior
    # surface slopes up towards the midline; a Riedel-like tongue adds to the lateral tip.
    ca, sa = np.cos(np.radians(20.0)), np.sin(np.radians(20.0))
    u, w = u0 * ca - w0 * sa, u0 * sa + w0 * ca
    w = w + riedel * np.clip(-u / right_r[0], 0, 1) ** 2
    # Narrower towards the inferior tip (a wedge in coronal view, not a ball).
    narrow = 1.0 - 0.4 * np.clip(-w / right_r[2], 0, 1)
    right = (u / (right_r[0] * narrow)) ** 2 + (v / (right_r[1] * narrow)) ** 2 + (w / right_r[2]) ** 2
    u, v, w = _lobe_coords(box, left_c, rot, warp)
    taper = np.clip(1 - 0.55 * u / left_r[0], 0.3, 1.4)
    left = (u / left_r[0]) ** 2 + (v / (left_r[1] * taper)) ** 2 + ((w - 6 * (1 - taper)) / (left_r[2] * taper)) ** 2
    u, v, w = _lobe_coords(box, mid_c, rot, warp)
    mid = (u / mid_r[0]) ** 2 + (v / mid_r[1]) ** 2 + (w / mid_r[2]) ** 2
    d = _smooth_union([right, left, mid]) + 0.05 * plan.fields["liver_bump"].sample(box)
    cavity = body_level(plan, grid, plan.fat + plan.muscle)[box.slices[1:]][None] <= body_scale(plan, box.Z)
    below = box.Z < diaphragm_z(plan, box.X, box.Y) - 4
    inside = (d <= 1) & below & cavity
    return box, inside


def _lobe_coords(box: Box, c, rot, warp):
    dx, dy, dz = box.X - c[0] + warp[0], box.Y - c[1] + warp[1], box.Z - c[2] + warp[2]
    r = rot
    return (r[0, 0] * dx + r[1, 0] * dy, r[0, 1] * dx + r[1, 1] * dy, dz)


def vessel_tree(rng: np.random.Generator, root, direction, radius: float, min_radius: float = 1.4,
                max_segments: int = 40) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """Random branching tree: segments (start, end, r_start, r_end), bifurcating with shrinking radius."""
    out = []
    stack = [(np.asarray(root, float), np.asarray(direction, float) / np.linalg.norm(direction), radius)]
    while stack and len(out) < max_segments:
        p, d, r = stack.pop(0)
        length = rng.uniform(22, 38) * (r / 5.0) ** 0.4
        d = d + rng.normal(0, 0.2, 3)
        d /= np.linalg.norm(d)
        q = p + length * d
        r_end = r * 0.8
        out.append((p, q, r, r_end))
        if r_end * 0.75 < min_radius:
            continue
        ortho = np.cross(d, rng.normal(size=3))
        ortho /= np.linalg.norm(ortho) + 1e-9
        for sign in (1, -1):
            ang = np.radians(rng.uniform(20, 45))
            stack.append((q, np.cos(ang) * d + sign * np.sin(ang) * ortho, r_end * rng.uniform(0.68, 0.8)))
    return out


def paint_liver_and_vessels(tissue: np.ndarray, grid: Grid, plan: BodyPlan, below: np.ndarray,
                            cavity: np.ndarray) -> None:
    """Liver, gallbladder, IVC in the caval groove, portal vein with intrahepatic branches, hepatic veins,
    aorta, splenic and mesenteric veins."""
    ai, bi, ys, rv = plan.Ai, plan.Bi, plan.y_spine, plan.rv
    sh = np.asarray(plan.liver_shift)
    box, inside = liver_mask(grid, plan)
    _put(tissue, box, inside, T.LIVER, only=ABDOMEN + (T.STOMACH_WALL, T.STOMACH_FLUID, T.STOMACH_AIR,
                                                      T.PANCREAS))
    if plan.gallbladder:
        c = np.array([-0.2 * ai, -0.42 * bi, -98.0]) + sh
        b2, m = ellipsoid(grid, c, (15, 17, 36), rotation(yaw=-20, roll=-35))
        _put(tissue, b2, m, T.GALLBLADDER, only=ABDOMEN + (T.LIVER,))
    hilum = np.array([-0.22 * ai, -0.05 * bi, -78.0]) + sh
    conf = np.array([8.0, ys - rv - 38, -122.0])
    liver_like = (T.LIVER,)
    # Portal branches inside the liver (liver label), trunk outside (not liver).
    branches = [
        ([hilum, hilum + (-0.3 * ai, 0.08 * bi, 10), hilum + (-0.58 * ai, 0.25 * bi, 24)], [6.5, 4.5, 2.5]),
        ([hilum + (-0.3 * ai, 0.08 * bi, 10), hilum + (-0.4 * ai, -0.3 * bi, 28)], [3.5, 2.0]),
        ([hilum, hilum + (0.2 * ai, -0.32 * bi, 28), hilum + (0.5 * ai, -0.45 * bi, 30)], [5.5, 3.5, 2.0]),
    ]
    for pts, rads in branches:
        b2, m = tube(grid, pts, rads)
        _put(tissue, b2, m, T.PORTAL_BRANCH, only=liver_like)
    # Peripheral branches: random trees from the ends of the main branches.
    vrng = np.random.default_rng(plan.fields["vessel_seed"])
    for pts, rads in branches:
        a, b = np.asarray(pts[-2], float), np.asarray(pts[-1], float)
        for p0, p1, r0, r1 in vessel_tree(vrng, b, b - a, rads[-1] + 0.5, max_segments=14):
            b2, m = tube(grid, [p0, p1], [r0, r1])
            _put(tissue, b2, m, T.PORTAL_BRANCH, only=liver_like)
    ivc_top = np.array([-14.0, ys - rv - 42, 18.0])
    hv_root = np.array([-20.0, ys - rv - 30, -12.0])
    for end, r0 in (((-0.8 * ai, -0.05 * bi, -48), 5.0), ((-0.3 * ai, -0.55 * bi, -52), 4.5),
                    ((0.25 * ai, -0.55 * bi, -32), 4.0)):
        end = np.array(end) + sh
        b2, m = tube(grid, [hv_root, end], [r0, 2.5])
        _put(tissue, b2, m, T.HEPATIC_VEIN, only=liver_like)
        for p0, p1, r0_, r1_ in vessel_tree(vrng, end, end - hv_root, 2.8, max_segments=8):
            b2, m = tube(grid, [p0, p1], [r0_, r1_])
            _put(tissue, b2, m, T.HEPATIC_VEIN, only=liver_like)
    # IVC: retroperitoneal below, then through the caval groove of the liver into the right atrium.
    ivc = [(-(rv + 10), ys - rv - 8, -340), (-(rv + 9), ys - rv - 10, -120), (-22, ys - rv - 24, -40),
           (hv_root[0], hv_root[1], hv_root[2]), tuple(ivc_top)]
    b2, m = tube(grid, ivc, [12, 12, 13, 14, 14])
    _put(tissue, b2, m, T.IVC, only=ABDOMEN + (T.LIVER, T.PORTAL_BRANCH, T.HEPATIC_VEIN, T.MUSCLE,
                                               T.FAT, T.VISCERAL_FAT, T.LUNG, T.HEART, T.PANCREAS))
    # Extrahepatic portal vein, splenic and superior mesenteric veins.
    for pts, rads in (([conf, hilum], [7.5, 7.0]),
                      ([conf, (45, ys - rv - 30, -100), (0.55 * ai, 0.2 * bi, -75)], [5, 5, 4.5]),
                      ([conf, (14, ys - rv - 45, -200), (18, ys - rv - 50, -340)], [6, 5.5, 5])):
        b2, m = tube(grid, pts, rads)
        _put(tissue, b2, m, T.PORTAL_VEIN, only=ABDOMEN + (T.PANCREAS, T.LIVER, T.FAT))
    # Aorta: descending, left anterior of the spine, whole scan length.
    ra = 11.5
    b2, m = tube(grid, [(rv * 0.5 + 6, ys - rv - ra - 2, -340), (rv * 0.5 + 4, ys - rv - ra - 1, 200)], [ra, ra])
    _put(tissue, b2, m, T.AORTA)


def paint_anatomy(tissue: np.ndarray, grid: Grid, plan: BodyPlan, rng: np.random.Generator) -> None:
    """Paint the whole body plan into ``tissue`` (uint8, grid shape), in an order where later organs
    push earlier ones aside."""
    regions = paint_body(tissue, grid, plan)
    cavity, thorax = regions["cavity"], regions["thorax"]
    below = grid.full().Z < regions["zd"] - 4
    paint_heart(tissue, grid, plan, thorax)
    paint_bowel(tissue, grid, plan, cavity)
    paint_spine_ribs(tissue, grid, plan, rng)
    paint_kidneys(tissue, grid, plan)
    paint_spleen(tissue, grid, plan, below)
    paint_stomach(tissue, grid, plan, below)
    paint_pancreas(tissue, grid, plan)
    paint_liver_and_vessels(tissue, grid, plan, below, cavity)
    # The kidneys' upper poles indent the liver: repaint them last.
    paint_kidneys_over_liver(tissue, grid, plan)


def paint_kidneys_over_liver(tissue: np.ndarray, grid: Grid, plan: BodyPlan) -> None:
    """The right kidney's fat capsule indents the liver (renal impression)."""
    c, rot = kidney_pose(plan, -1)
    box, m = ellipsoid(grid, c, KIDNEY_RADII + 4, rot)
    _put(tissue, box, m, T.FAT, only=(T.LIVER, T.PORTAL_BRANCH, T.HEPATIC_VEIN))
