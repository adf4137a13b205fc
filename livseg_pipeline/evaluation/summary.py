"""Statistics over cases: median, IQR, mean, min, max per metric and the share of RV outside [0.9, 1.1].

NaN values (undefined: both masks empty) are left out and counted in ``n_nan``. Infinite values
(one mask empty) are kept, so a failed case moves the median, mean and max the honest way; they
are counted in ``n_inf``. In JSON, NaN is written as ``null`` and infinity as the string ``"inf"``
(strict JSON has neither).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from livseg_pipeline.evaluation.metrics import EMPTY_STATES, METRIC_KEYS

RV_RANGE = (0.9, 1.1)
PLAIN_NAMES = {"dsc": "DSC", "rv": "RV", "msd_mm": "MSD (mm)", "hd_mm": "HD (mm)",
               "hd95_mm": "HD95 (mm)", "vol_ref_ml": "V ref (mL)", "vol_pred_ml": "V pred (mL)"}


def _percentiles(values: np.ndarray, qs: Sequence[float]) -> list[float]:
    # numpy interpolates inf - inf to nan; compute on a huge stand-in and map it back.
    big = 1e300
    p = np.percentile(np.where(np.isinf(values), big, values), qs)
    return [math.inf if v >= big / 2 else float(v) for v in p]


def metric_summary(values: Iterable[float]) -> dict:
    """Statistics of one metric over cases.

    >>> s = metric_summary([1.0, 2.0, 3.0, float("nan"), float("inf")])
    >>> s["n"], s["n_nan"], s["n_inf"], s["median"], s["max"], s["mean"]
    (4, 1, 1, 2.5, inf, inf)
    """
    v = np.asarray(list(values), dtype=float)
    nan = np.isnan(v)
    v = v[~nan]
    out = {"n": int(v.size), "n_nan": int(nan.sum()), "n_inf": int(np.isinf(v).sum())}
    if v.size == 0:
        return {**out, **dict.fromkeys(("median", "q1", "q3", "iqr", "mean", "min", "max"), math.nan)}
    q1, med, q3 = _percentiles(v, (25, 50, 75))
    return {**out, "median": med, "q1": q1, "q3": q3, "iqr": q3 - q1 if math.isfinite(q3) else math.inf,
            "mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}


def rv_outside(rows: Sequence[Mapping], lo: float = RV_RANGE[0], hi: float = RV_RANGE[1]) -> dict:
    """Cases whose RV lies outside ``[lo, hi]`` (the paper's 10 % activity criterion).

    >>> r = rv_outside([{"case": "a", "rv": 0.95}, {"case": "b", "rv": 1.2}, {"case": "c", "rv": float("nan")}])
    >>> r["count"], r["n"], r["share"], r["cases"]
    (1, 2, 0.5, ['b'])
    """
    valid = [r for r in rows if not math.isnan(r["rv"])]
    out = [r["case"] for r in valid if not lo <= r["rv"] <= hi]
    return {"range": [lo, hi], "count": len(out), "n": len(valid),
            "share": len(out) / len(valid) if valid else math.nan, "cases": out}


def summarize(rows: Sequence[Mapping]) -> dict:
    """Summary of per-case rows (dicts with ``case``, the metric keys and ``empty``)."""
    return {
        "n_cases": len(rows),
        "metrics": {k: metric_summary(r[k] for r in rows) for k in METRIC_KEYS},
        "rv_outside_0.9_1.1": rv_outside(rows),
        "empty_masks": {s: [r["case"] for r in rows if r["empty"] == s] for s in EMPTY_STATES if s != "none"},
    }


def json_safe(obj):
    """NaN -> None, +/-inf -> "inf"/"-inf", recursively (for strict JSON).

    >>> json_safe({"a": [float("nan"), float("inf"), 1.5]})
    {'a': [None, 'inf', 1.5]}
    """
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    return obj


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "-"
    return "inf" if math.isinf(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def format_table(summary: Mapping, keys: Sequence[str] = METRIC_KEYS) -> str:
    """A fixed-width text table of a :func:`summarize` result."""
    head = f"{'metric':<12} {'n':>4} {'median':>9} {'IQR':>19} {'mean':>9} {'min':>9} {'max':>9}"
    lines = [head, "-" * len(head)]
    for k in keys:
        s = summary["metrics"][k]
        iqr = f"[{_fmt(s['q1'])}, {_fmt(s['q3'])}]"
        lines.append(f"{PLAIN_NAMES[k]:<12} {s['n']:>4} {_fmt(s['median']):>9} {iqr:>19} {_fmt(s['mean']):>9} "
                     f"{_fmt(s['min']):>9} {_fmt(s['max']):>9}")
    rv = summary["rv_outside_0.9_1.1"]
    lines.append(f"RV outside [0.9, 1.1]: {rv['count']}/{rv['n']} cases"
                 + (f" ({', '.join(rv['cases'][:10])}{', ...' if rv['count'] > 10 else ''})" if rv["count"] else ""))
    for state, cases in summary["empty_masks"].items():
        if cases:
            lines.append(f"empty {state} mask(s): {len(cases)} ({', '.join(cases[:10])})")
    return "\n".join(lines)
