"""Per-case liver report: volume, mass, HU statistics, optional SIRT activity, QC flags.

Two files per case, both written atomically: ``<case_id>_report.json`` (everything, machine
readable) and ``<case_id>_report.txt`` (a short summary for people, with each formula written out
next to its inputs). Activities come from :mod:`livseg_pipeline.clinical.activity`.

>>> import numpy as np
>>> from livseg_pipeline.io.image_io import Geometry, Image
>>> ct = Image(np.full((4, 10, 10), 100, np.int16), Geometry((1.0, 1.0, 2.5)))
>>> mask = ct.with_array((np.arange(400).reshape(4, 10, 10) < 200).astype(np.uint8))
>>> s = liver_statistics(ct, mask)
>>> s["volume_ml"], s["mass_g"], s["mean_hu"]
(0.5, 0.525, 100.0)
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from livseg_pipeline.clinical.activity import (
    ActivityInputError,
    SirtConstants,
    bsa_activity,
    lung_dose_gy,
    mird_activity_gbq,
)
from livseg_pipeline.io.image_io import Image
from livseg_pipeline.utils.files import atomic_path, save_json

MIRD_FORMULA = "A [GBq] = D [Gy] x M [kg] / ({c} x (1 - LSF))"
BSA_FORMULA = ("A [GBq] = (BSA [m^2] - {offset}) + V_tumour/V_liver, BSA = {k} x height[m]^{a} x weight[kg]^{b} "
               "(DuBois); reduced by the lung shunt table")


@dataclass(frozen=True)
class ReportOptions:
    """What the report computes. Activity is computed only when asked: MIRD when
    ``target_dose_gy`` is set, BSA when ``height_m`` and ``weight_kg`` are set; both need the
    measured ``lung_shunt_fraction`` (a fraction, 0.08 for 8 %; give 0 explicitly if none)."""

    density_g_per_ml: float = 1.05
    target_dose_gy: float | None = None
    lung_shunt_fraction: float | None = None
    height_m: float | None = None
    weight_kg: float | None = None
    tumour_involvement: float = 0.0          # V_tumour / V_total_liver for the BSA method
    constants: SirtConstants = field(default_factory=SirtConstants)

    def __post_init__(self) -> None:
        if not 0.5 <= float(self.density_g_per_ml) <= 2.0:
            raise ActivityInputError(f"liver density must be in g/mL within [0.5, 2], got {self.density_g_per_ml}")
        if self.target_dose_gy is not None and not float(self.target_dose_gy) > 0:
            raise ActivityInputError(f"target dose must be > 0 Gy, got {self.target_dose_gy}")
        if self.lung_shunt_fraction is not None and not 0.0 <= float(self.lung_shunt_fraction) < 1.0:
            raise ActivityInputError(f"lung shunt fraction must be in [0, 1), got {self.lung_shunt_fraction}")
        if (self.height_m is None) != (self.weight_kg is None):
            raise ActivityInputError("the BSA method needs both height_m and weight_kg")
        if self.wants_activity and self.lung_shunt_fraction is None:
            raise ActivityInputError("activity needs the lung shunt fraction (lung_shunt_fraction; 0 if none)")

    @property
    def wants_activity(self) -> bool:
        return self.target_dose_gy is not None or self.height_m is not None


def liver_statistics(ct: Image, mask: Image, density_g_per_ml: float = 1.05) -> dict:
    """Volume (mL), mass (g), and HU statistics inside ``mask`` (which lies on ``ct``'s grid)."""
    if ct.array.shape != mask.array.shape:
        raise ValueError(f"mask shape {mask.array.shape} differs from CT shape {ct.array.shape}")
    inside = np.asarray(mask.array) > 0
    n = int(inside.sum())
    volume_ml = n * ct.voxel_volume_ml
    stats = {"voxels": n, "voxel_volume_ml": ct.voxel_volume_ml, "volume_ml": round(volume_ml, 3),
             "density_g_per_ml": float(density_g_per_ml), "mass_g": round(volume_ml * density_g_per_ml, 3)}
    if n:
        hu = np.asarray(ct.array)[inside].astype(np.float64)
        p5, p50, p95 = np.percentile(hu, [5, 50, 95])
        stats.update(mean_hu=round(float(hu.mean()), 2), median_hu=round(float(p50), 2),
                     std_hu=round(float(hu.std()), 2), p05_hu=round(float(p5), 2), p95_hu=round(float(p95), 2))
    else:
        stats.update(mean_hu=None, median_hu=None, std_hu=None, p05_hu=None, p95_hu=None)
    return stats


def activity_section(liver_mass_g: float, options: ReportOptions) -> dict:
    """The requested activity prescriptions with their formulas and inputs."""
    c = options.constants
    out: dict = {"constants": c.to_dict()}
    lsf = options.lung_shunt_fraction
    if options.target_dose_gy is not None:
        mass_kg = liver_mass_g / 1000.0
        a = mird_activity_gbq(options.target_dose_gy, mass_kg, lsf, c.mird_constant)
        d_lung = lung_dose_gy(a, lsf, c)
        out["mird"] = {"formula": MIRD_FORMULA.format(c=c.mird_constant),
                       "inputs": {"target_dose_gy": options.target_dose_gy, "liver_mass_kg": round(mass_kg, 4),
                                  "lung_shunt_fraction": lsf, "mird_constant": c.mird_constant},
                       "activity_gbq": round(a, 4), "lung_dose_gy": round(d_lung, 2),
                       "lung_dose_limit_gy": c.lung_dose_limit_gy,
                       "lung_dose_exceeds_limit": bool(d_lung > c.lung_dose_limit_gy)}
    if options.height_m is not None:
        r = bsa_activity(options.height_m, options.weight_kg, lsf, options.tumour_involvement, c)
        out["bsa"] = {"formula": BSA_FORMULA.format(offset=c.bsa_offset_gbq, k=c.dubois_coefficient,
                                                   a=c.dubois_height_exponent, b=c.dubois_weight_exponent),
                      "inputs": {"height_m": options.height_m, "weight_kg": options.weight_kg,
                                 "lung_shunt_fraction": lsf, "tumour_involvement": options.tumour_involvement},
                      **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}}
    return out


def build_report(case_id: str, ct: Image, mask: Image, options: ReportOptions | None = None,
                 qc: dict | None = None) -> dict:
    """The report as a JSON-ready dict (see :func:`format_report_text` for the text form)."""
    options = options or ReportOptions()
    liver = liver_statistics(ct, mask, options.density_g_per_ml)
    report = {
        "case_id": case_id,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": ct.source,
        "grid": {"shape_zyx": list(ct.array.shape), "spacing_xyz_mm": list(ct.spacing),
                 "orientation": ct.geometry.orientation_code},
        "liver": liver,
        "status": "automatic segmentation, not reviewed",
    }
    if options.wants_activity:
        if liver["voxels"] == 0:
            raise ActivityInputError(f"{case_id}: the liver mask is empty; no activity can be computed")
        report["activity"] = activity_section(liver["mass_g"], options)
    if qc is not None:
        report["qc"] = qc
    return report


def format_report_text(report: dict) -> str:
    """Short human-readable summary of :func:`build_report`'s dict."""
    lv = report["liver"]
    lines = [f"livseg liver report - case {report['case_id']} ({report['created_utc']})",
             f"Status: {report['status']}",
             f"Liver volume: {lv['volume_ml']:.1f} mL ({lv['voxels']} voxels)",
             f"Liver mass:   {lv['mass_g']:.1f} g (density {lv['density_g_per_ml']} g/mL)"]
    if lv["mean_hu"] is not None:
        lines.append(f"HU in mask:   mean {lv['mean_hu']:.1f}, median {lv['median_hu']:.1f}, "
                     f"5-95 % {lv['p05_hu']:.0f} to {lv['p95_hu']:.0f}")
    act = report.get("activity", {})
    if "mird" in act:
        m, i = act["mird"], act["mird"]["inputs"]
        lines += ["", "SIRT activity, mono-compartment MIRD model (glass microspheres):",
                  f"  {m['formula']}",
                  f"  D = {i['target_dose_gy']} Gy, M = {i['liver_mass_kg']} kg, LSF = {i['lung_shunt_fraction']}",
                  f"  A = {m['activity_gbq']:.3f} GBq; lung dose {m['lung_dose_gy']:.1f} Gy"
                  + (f" EXCEEDS the {m['lung_dose_limit_gy']} Gy limit" if m["lung_dose_exceeds_limit"] else "")]
    if "bsa" in act:
        b, i = act["bsa"], act["bsa"]["inputs"]
        lines += ["", "SIRT activity, BSA method (resin microspheres):", f"  {b['formula']}",
                  f"  height = {i['height_m']} m, weight = {i['weight_kg']} kg, LSF = {i['lung_shunt_fraction']}, "
                  f"V_tumour/V_liver = {i['tumour_involvement']}",
                  f"  BSA = {b['bsa_m2']:.3f} m^2; A before reduction = {b['activity_before_reduction_gbq']:.3f} GBq"]
        if b["do_not_treat"]:
            lines.append("  LSF above the insert's limit: DO NOT TREAT with the BSA method")
        else:
            lines.append(f"  lung shunt reduction {100 * b['lung_shunt_reduction']:.0f} % -> "
                         f"A = {b['activity_gbq']:.3f} GBq")
    qc = report.get("qc")
    if qc is not None:
        flags = [f for f in qc.get("flags", []) if f.get("flagged")]
        lines += ["", f"QC: {len(flags)} flag(s)" + (" - review this case" if flags else "")]
        lines += [f"  [{f['name']}] {f['reason']}" for f in flags]
    lines += ["", "Activities are decision support only; a physicist must verify every prescription."]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: str | Path, case_id: str) -> tuple[Path, Path]:
    """Write ``<case_id>_report.json`` and ``<case_id>_report.txt`` atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    json_path, txt_path = out_dir / f"{case_id}_report.json", out_dir / f"{case_id}_report.txt"
    save_json(report, json_path)
    with atomic_path(txt_path) as tmp:
        tmp.write_text(format_report_text(report), encoding="utf-8")
    return json_path, txt_path
