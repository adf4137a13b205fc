"""A picture to check preprocessing at a glance: per case, an axial and a coronal slice through the
liver of the preprocessed image with the liver outlined (orientation: the liver must be on the image
left in the axial view = patient's right, radiological convention; the whole abdomen must be in
every slice)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from livseg_pipeline.preprocessing.preprocessor import load_preprocessed_case
from livseg_pipeline.utils.files import atomic_path


def write_preview(folder: str | Path, case_ids: list[str], out_png: str | Path | None = None,
                  max_cases: int = 8) -> Path | None:
    """Write ``preprocessing_preview.png`` in ``folder`` for up to ``max_cases`` cases (evenly
    picked); returns its path, or None when no case could be read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    out_png = Path(out_png) if out_png else folder / "preprocessing_preview.png"
    if len(case_ids) > max_cases:
        case_ids = [case_ids[i] for i in np.linspace(0, len(case_ids) - 1, max_cases).round().astype(int)]
    rows = []
    for case in case_ids:
        try:
            arrays, props = load_preprocessed_case(folder, case)
        except (OSError, ValueError):
            continue
        rows.append((case, arrays, props))
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 2, figsize=(8, 3.6 * len(rows)), squeeze=False)
    for (case, arrays, props), (ax_a, ax_c) in zip(rows, axes):
        img, lab = arrays["image"], arrays.get("label")
        if lab is not None and lab.any():
            zz, yy, xx = np.nonzero(lab)
            z, y = int(np.median(zz)), int(np.median(yy))
        else:
            z, y = img.shape[0] // 2, img.shape[1] // 2
        sp = props["preprocessed"]["spacing"]  # x, y, z
        ax_a.imshow(img[z], cmap="gray", vmin=-0.2, vmax=0.2, aspect=sp[1] / sp[0])
        ax_c.imshow(img[:, y, :], cmap="gray", vmin=-0.2, vmax=0.2, origin="lower", aspect=sp[2] / sp[0])
        if lab is not None:
            ax_a.contour(lab[z], levels=[0.5], colors="tab:orange", linewidths=0.8)
            ax_c.contour(lab[:, y, :], levels=[0.5], colors="tab:orange", linewidths=0.8)
        orient = props["original"].get("orientation", "?")
        ax_a.set_title(f"{case} axial z={z} (from {orient})", fontsize=8)
        ax_c.set_title(f"coronal y={y}, {'x'.join(map(str, img.shape))} voxels", fontsize=8)
        for ax in (ax_a, ax_c):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("preprocessed (LPS: patient's right on the image left); liver outlined", fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return out_png
