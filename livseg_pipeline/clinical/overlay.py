"""Quick-look overlay PNG: axial, coronal and sagittal CT slices through the liver with its contour.

Display conventions (radiological): axial and coronal views show the patient's right on the image
left (marked R / L), anterior up in axial and superior up in coronal and sagittal (anterior on the
left in sagittal, marked A / P). Pixels have their physical aspect ratio, so anisotropic voxels
(thick slices) are not squashed. CT window [-200, 300] HU by default. The volume is first
reoriented to LPS (a pure axis permutation/flip, no interpolation), so any input orientation gives
the same picture. Rendering uses matplotlib's Agg canvas directly (no pyplot, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from livseg_pipeline.io.image_io import Image, reorient
from livseg_pipeline.utils.files import atomic_path


def _centre(mask: np.ndarray) -> tuple[int, int, int]:
    if mask.any():
        return tuple(int(round(v)) for v in np.argwhere(mask).mean(axis=0))
    return tuple(s // 2 for s in mask.shape)


def write_overlay_png(ct: Image, mask: Image, out_path: str | Path, *, title: str = "",
                      window: tuple[float, float] = (-200.0, 300.0), color: str = "#00e000",
                      flags: Sequence[str] = (), dpi: int = 110) -> Path:
    """Write the three-view overlay of ``mask`` (on ``ct``'s grid) to ``out_path`` atomically."""
    if ct.array.shape != mask.array.shape:
        raise ValueError(f"mask shape {mask.array.shape} differs from CT shape {ct.array.shape}")
    ct_l, m_l = reorient(ct, "LPS"), reorient(mask, "LPS")
    img, m = np.asarray(ct_l.array, dtype=np.float32), np.asarray(m_l.array) > 0
    sx, sy, sz = ct_l.spacing
    cz, cy, cx = _centre(m)
    # (array, row spacing, col spacing, name, left marker, right marker); z flipped so superior is up
    views = [(img[cz], m[cz], sy, sx, f"axial z={cz}", "R", "L"),
             (img[::-1, cy, :], m[::-1, cy, :], sz, sx, f"coronal y={cy}", "R", "L"),
             (img[::-1, :, cx], m[::-1, :, cx], sz, sy, f"sagittal x={cx}", "A", "P")]
    widths = [v[0].shape[1] * v[3] for v in views]
    heights = [v[0].shape[0] * v[2] for v in views]
    panel_h = 3.6
    fig_w = sum(panel_h * w / max(heights) for w in widths) + 0.6
    fig = Figure(figsize=(max(fig_w, 6.0), panel_h + 0.9), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": widths})
    for ax, (sl, ms, rs, cs, name, left, right) in zip(axes, views):
        ax.imshow(sl, cmap="gray", vmin=window[0], vmax=window[1], aspect=rs / cs, interpolation="bilinear")
        if ms.any():
            ax.contour(ms.astype(np.uint8), levels=[0.5], colors=[color], linewidths=0.9)
        ax.text(0.02, 0.5, left, color="yellow", transform=ax.transAxes, fontsize=12, fontweight="bold",
                va="center", ha="left")
        ax.text(0.98, 0.5, right, color="yellow", transform=ax.transAxes, fontsize=12, fontweight="bold",
                va="center", ha="right")
        ax.set_title(name, color="white", fontsize=9)
        ax.set_axis_off()
    head = title or "liver overlay"
    head += f"  |  window [{window[0]:.0f}, {window[1]:.0f}] HU"
    if flags:
        head += "\nQC flags: " + ", ".join(flags)
    fig.suptitle(head, color="orange" if flags else "white", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.82 if flags else 0.87, wspace=0.03)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", facecolor=fig.get_facecolor())
    return out_path
