"""Picture of phantoms next to real CT (3D-IRCADb), same window, liver contour overlaid.

    python -m livseg_pipeline.phantom.figure documentation/img/phantoms_vs_ircad.png \\
        --ircad ../shared/data/3Dircadb1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from livseg_pipeline.io.image_io import Image, reorient_to_canonical
from livseg_pipeline.utils.files import atomic_path

WINDOW = (-200, 300)


def _panels(ct: Image, label: Image) -> list[tuple[np.ndarray, np.ndarray, tuple[float, ...]]]:
    """Axial slice with the largest liver area and coronal slice through the liver centre (LPS,
    displayed radiologically: patient's right on the image left, anterior / superior up)."""
    ct, label = reorient_to_canonical(ct), reorient_to_canonical(label)
    a, m = ct.array, label.array > 0
    sx, sy, sz = ct.geometry.spacing
    nz, ny, nx = a.shape
    k = int(np.argmax(m.sum(axis=(1, 2))))
    yc = int(round(np.mean(np.nonzero(m.any(axis=(0, 2)))[0]))) if m.any() else ny // 2
    yc = int(np.argmax(m.sum(axis=(0, 2)))) if m.any() else yc
    axial = (a[k], m[k], (0, nx * sx, ny * sy, 0))
    coronal = (a[:, yc], m[:, yc], (0, nx * sx, 0, nz * sz))
    return [axial, coronal]


def plot_phantoms_vs_real(out_png: str | Path, cases: list[tuple[str, Image, Image]]) -> Path:
    """Rows of (title, CT, liver label): axial and coronal views, window [-200, 300] HU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(cases)
    fig, axes = plt.subplots(2, n, figsize=(3.1 * n, 6.4), gridspec_kw={"height_ratios": [1, 1]})
    axes = np.asarray(axes).reshape(2, n)
    for j, (title, ct, lab) in enumerate(cases):
        for i, (img, msk, ext) in enumerate(_panels(ct, lab)):
            ax = axes[i, j]
            origin = "upper" if i == 0 else "lower"
            ax.imshow(img, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], extent=ext, origin=origin,
                      interpolation="bilinear")
            if msk.any():
                ax.contour(msk.astype(float), [0.5], colors="#ff4040", linewidths=0.7, extent=ext,
                           origin=origin)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
        axes[0, 0].set_ylabel("axial", fontsize=8)
        axes[1, 0].set_ylabel("coronal", fontsize=8)
    fig.suptitle(f"Real 3D-IRCADb CT vs livseg phantoms, window [{WINDOW[0]}, {WINDOW[1]}] HU, liver label "
                 "in red (patient's right on the image left)", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=85, format="png")
    plt.close(fig)
    return out_png


def default_cases(ircad_dir: Path | None, seeds: tuple[int, ...] = (3, 11, 12, 40, 4),
                  hards: tuple = (None, None, "dense_lesion", "abnormal_position", "low_contrast"),
                  contrasts: tuple = ("portal", "none", "portal", "portal", None)) -> list[tuple[str, Image, Image]]:
    from livseg_pipeline.phantom.generator import generate_phantom

    cases = []
    if ircad_dir is not None:
        from livseg_pipeline.io.archives import read_dicom_zip

        for d in sorted(Path(ircad_dir).glob("3Dircadb1.*")):
            ct = read_dicom_zip(d / "PATIENT_DICOM.zip")
            lab = read_dicom_zip(d / "MASKS_DICOM.zip", "liver")
            lab = lab.with_array((lab.array > 0).astype(np.uint8))
            vol = float(lab.array.sum()) * lab.voxel_volume_ml
            cases.append((f"REAL {d.name}\nportal-venous, {vol:.0f} mL", ct, lab))
    for seed, hard, contrast in zip(seeds, hards, contrasts):
        c = generate_phantom(seed, hard=hard, contrast=contrast)
        phase = "portal-venous" if c.meta["contrast"] == "portal" else "non-contrast"
        title = f"phantom seed {seed}, {phase}\n{hard or 'normal'}, {c.liver_volume_ml:.0f} mL"
        cases.append((title, c.ct, c.label))
    return cases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Plot phantoms next to the real IRCAD cases.")
    p.add_argument("out", type=Path)
    p.add_argument("--ircad", type=Path, default=None, help="folder with 3Dircadb1.N/ (zip layout)")
    args = p.parse_args(argv)
    plot_phantoms_vs_real(args.out, default_cases(args.ircad))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
