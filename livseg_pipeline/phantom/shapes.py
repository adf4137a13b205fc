"""Geometric building blocks of the phantom, evaluated in physical space (mm, LPS).

Shapes are defined in patient coordinates, not voxels, so a seed gives the same anatomy on any grid:
only the sampling changes with spacing. Every shape is evaluated inside its bounding box only, which
keeps a 2-3 Mvoxel phantom fast to paint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Vec = Sequence[float]


@dataclass(frozen=True)
class Grid:
    """Voxel-centre coordinates (mm) of an axis-aligned LPS grid; arrays are (z, y, x)."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    @classmethod
    def from_extent(cls, lo: Vec, hi: Vec, spacing: Vec) -> Grid:
        """Grid covering ``[lo, hi]`` (x, y, z, mm) with ``spacing`` (x, y, z)."""
        axes = []
        for a, b, s in zip(lo, hi, spacing):
            n = max(1, int(round((b - a) / s)) + 1)
            axes.append((a + s * np.arange(n)).astype(np.float32))
        return cls(*axes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.z), len(self.y), len(self.x))

    @property
    def origin(self) -> tuple[float, float, float]:
        return (float(self.x[0]), float(self.y[0]), float(self.z[0]))

    def box(self, lo: Vec, hi: Vec) -> Box:
        """The part of the grid inside the physical box ``[lo, hi]`` (x, y, z, mm)."""
        sl = []
        for ax, a, b in zip((self.x, self.y, self.z), lo, hi):
            i0 = int(np.searchsorted(ax, a, side="left"))
            i1 = int(np.searchsorted(ax, b, side="right"))
            sl.append(slice(i0, max(i0, i1)))
        sx, sy, sz = sl
        return Box((sz, sy, sx), self.x[sx][None, None, :], self.y[sy][None, :, None],
                   self.z[sz][:, None, None])

    def full(self) -> Box:
        return self.box((-np.inf,) * 3, (np.inf,) * 3)


@dataclass(frozen=True)
class Box:
    """A sub-block of a :class:`Grid`: its slices (z, y, x) and broadcastable coordinates."""

    slices: tuple[slice, slice, slice]
    X: np.ndarray
    Y: np.ndarray
    Z: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.Z.shape[0], self.Y.shape[1], self.X.shape[2])

    @property
    def empty(self) -> bool:
        return 0 in self.shape


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation matrix (degrees) about z (yaw), y (pitch) and x (roll), applied in that order."""
    a, b, c = np.radians([yaw, pitch, roll])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


def local_coords(box: Box, center: Vec, rot: np.ndarray | None = None,
                 warp: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None):
    """Coordinates relative to ``center`` in the frame of ``rot`` (its columns are the shape's axes),
    optionally displaced by a ``warp`` field (dx, dy, dz arrays of the box shape)."""
    dx, dy, dz = box.X - center[0], box.Y - center[1], box.Z - center[2]
    if warp is not None:
        dx, dy, dz = dx + warp[0], dy + warp[1], dz + warp[2]
    if rot is None:
        return dx, dy, dz
    r = np.asarray(rot, dtype=np.float32)
    return (r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
            r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
            r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz)


def ellipsoid_level(box: Box, center: Vec, radii: Vec, rot: np.ndarray | None = None, warp=None,
                    power: float = 2.0) -> np.ndarray:
    """Normalised (super-)ellipsoid level: < 1 inside, 1 on the surface."""
    u, v, w = local_coords(box, center, rot, warp)
    if power == 2.0:
        return (u / radii[0]) ** 2 + (v / radii[1]) ** 2 + (w / radii[2]) ** 2
    return np.abs(u / radii[0]) ** power + np.abs(v / radii[1]) ** power + np.abs(w / radii[2]) ** power


def ellipsoid_box(center: Vec, radii: Vec, margin: float = 0.0) -> tuple[list[float], list[float]]:
    """Axis-aligned box surely containing an ellipsoid of any rotation."""
    r = max(radii) + margin
    return [c - r for c in center], [c + r for c in center]


def ellipsoid(grid: Grid, center: Vec, radii: Vec, rot: np.ndarray | None = None,
              power: float = 2.0) -> tuple[Box, np.ndarray]:
    """Box and boolean mask of a rotated (super-)ellipsoid."""
    if rot is None:
        lo, hi = [c - r for c, r in zip(center, radii)], [c + r for c, r in zip(center, radii)]
    else:
        lo, hi = ellipsoid_box(center, radii)
    box = grid.box(lo, hi)
    if box.empty:
        return box, np.zeros(box.shape, bool)
    return box, ellipsoid_level(box, center, radii, rot, power=power) <= 1.0


def tube(grid: Grid, points: Sequence[Vec], radii: Sequence[float]) -> tuple[Box, np.ndarray]:
    """Box and mask of a tube along a polyline, radius interpolated linearly between the points."""
    pts = np.asarray(points, dtype=np.float32)
    rad = np.asarray(radii, dtype=np.float32)
    lo, hi = pts.min(0) - rad.max(), pts.max(0) + rad.max()
    box = grid.box(lo, hi)
    mask = np.zeros(box.shape, bool)
    if box.empty:
        return box, mask
    for a, b, ra, rb in zip(pts[:-1], pts[1:], rad[:-1], rad[1:]):
        seg = b - a
        length2 = float(seg @ seg) or 1e-6
        sub_lo, sub_hi = np.minimum(a, b) - max(ra, rb), np.maximum(a, b) + max(ra, rb)
        sub = grid.box(sub_lo, sub_hi)
        if sub.empty:
            continue
        dx, dy, dz = sub.X - a[0], sub.Y - a[1], sub.Z - a[2]
        t = np.clip((dx * seg[0] + dy * seg[1] + dz * seg[2]) / length2, 0, 1)
        d2 = (dx - t * seg[0]) ** 2 + (dy - t * seg[1]) ** 2 + (dz - t * seg[2]) ** 2
        inside = d2 <= (ra + t * (rb - ra)) ** 2
        rel = tuple(slice(s.start - b0.start, s.stop - b0.start) for s, b0 in zip(sub.slices, box.slices))
        mask[rel] |= inside
    return box, mask


class SmoothField:
    """A smooth random scalar field in physical space (unit standard deviation).

    Random values on a coarse lattice anchored in patient coordinates are smoothed and linearly
    interpolated, separably per axis, so the field does not depend on the sampling grid.
    """

    LO = np.array([-340.0, -340.0, -440.0])
    HI = np.array([340.0, 340.0, 240.0])

    def __init__(self, rng: np.random.Generator, scale_mm: float = 60.0):
        self.h = scale_mm / 3.0
        n = np.ceil((self.HI - self.LO) / self.h).astype(int) + 2
        lat = ndimage.gaussian_filter(rng.standard_normal((n[2], n[1], n[0])), 1.5, mode="wrap")
        self.lattice = (lat / (lat.std() + 1e-9)).astype(np.float32)

    def _index(self, q: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.lattice.shape[2 - axis]
        f = np.clip((np.asarray(q, np.float32) - self.LO[axis]) / self.h, 0, n - 1.001)
        i0 = np.floor(f).astype(np.intp)
        return i0, (f - i0).astype(np.float32)

    def sample(self, box: Box) -> np.ndarray:
        """Field values on ``box`` (shape of the box): separable linear interpolation, the small
        lattice axes first so that the full-size step is a cheap two-point blend."""
        if box.empty:
            return np.zeros(box.shape, np.float32)
        out = self.lattice
        for axis, q in ((2, box.Z.ravel()), (1, box.Y.ravel()), (0, box.X.ravel())):
            i0, f = self._index(q, axis)
            ax = 2 - axis                                   # array axis (z, y, x)
            shape = [1, 1, 1]
            shape[ax] = -1
            f = f.reshape(shape)
            out = np.take(out, i0, axis=ax) * (1 - f) + np.take(out, i0 + 1, axis=ax) * f
        return out.astype(np.float32, copy=False)


def grid_noise(rng: np.random.Generator, shape: Sequence[int], sigma_vox: Sequence[float]) -> np.ndarray:
    """Gaussian-correlated white noise on a voxel grid, rescaled to unit standard deviation."""
    n = rng.standard_normal(tuple(shape), dtype=np.float32)
    if any(s > 0 for s in sigma_vox):
        n = ndimage.gaussian_filter(n, sigma_vox, mode="reflect", truncate=3.0)
    return n / (float(n.std()) + 1e-9)
