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
``hu_outliers``         inside the mask eroded by one voxel in-plane, after a 3x3 in-plane mean:
                        more than 1 % below -50 HU (fat/air: a leak) or more than 0.5 mL above
                        300 HU (dense material: lipiodol, calcification, a lesion of very different
                        density, or a leak into ribs or spine)
``low_contrast``        liver vs. adjacent soft tissue (a 3-15 mm shell outside the mask, voxels in
                        [-50, 300] HU) differs by less than 15 HU *and* by less than 0.5 noise sigma
``high_noise``          robust noise sigma in the liver > 16 HU (low-dose CT, e.g. of SPECT/CT).
                        Sigma is the MAD of an in-plane high-pass residual (voxel minus the mean of
                        its 4 neighbours, scaled for white noise) inside the liver eroded by 2 voxels.
                        CT noise is correlated in-plane, so this reads about half the pixel standard
                        deviation (phantom: 0.47x): 16 HU here is ~30-35 HU pixel noise. Diagnostic
                        portal-venous CT reads 6-7 HU (IRCAD), 7.6 HU (TotalSegmentator example)
``position``            liver centroid less than 20 mm to the patient's right of the body midline
                        (situs inversus, a wrong orientation in the header), more than 25 % of the
                        liver left of the midline, or liver reaching more than 0.7 body half-widths
                        to the left (a left lobe wrapping around the spleen, or a leak into it)
``shape``               cranio-caudal extent > 200 mm (an elongated liver / Riedel's lobe, or a leak
                        into the lower abdomen)

The thresholds were set on the phantom cohort and checked on the real IRCAD and TotalSegmentator
cases; documentation/clinical_workflow.md gives the counts.

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
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from livseg_pipeline.io.image_io import Image, reorient


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
    max_dense_ml: float = 0.5
    shell_mm: tuple[float, float] = (3.0, 15.0)
    min_contrast_hu: float = 15.0
    min_contrast_to_noise: float = 0.5
    max_noise_hu: float = 16.0
    body_threshold_hu: float = -300.0
    min_right_offset_mm: float = 20.0
    max_left_fraction: float = 0.25
    max_left_reach: float = 0.70
    max_craniocaudal_mm: float = 200.0


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


def position_features(ct: Image, mask: Image, config: QCConfig) -> dict | None:
    """Where the liver lies relative to the body, in the patient's frame (any input orientation).

    Over the slices containing liver: the body (largest component above ``body_threshold_hu``) gives
    the midline (its centroid along the patient's left axis) and half-width (1st-99th percentile).
    Returns the liver centroid's offset from the midline (mm; negative = patient's right), the
    fraction of liver voxels left of the midline, the left reach (leftmost liver voxel beyond the
    midline in body half-widths) and the cranio-caudal extent (mm). ``None`` without a body.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct_l, m_l = reorient(ct, "LPS"), reorient(mask, "LPS")
    arr = np.asarray(m_l.array) > 0
    z = np.nonzero(arr.any(axis=(1, 2)))[0]
    zs = slice(int(z.min()), int(z.max()) + 1)
    body = np.asarray(ct_l.array)[zs] > config.body_threshold_hu
    step = 2 if body.size > 8_000_000 else 1  # the midline needs no full resolution
    lab, n = ndimage.label(body[::step, ::step, ::step])
    if n == 0:
        return None
    largest = np.argmax(np.bincount(lab.ravel())[1:]) + 1
    sx = ct_l.spacing[0]
    body_x = (np.nonzero(lab == largest)[2] * step).astype(np.float64) * sx
    midline = float(body_x.mean())
    p1, p99 = np.percentile(body_x, [1, 99])
    half_width = max(float(p99 - p1) / 2, sx)
    liver_x = np.nonzero(arr[zs])[2].astype(np.float64) * sx
    return {"offset_mm": float(liver_x.mean() - midline), "left_fraction": float((liver_x > midline).mean()),
            "left_reach": float((liver_x.max() - midline) / half_width),
            "craniocaudal_mm": float(len(range(zs.start, zs.stop)) * ct_l.spacing[2])}


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
        flags += _position_flags(ct, mask, c)
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


def _position_flags(ct: Image, mask: Image, c: QCConfig) -> list[dict]:
    pos = position_features(ct, mask, c)
    if pos is None:
        return [_flag("position", False, "not evaluated (no body found)", evaluated=False)]
    off, frac, reach = pos["offset_mm"], pos["left_fraction"], pos["left_reach"]
    problems = []
    if off > -c.min_right_offset_mm:
        problems.append(f"centroid only {off:+.0f} mm from the midline (expected <= {-c.min_right_offset_mm:.0f}, "
                        "patient's right; situs inversus or a wrong orientation in the header?)")
    if frac > c.max_left_fraction:
        problems.append(f"{100 * frac:.0f} % of the liver left of the midline (max {100 * c.max_left_fraction:.0f} %)")
    if reach > c.max_left_reach:
        problems.append(f"reaches {reach:.2f} body half-widths to the left (max {c.max_left_reach})")
    reason = "; ".join(problems) if problems else (
        f"centroid {abs(off):.0f} mm right of the midline, {100 * frac:.0f} % left of it, left reach {reach:.2f}")
    cc = pos["craniocaudal_mm"]
    return [_flag("position", bool(problems), reason, {k: round(v, 3) for k, v in pos.items()},
                  {"offset_mm": -c.min_right_offset_mm, "left_fraction": c.max_left_fraction,
                   "left_reach": c.max_left_reach}),
            _flag("shape", cc > c.max_craniocaudal_mm,
                  f"cranio-caudal extent {cc:.0f} mm " + (f"> {c.max_craniocaudal_mm:.0f} mm (elongated liver, "
                                                          "Riedel's lobe, or a leak into the abdomen)"
                                                          if cc > c.max_craniocaudal_mm else
                                                          f"<= {c.max_craniocaudal_mm:.0f} mm"),
                  round(cc, 1), c.max_craniocaudal_mm)]


def _intensity_flags(ct: Image, mask: Image, arr: np.ndarray, c: QCConfig) -> list[dict]:
    hu = np.asarray(ct.array)[arr].astype(np.float32)
    med, mean = float(np.median(hu)), float(hu.mean())
    lo, hi = c.median_hu_range
    out = [_flag("hu_implausible", not lo <= med <= hi,
                 f"median HU in mask {med:.0f} (mean {mean:.0f}) {'within' if lo <= med <= hi else 'outside'} "
                 f"[{lo:.0f}, {hi:.0f}]", round(med, 1), [lo, hi])]
    # Inside the mask eroded by one voxel in-plane (partial volume with ribs or fat at the border is
    # not a finding), after a 3x3 in-plane mean (noise alone, as in low-dose CT, is not either).
    box = _crop(arr, (0, 2, 2))
    core = ndimage.binary_erosion(arr[box], structure=np.ones((1, 3, 3), bool))
    if not core.any():
        core = arr[box]
    smooth = ndimage.uniform_filter(np.asarray(ct.array)[box].astype(np.float32), size=(1, 3, 3))[core]
    tlo, thi = c.tissue_hu_range
    below = float((smooth < tlo).mean())
    dense_ml = float((smooth > thi).sum()) * ct.voxel_volume_ml
    bad = below > c.outlier_max_fraction or dense_ml > c.max_dense_ml
    out.append(_flag("hu_outliers", bad,
                     f"{100 * below:.1f} % of the mask below {tlo:.0f} HU (fat/air leak; max "
                     f"{100 * c.outlier_max_fraction:.0f} %), {dense_ml:.1f} mL above {thi:.0f} HU (dense lesion, "
                     f"lipiodol, calcification or bone; max {c.max_dense_ml} mL)",
                     {"fraction_below": round(below, 4), "dense_ml": round(dense_ml, 2)},
                     {"fraction_below": c.outlier_max_fraction, "dense_ml": c.max_dense_ml}))
    cn = contrast_and_noise(ct, mask, c)
    sigma, contrast = cn["noise_sigma_hu"], cn["contrast_hu"]
    if contrast is None:
        out.append(_flag("low_contrast", False, "not evaluated (no soft tissue around the mask)", evaluated=False))
    else:
        cnr = contrast / sigma if sigma else float("inf")
        low = contrast < c.min_contrast_hu and cnr < c.min_contrast_to_noise
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
