"""Quality-control flags for a predicted liver mask, without ground truth.

The paper found 12.5 % of its automatic segmentations poor - low contrast or dose, lesions of very
different density, an abnormal liver position or shape - by looking at every case. These flags
point reviewers at such cases. Each flag has a name, ``flagged``, a one-line ``reason`` with the
measured value and the threshold, and ``evaluated`` (False when its input was not given).

Flags (thresholds in :class:`QCConfig`):

``volume``              liver volume outside [500, 4500] mL (adult livers: about 1000-2500 mL;
                        hepatomegaly up to ~4000 mL)
``empty``               no liver voxel at all
``fov_cut``             mask on the first/last slice or on an in-plane edge of the scan (liver cut
                        by the field of view: volume and activity are underestimated)
``removed_components``  post-processing removed a component of >= 20 mL (a lobe may be missing,
                        or the network found liver-like tissue elsewhere)
``ensemble_disagreement`` lowest pairwise Dice between ensemble members (binarised at 0.5) < 0.90
``uncertain_band``      voxels with 0.2 < p < 0.8 exceed 10 % of the mask volume
``hu_implausible``      median HU in the mask outside [20, 200]. The median, not the mean, is tested
                        so that lesions and vessels (a minority of voxels) do not move it; a
                        non-contrast liver is ~55 HU, portal-venous ~110 HU; severe steatosis
                        can fall below 20 HU and is then flagged for a look, which is wanted
``hu_outliers``         more than 1 % of the mask outside [-50, 300] HU: fat/air leakage, or dense
                        material (lipiodol, calcification, bone) - a lesion of very different
                        density, or a mask leaking into ribs or spine
``low_contrast``        liver vs. adjacent soft tissue (a 3-15 mm shell outside the mask, voxels in
                        [-50, 300] HU) differs by less than 20 HU, or by less than 1.5 noise sigma
``high_noise``          robust noise sigma in the liver > 25 HU (low-dose CT). Sigma is the MAD of
                        an in-plane high-pass residual (voxel minus mean of its 4 neighbours, scaled
                        for white noise) inside the liver eroded by 2 voxels
``position``            liver centroid less than 20 mm to the patient's right of the body's centre
                        (situs inversus, a displaced liver, or a wrong orientation in the header)

>>> import numpy as np
>>> from livseg_pipeline.io.image_io import Geometry, Image
>>> ct = Image(np.full((5, 20, 20), 100, np.int16), Geometry((1.0, 1.0, 1.0)))
>>> m = np.zeros((5, 20, 20), np.uint8); m[0:3, 5:15, 5:15] = 1
>>> flagged = run_qc(ct, ct.with_array(m))["flagged"]
>>> "volume" in flagged, "fov_cut" in flagged, "hu_implausible" in flagged
(True, True, False)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from livseg_pipeline.io.image_io import Geometry, Image


@dataclass(frozen=True)
class QCConfig:
    """All QC thresholds (see the module docstring for each flag's rationale)."""

    min_volume_ml: float = 500.0
    max_volume_ml: float = 4500.0
    border_min_area_mm2: float = 50.0       # mask area on a border face that counts as "cut"
    removed_component_max_ml: float = 20.0
    member_threshold: float = 0.5
    ensemble_min_dice: float = 0.90
    uncertain_low: float = 0.2
    uncertain_high: float = 0.8
    uncertain_max_fraction: float = 0.10
    median_hu_range: tuple[float, float] = (20.0, 200.0)
    tissue_hu_range: tuple[float, float] = (-50.0, 300.0)
    outlier_max_fraction: float = 0.01
    shell_mm: tuple[float, float] = (3.0, 15.0)
    min_contrast_hu: float = 20.0
    min_contrast_to_noise: float = 1.5
    max_noise_hu: float = 25.0
    body_threshold_hu: float = -300.0
    min_right_offset_mm: float = 20.0


def _flag(name: str, flagged: bool, reason: str, value=None, threshold=None, evaluated: bool = True) -> dict:
    return {"name": name, "flagged": bool(flagged), "reason": reason, "value": value, "threshold": threshold,
            "evaluated": evaluated}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity of two boolean arrays (1.0 when both are empty).

    >>> dice(np.array([1, 1, 0], bool), np.array([1, 0, 0], bool))
    0.6666666666666666
    """
    sa, sb = int(a.sum()), int(b.sum())
    return 1.0 if sa + sb == 0 else 2.0 * int(np.logical_and(a, b).sum()) / (sa + sb)


def _direction_name(vector: np.ndarray) -> str:
    """Anatomical name of an LPS direction (its dominant axis)."""
    axis = int(np.argmax(np.abs(vector)))
    return (("right", "left"), ("anterior", "posterior"), ("inferior", "superior"))[axis][int(vector[axis] > 0)]


def border_faces(mask: Image) -> dict[str, float]:
    """Mask area (mm^2) on each of the six faces of the scan, keyed by anatomical side."""
    arr = np.asarray(mask.array) > 0
    sx, sy, sz = mask.spacing
    d = mask.geometry.direction_matrix
    face_area = {0: sx * sy, 1: sx * sz, 2: sy * sz}  # numpy axis 0 = z, 1 = y, 2 = x
    itk_axis = {0: 2, 1: 1, 2: 0}
    out: dict[str, float] = {}
    for ax in range(3):
        for end, sign in ((0, -1.0), (arr.shape[ax] - 1, 1.0)):
            count = int(np.take(arr, end, axis=ax).sum())
            name = _direction_name(sign * d[:, itk_axis[ax]])
            out[name] = out.get(name, 0.0) + count * face_area[ax]
    return out


def noise_sigma(ct: np.ndarray, region: np.ndarray) -> float | None:
    """Robust noise sigma (HU) from the in-plane high-pass residual inside ``region``."""
    img = ct.astype(np.float32)
    resid = img[:, 1:-1, 1:-1] - 0.25 * (img[:, :-2, 1:-1] + img[:, 2:, 1:-1] + img[:, 1:-1, :-2] + img[:, 1:-1, 2:])
    vals = resid[region[:, 1:-1, 1:-1]]
    if vals.size < 100:
        return None
    mad = float(np.median(np.abs(vals - np.median(vals))))
    return 1.4826 * mad / np.sqrt(1.25)  # residual variance of white noise is 1.25 sigma^2


def _crop(mask: np.ndarray, margin: Sequence[int]) -> tuple[slice, ...]:
    idx = np.nonzero(mask)
    return tuple(slice(max(0, int(i.min()) - m), min(n, int(i.max()) + m + 1))
                 for i, m, n in zip(idx, margin, mask.shape))


def contrast_and_noise(ct: Image, mask: Image, config: QCConfig) -> dict:
    """Median HU of the liver and of the adjacent soft tissue, and the noise sigma.

    The shell is found on a grid thinned to about 1.5 mm in-plane and the noise on at most 16
    slices through the liver: both statistics are medians, which this sampling barely moves.
    """
    arr = np.asarray(mask.array) > 0
    spacing_zyx = np.asarray(ct.spacing_zyx, dtype=float)
    step = [max(1, int(1.5 // s)) for s in spacing_zyx]
    margin = [int(np.ceil(config.shell_mm[1] / s)) + 1 for s in spacing_zyx]
    box = _crop(arr, margin)
    thin = tuple(slice(b.start, b.stop, st) for b, st in zip(box, step))
    m, img = arr[thin], np.asarray(ct.array)[thin]
    dist = ndimage.distance_transform_edt(~m, sampling=spacing_zyx * step)
    lo, hi = config.tissue_hu_range
    shell = (dist >= config.shell_mm[0]) & (dist <= config.shell_mm[1]) & (img >= lo) & (img <= hi)
    liver_median = float(np.median(np.asarray(ct.array)[arr]))
    around = float(np.median(img[shell])) if shell.sum() >= 50 else None
    z = np.nonzero(arr.any(axis=(1, 2)))[0]
    zsel = np.unique(z[np.linspace(0, len(z) - 1, min(16, len(z))).round().astype(int)])
    m_sl, img_sl = arr[zsel][(slice(None),) + box[1:]], np.asarray(ct.array)[zsel][(slice(None),) + box[1:]]
    inner = ndimage.binary_erosion(m_sl, structure=np.ones((1, 5, 5), bool))
    return {"liver_median_hu": liver_median, "surrounding_median_hu": around,
            "contrast_hu": None if around is None else abs(liver_median - around),
            "noise_sigma_hu": noise_sigma(img_sl, inner if inner.sum() >= 100 else m_sl)}


def _physical_centroid(mask: np.ndarray, image: Image, step: int = 1) -> np.ndarray:
    idx = np.argwhere(mask[::step, ::step, ::step]).mean(axis=0) * step  # (z, y, x)
    g = image.geometry
    return np.asarray(g.origin) + g.direction_matrix @ (idx[::-1] * np.asarray(g.spacing))


def lateral_offset_mm(ct: Image, mask: Image, config: QCConfig) -> float | None:
    """Liver centroid minus body centroid along the patient's left axis (LPS x), in mm, over the
    slices that contain liver; negative = liver on the patient's right, as expected."""
    arr = np.asarray(mask.array) > 0
    z = np.nonzero(arr.any(axis=(1, 2)))[0]
    zs = slice(int(z.min()), int(z.max()) + 1)
    body = np.asarray(ct.array)[zs] > config.body_threshold_hu
    step = 2 if body.size > 8_000_000 else 1
    lab, n = ndimage.label(body[::step, ::step, ::step])
    if n == 0:
        return None
    largest = np.argmax(np.bincount(lab.ravel())[1:]) + 1
    body_full = np.zeros_like(body)
    body_full[::step, ::step, ::step] = lab == largest
    # The slab starts at slice zs.start: move the origin with it to keep the physical frame.
    g = ct.geometry
    origin = np.asarray(g.origin) + g.direction_matrix @ np.array([0.0, 0.0, zs.start * g.spacing[2]])
    sub = Image(body_full, Geometry(g.spacing, tuple(origin), g.direction))
    body_c = _physical_centroid(body_full, sub, step)
    liver_c = _physical_centroid(arr, ct, 2 if arr.size > 8_000_000 else 1)
    return float(liver_c[0] - body_c[0])


def run_qc(ct: Image, mask: Image, *, probabilities: np.ndarray | None = None,
           member_probabilities: Sequence[np.ndarray] | None = None, removed_components_ml: Sequence[float] = (),
           config: QCConfig | None = None) -> dict:
    """Evaluate every flag; returns ``{"flags": [...], "flagged": [names], "n_flagged", "config"}``."""
    c = config or QCConfig()
    if ct.array.shape != mask.array.shape:
        raise ValueError(f"mask shape {mask.array.shape} differs from CT shape {ct.array.shape}")
    arr = np.asarray(mask.array) > 0
    n = int(arr.sum())
    volume = n * ct.voxel_volume_ml
    flags = [_flag("empty", n == 0, "mask is empty" if n == 0 else f"{n} voxels", n, 0)]
    flags.append(_flag("volume", not c.min_volume_ml <= volume <= c.max_volume_ml,
                       f"volume {volume:.0f} mL " + ("within" if c.min_volume_ml <= volume <= c.max_volume_ml
                                                      else "outside") + f" [{c.min_volume_ml:.0f}, "
                       f"{c.max_volume_ml:.0f}] mL", round(volume, 2), [c.min_volume_ml, c.max_volume_ml]))
    if n:
        faces = border_faces(mask)
        cut = {k: v for k, v in faces.items() if v >= c.border_min_area_mm2}
        reason = ("liver touches the scan border: " + ", ".join(f"{k} {v:.0f} mm^2" for k, v in cut.items())
                  + " (cut by the field of view?)") if cut else "mask does not reach the scan border"
        flags.append(_flag("fov_cut", bool(cut), reason, {k: round(v, 1) for k, v in faces.items()},
                           c.border_min_area_mm2))
    removed = [float(v) for v in removed_components_ml]
    big = [v for v in removed if v >= c.removed_component_max_ml]
    flags.append(_flag("removed_components", bool(big),
                       (f"post-processing removed {len(big)} component(s) >= {c.removed_component_max_ml:.0f} mL: "
                        + ", ".join(f"{v:.0f} mL" for v in big)) if big else
                       f"{len(removed)} removed component(s), largest {max(removed, default=0):.1f} mL",
                       max(removed, default=0.0), c.removed_component_max_ml))
    flags.append(_ensemble_flag(member_probabilities, arr.shape, c))
    flags.append(_uncertain_flag(probabilities, arr, c))
    if n:
        flags += _intensity_flags(ct, mask, arr, c)
        off = lateral_offset_mm(ct, mask, c)
        if off is not None:
            ok = off <= -c.min_right_offset_mm
            flags.append(_flag("position", not ok, f"liver centroid {abs(off):.0f} mm to the patient's "
                               f"{'right' if off < 0 else 'left'} of the body centre (expected >= "
                               f"{c.min_right_offset_mm:.0f} mm right)", round(off, 1), -c.min_right_offset_mm))
    flagged = [f["name"] for f in flags if f["flagged"]]
    return {"flags": flags, "flagged": flagged, "n_flagged": len(flagged), "config": asdict(c)}


def _ensemble_flag(members: Sequence[np.ndarray] | None, shape: tuple[int, ...], c: QCConfig) -> dict:
    if members is None or len(members) < 2:
        return _flag("ensemble_disagreement", False, "not evaluated (fewer than 2 ensemble members)",
                     evaluated=False)
    binary = []
    for i, p in enumerate(members):
        if np.shape(p) != shape:
            raise ValueError(f"ensemble member {i} has shape {np.shape(p)}, the mask {shape}")
        binary.append(np.asarray(p) > c.member_threshold)
    pairs = {(i, j): dice(binary[i], binary[j]) for i, j in itertools.combinations(range(len(binary)), 2)}
    (i, j), worst = min(pairs.items(), key=lambda kv: kv[1])
    return _flag("ensemble_disagreement", worst < c.ensemble_min_dice,
                 f"lowest pairwise Dice {worst:.3f} (members {i} and {j}) "
                 f"{'<' if worst < c.ensemble_min_dice else '>='} {c.ensemble_min_dice}", round(worst, 4),
                 c.ensemble_min_dice)


def _uncertain_flag(prob: np.ndarray | None, arr: np.ndarray, c: QCConfig) -> dict:
    if prob is None:
        return _flag("uncertain_band", False, "not evaluated (no probabilities)", evaluated=False)
    if np.shape(prob) != arr.shape:
        raise ValueError(f"probabilities have shape {np.shape(prob)}, the mask {arr.shape}")
    p = np.asarray(prob)
    band = int(((p > c.uncertain_low) & (p < c.uncertain_high)).sum())
    frac = band / max(int(arr.sum()), 1)
    return _flag("uncertain_band", frac > c.uncertain_max_fraction,
                 f"{100 * frac:.1f} % of the mask volume has {c.uncertain_low} < p < {c.uncertain_high} "
                 f"(limit {100 * c.uncertain_max_fraction:.0f} %)", round(frac, 4), c.uncertain_max_fraction)


def _intensity_flags(ct: Image, mask: Image, arr: np.ndarray, c: QCConfig) -> list[dict]:
    hu = np.asarray(ct.array)[arr].astype(np.float32)
    med, mean = float(np.median(hu)), float(hu.mean())
    lo, hi = c.median_hu_range
    out = [_flag("hu_implausible", not lo <= med <= hi,
                 f"median HU in mask {med:.0f} (mean {mean:.0f}) {'within' if lo <= med <= hi else 'outside'} "
                 f"[{lo:.0f}, {hi:.0f}]", round(med, 1), [lo, hi])]
    tlo, thi = c.tissue_hu_range
    below, above = float((hu < tlo).mean()), float((hu > thi).mean())
    bad = below + above > c.outlier_max_fraction
    out.append(_flag("hu_outliers", bad,
                     f"{100 * below:.1f} % of the mask below {tlo:.0f} HU (fat/air), {100 * above:.1f} % above "
                     f"{thi:.0f} HU (dense lesion, lipiodol, calcification or bone); limit "
                     f"{100 * c.outlier_max_fraction:.0f} %", round(below + above, 4), c.outlier_max_fraction))
    cn = contrast_and_noise(ct, mask, c)
    sigma, contrast = cn["noise_sigma_hu"], cn["contrast_hu"]
    if contrast is None:
        out.append(_flag("low_contrast", False, "not evaluated (no soft tissue around the mask)", evaluated=False))
    else:
        cnr = contrast / sigma if sigma else float("inf")
        low = contrast < c.min_contrast_hu or cnr < c.min_contrast_to_noise
        out.append(_flag("low_contrast", low,
                         f"liver median {cn['liver_median_hu']:.0f} HU vs adjacent soft tissue "
                         f"{cn['surrounding_median_hu']:.0f} HU: contrast {contrast:.0f} HU (min "
                         f"{c.min_contrast_hu:.0f}), contrast/noise {cnr:.1f} (min {c.min_contrast_to_noise})",
                         {"contrast_hu": round(contrast, 1), "contrast_to_noise": round(cnr, 2)},
                         {"min_contrast_hu": c.min_contrast_hu, "min_contrast_to_noise": c.min_contrast_to_noise}))
    if sigma is None:
        out.append(_flag("high_noise", False, "not evaluated (liver too small)", evaluated=False))
    else:
        out.append(_flag("high_noise", sigma > c.max_noise_hu,
                         f"noise sigma {sigma:.1f} HU in the liver (max {c.max_noise_hu:.0f})", round(sigma, 2),
                         c.max_noise_hu))
    return out
