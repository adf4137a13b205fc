"""Overlay PNG: patient's right on the image left whatever the input orientation; physical aspect."""

from __future__ import annotations

import numpy as np
from matplotlib.image import imread

from livseg_pipeline.clinical.overlay import write_overlay_png
from livseg_pipeline.io.image_io import Geometry, Image, reorient


def case() -> tuple[Image, Image]:
    """LPS volume, thick slices (1 x 1 x 4 mm); a bright block on the patient's right (low x)."""
    ct = np.full((20, 60, 80), 40, np.int16)
    ct[:, 10:50, 5:30] = 300
    mask = np.zeros_like(ct, dtype=np.uint8)
    mask[5:15, 15:45, 8:28] = 1
    g = Geometry((1.0, 1.0, 4.0), (-40.0, -30.0, 0.0))
    return Image(ct, g), Image(mask, g)


def test_overlay_orientation_invariant_and_right_on_left(tmp_path):
    ct, mask = case()
    a = write_overlay_png(ct, mask, tmp_path / "a.png", title="t")
    b = write_overlay_png(reorient(ct, "RAI"), reorient(mask, "RAI"), tmp_path / "b.png", title="t")
    pa, pb = imread(a), imread(b)
    assert pa.shape == pb.shape and np.abs(pa - pb).max() < 1e-6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temporary files left
    # Axial panel = first third of the picture: the bright block (patient's right) is on its left half.
    h, w = pa.shape[:2]
    gray = pa[int(0.3 * h): int(0.9 * h), : w // 3, :3].mean(axis=2)
    left, right = gray[:, : gray.shape[1] // 2].mean(), gray[:, gray.shape[1] // 2:].mean()
    assert left > right + 0.1


def test_overlay_physical_aspect(tmp_path):
    """The coronal panel spans 20 slices x 4 mm = 80 mm by 80 mm: it must come out about square."""
    ct, mask = case()
    p = imread(write_overlay_png(ct, mask, tmp_path / "c.png"))
    gray = p[..., :3].mean(axis=2)
    h, w = gray.shape
    panel = gray[:, w // 3: 2 * w // 3] > 0.05  # non-black pixels of the coronal image
    panel[: int(0.2 * h)] = False  # titles
    rows, cols = np.nonzero(panel.any(axis=1))[0], np.nonzero(panel.any(axis=0))[0]
    height, width = rows.max() - rows.min(), cols.max() - cols.min()
    assert abs(height / width - 1.0) < 0.15
