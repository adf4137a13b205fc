"""Box plots in the layout of the paper's Fig. 2 / Fig. 4: a 2x2 panel DSC, RV, MSD, HD, one box per
group (a group = one pair of segmentation sets), every case drawn as a point over its box."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from livseg_pipeline.evaluation.summary import RV_RANGE
from livseg_pipeline.utils.files import atomic_path

PANELS = (("dsc", "Dice similarity coefficient"), ("rv", "Volume ratio"),
          ("msd_mm", "Mean surface distance (mm)"), ("hd_mm", "Hausdorff distance (mm)"))


def metric_boxplots(groups: Mapping[str, Sequence[Mapping]], path: str | Path, title: str = "") -> Path:
    """Write the 2x2 box-plot PNG; ``groups`` maps a label to its per-case rows (dicts with the metric
    keys). Non-finite values (empty masks) cannot be drawn; each panel says how many were left out."""
    fig = Figure(figsize=(4.0 + 1.6 * len(groups), 8.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    labels = list(groups)
    rng = np.random.default_rng(0)
    for ax, (key, name) in zip(axes.ravel(), PANELS):
        data, left_out = [], 0
        for label in labels:
            v = np.asarray([r[key] for r in groups[label]], dtype=float)
            left_out += int((~np.isfinite(v)).sum())
            data.append(v[np.isfinite(v)])
        if key == "rv":
            ax.axhspan(*RV_RANGE, color="tab:green", alpha=0.12, label="0.9-1.1")
            ax.legend(loc="best", fontsize="small")
        ax.boxplot(data, showfliers=False, widths=0.5)
        ax.set_xticks(range(1, len(labels) + 1), labels)  # boxplot's own label keyword changed in 3.9
        for i, v in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, v.size), v, s=10, alpha=0.6, color="tab:blue", zorder=3)
        ax.set_title(name + (f"\n({left_out} non-finite value(s) not drawn)" if left_out else ""), fontsize="medium")
        ax.tick_params(axis="x", labelrotation=20 if len(labels) > 2 else 0, labelsize="small")
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
