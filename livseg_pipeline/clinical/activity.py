"""SIRT (Y-90 radioembolisation) activity prescriptions from a liver volume: MIRD and BSA methods.

Both methods are the standard ones in the package inserts; every constant is a field of
:class:`SirtConstants`, so a site can match its own insert or protocol. Sources:

* **Mono-compartment (MIRD) model**, glass microspheres (TheraSphere package insert, Boston
  Scientific / BTG; Salem & Thurston, JVIR 2006): ``A [GBq] = D [Gy] x M [kg] / (49.67 x (1 - LSF))``.
  49.67 Gy kg / GBq is the energy a fully absorbed GBq of Y-90 deposits per kg (1 GBq of Y-90
  decaying completely releases 49.67 J); some inserts round it to 50 (``mird_constant``). LSF is
  the lung shunt fraction from the Tc-99m MAA scan.
  The lung dose of that activity, ``D_lung = 49.67 x A x LSF / M_lung`` with the conventional lung
  mass of 1 kg, is reported beside it (typical limit 30 Gy per treatment).
* **Body surface area (BSA) method**, resin microspheres (SIR-Spheres package insert, Sirtex
  Medical): ``A [GBq] = (BSA [m^2] - 0.2) + V_tumour / V_total_liver``, with the DuBois formula
  ``BSA = 0.20247 x height[m]^0.725 x weight[kg]^0.425`` (DuBois & DuBois 1916, metric form).
  The tumour involvement term ``V_tumour / V_total_liver`` is an input (0 when no tumour volume is
  known, i.e. whole liver without tumour burden). The insert reduces the activity for lung shunting:
  LSF < 10 %: no reduction; 10 % <= LSF < 15 %: 20 %; 15 % <= LSF <= 20 %: 40 %; LSF > 20 %: do
  not treat (``lung_shunt_reductions``, ``lsf_do_not_treat``).

The constants were transcribed from the package inserts as summarised in the literature; secondary
sources confirmed the BSA form, the MIRD constant (rounded to 50) and the 30 Gy lung limit, not the
shunt reduction table (see documentation/clinical_workflow.md). Verify them against the insert of
the product you use. These numbers support, but never replace, a physicist's plan.

>>> round(mird_activity_gbq(120.0, 1.5, 0.0), 4)
3.6239
>>> round(bsa_dubois_m2(1.75, 70.0), 3)
1.848
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


class ActivityInputError(ValueError):
    """An input to an activity calculation is missing or out of range."""


@dataclass(frozen=True)
class SirtConstants:
    """Constants of the activity formulas (see the module docstring for their sources)."""

    mird_constant: float = 49.67            # Gy kg / GBq (50 in some package inserts)
    lung_mass_kg: float = 1.0               # conventional lung mass for the lung dose estimate
    lung_dose_limit_gy: float = 30.0        # per treatment
    bsa_offset_gbq: float = 0.2
    dubois_coefficient: float = 0.20247     # BSA [m^2] = c x height[m]^a x weight[kg]^b
    dubois_height_exponent: float = 0.725
    dubois_weight_exponent: float = 0.425
    # (LSF lower bound inclusive, reduction fraction), ascending; applies up to lsf_do_not_treat
    lung_shunt_reductions: tuple[tuple[float, float], ...] = ((0.0, 0.0), (0.10, 0.20), (0.15, 0.40))
    lsf_do_not_treat: float = 0.20          # LSF above this: do not treat (resin insert)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lung_shunt_reductions"] = [list(r) for r in self.lung_shunt_reductions]
        return d


def _check_lsf(lsf: float) -> float:
    lsf = float(lsf)
    if not 0.0 <= lsf < 1.0:
        hint = " (give a fraction, e.g. 0.08 for 8 %)" if 1.0 <= lsf <= 100.0 else ""
        raise ActivityInputError(f"lung shunt fraction must be in [0, 1), got {lsf}{hint}")
    return lsf


def mird_activity_gbq(dose_gy: float, liver_mass_kg: float, lsf: float, constant: float = 49.67) -> float:
    """Mono-compartment MIRD activity ``D x M / (constant x (1 - LSF))`` in GBq.

    >>> round(mird_activity_gbq(120.0, 1.5, 0.2, constant=50.0), 4)
    4.5
    >>> mird_activity_gbq(0.0, 1.5, 0.1)
    Traceback (most recent call last):
    ...
    livseg_pipeline.clinical.activity.ActivityInputError: target dose must be > 0 Gy, got 0.0
    """
    if not float(dose_gy) > 0:
        raise ActivityInputError(f"target dose must be > 0 Gy, got {dose_gy}")
    if not float(liver_mass_kg) > 0:
        raise ActivityInputError(f"liver mass must be > 0 kg, got {liver_mass_kg}")
    if not float(constant) > 0:
        raise ActivityInputError(f"MIRD constant must be > 0 Gy kg/GBq, got {constant}")
    lsf = _check_lsf(lsf)
    return float(dose_gy) * float(liver_mass_kg) / (float(constant) * (1.0 - lsf))


def lung_dose_gy(activity_gbq: float, lsf: float, constants: SirtConstants = SirtConstants()) -> float:
    """Lung dose of ``activity_gbq`` with shunt ``lsf``: ``constant x A x LSF / M_lung``."""
    return constants.mird_constant * float(activity_gbq) * _check_lsf(lsf) / constants.lung_mass_kg


def bsa_dubois_m2(height_m: float, weight_kg: float, constants: SirtConstants = SirtConstants()) -> float:
    """DuBois body surface area in m^2 (height in metres, weight in kg)."""
    height_m, weight_kg = float(height_m), float(weight_kg)
    if not 0.5 <= height_m <= 2.5:
        hint = " (give metres, e.g. 1.75)" if 50 <= height_m <= 250 else ""
        raise ActivityInputError(f"height must be in metres within [0.5, 2.5], got {height_m}{hint}")
    if not 20.0 <= weight_kg <= 350.0:
        raise ActivityInputError(f"weight must be in kg within [20, 350], got {weight_kg}")
    return (constants.dubois_coefficient * height_m ** constants.dubois_height_exponent
            * weight_kg ** constants.dubois_weight_exponent)


def lung_shunt_reduction(lsf: float, constants: SirtConstants = SirtConstants()) -> float | None:
    """Fraction by which the resin BSA activity is reduced for ``lsf``; ``None`` = do not treat.

    >>> [lung_shunt_reduction(x) for x in (0.05, 0.10, 0.149, 0.15, 0.20, 0.21)]
    [0.0, 0.2, 0.2, 0.4, 0.4, None]
    """
    lsf = _check_lsf(lsf)
    if lsf > constants.lsf_do_not_treat:
        return None
    reduction = 0.0
    for lower, r in constants.lung_shunt_reductions:
        if lsf >= lower:
            reduction = r
    return reduction


def bsa_activity(height_m: float, weight_kg: float, lsf: float = 0.0, tumour_involvement: float = 0.0,
                 constants: SirtConstants = SirtConstants()) -> dict:
    """Resin-microsphere BSA prescription with the lung shunt reduction.

    Returns ``bsa_m2``, ``activity_before_reduction_gbq``, ``lung_shunt_reduction`` and
    ``activity_gbq`` (``None`` with ``do_not_treat`` True when LSF exceeds the insert's limit).

    >>> r = bsa_activity(1.75, 70.0, lsf=0.12, tumour_involvement=0.25)
    >>> round(r["bsa_m2"], 4), round(r["activity_before_reduction_gbq"], 4), round(r["activity_gbq"], 4)
    (1.8481, 1.8981, 1.5185)
    """
    if not 0.0 <= float(tumour_involvement) <= 1.0:
        raise ActivityInputError(f"tumour involvement V_tumour/V_liver must be in [0, 1], got {tumour_involvement}")
    bsa = bsa_dubois_m2(height_m, weight_kg, constants)
    before = bsa - constants.bsa_offset_gbq + float(tumour_involvement)
    if before <= 0:
        raise ActivityInputError(f"BSA activity is not positive ({before:.3f} GBq) for BSA {bsa:.3f} m^2")
    reduction = lung_shunt_reduction(lsf, constants)
    return {"bsa_m2": bsa, "activity_before_reduction_gbq": before, "lung_shunt_reduction": reduction,
            "activity_gbq": None if reduction is None else before * (1.0 - reduction),
            "do_not_treat": reduction is None}
