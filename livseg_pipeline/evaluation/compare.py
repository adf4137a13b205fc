"""Inter-observer study: compare every pair of segmentation sets on the cases they share.

As in the paper (Fig. 2: CNN vs manual vs adjusted for expert 1; Fig. 4: manual e1 vs manual e2 and
adjusted e1 vs adjusted e2), each pair ``A vs B`` is evaluated on the cases present in both sets,
with ``B`` as the reference: RV = V_A / V_B (the paper's RV(seg1, seg2) = V1 / V2).

Outputs in ``out_dir`` (atomic):

* ``pairwise_metrics.csv``: ``pair, set_a, set_b, case, dsc, rv, msd_mm, hd_mm, hd95_mm,
  vol_a_ml, vol_b_ml, empty, path_a, path_b``.
* ``pairwise_summary.csv``: one row per pair: ``n``, median and quartiles of each metric, count and
  share of RV outside [0.9, 1.1].
* ``pairwise_summary.json``: the sets, and per pair the full summary (median, IQR, mean, min, max).
* ``pairwise_boxplots.png``: 2x2 panel DSC / RV / MSD / HD, one box per pair.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from livseg_pipeline.evaluation.cases import CaseMatchError, find_cases
from livseg_pipeline.evaluation.evaluate import Job, run_jobs, write_csv
from livseg_pipeline.evaluation.metrics import METRIC_KEYS
from livseg_pipeline.evaluation.plots import metric_boxplots
from livseg_pipeline.evaluation.summary import json_safe, summarize
from livseg_pipeline.utils.files import save_json

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_RENAME = {"vol_pred_ml": "vol_a_ml", "vol_ref_ml": "vol_b_ml", "prediction": "path_a", "reference": "path_b"}
PAIR_CSV_COLUMNS = ("pair", "set_a", "set_b", "case", *METRIC_KEYS, "empty", "prediction", "reference")
SUMMARY_KEYS = ("dsc", "rv", "msd_mm", "hd_mm", "hd95_mm")


def pair_label(a: str, b: str) -> str:
    return f"{a} vs {b}"


def resolve_pairs(names: Sequence[str], pairs: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """The pairs to compare: the given ones (checked), or every pair in the order the sets were given.

    >>> resolve_pairs(["cnn", "manual", "adjusted"], None)
    [('cnn', 'manual'), ('cnn', 'adjusted'), ('manual', 'adjusted')]
    """
    if pairs is None:
        return list(itertools.combinations(names, 2))
    for a, b in pairs:
        for n in (a, b):
            if n not in names:
                raise CaseMatchError(f"pair {a}:{b}: no set named {n!r} (sets: {', '.join(names)})")
        if a == b:
            raise CaseMatchError(f"pair {a}:{b}: a set compared with itself")
    return list(dict.fromkeys(pairs))


@dataclass
class CompareResult:
    rows: list[dict]            # one per (pair, case)
    summaries: dict[str, dict]  # pair label -> summarize() result
    out_dir: Path
    n_cached: int


def compare_sets(sets: Mapping[str, str | Path], out_dir: str | Path,
                 pairs: Sequence[tuple[str, str]] | None = None, num_processes: int = 1,
                 label: int | None = None, connectivity: int = 1, force: bool = False,
                 plot: bool = True, progress: bool = True) -> CompareResult:
    """Compare the named segmentation sets pairwise (see the module docstring) and write the outputs."""
    if len(sets) < 2:
        raise CaseMatchError("--compare needs at least two sets NAME=DIR")
    for name in sets:
        if not _NAME.match(name):
            raise CaseMatchError(f"set name {name!r}: use letters, digits, '_', '.', '+', '-'")
    out_dir = Path(out_dir)
    cases = {name: find_cases(path) for name, path in sets.items()}
    pairs = resolve_pairs(list(sets), pairs)
    jobs: list[Job] = []
    for a, b in pairs:
        common = sorted(set(cases[a]) & set(cases[b]))
        if not common:
            raise CaseMatchError(f"no cases in common between {a} ({sets[a]}) and {b} ({sets[b]})")
        jobs += [Job(c, cases[b][c], cases[a][c], label, label, connectivity, group=f"{a}__vs__{b}")
                 for c in common]
    rows, n_cached = run_jobs(jobs, out_dir / "per_case", num_processes, desc="comparing", force=force,
                              progress=progress)
    by_pair: dict[str, list[dict]] = {pair_label(a, b): [] for a, b in pairs}
    out_rows = []
    for job, row in zip(jobs, rows):
        a, b = job.group.split("__vs__")
        by_pair[pair_label(a, b)].append(row)
        out_rows.append({"pair": pair_label(a, b), "set_a": a, "set_b": b, **row})
    summaries = {p: summarize(r) for p, r in by_pair.items()}

    write_csv(out_rows, out_dir / "pairwise_metrics.csv", PAIR_CSV_COLUMNS, rename=lambda c: _RENAME.get(c, c))
    table = []
    for (a, b), (p, s) in zip(pairs, summaries.items()):
        line = {"pair": p, "set_a": a, "set_b": b, "n": s["n_cases"]}
        for k in SUMMARY_KEYS:
            m = s["metrics"][k]
            line.update({f"median_{k}": m["median"], f"q1_{k}": m["q1"], f"q3_{k}": m["q3"]})
        rv = s["rv_outside_0.9_1.1"]
        line.update(rv_outside_count=rv["count"], rv_outside_share=rv["share"])
        table.append(line)
    write_csv(table, out_dir / "pairwise_summary.csv", list(table[0]))
    save_json(json_safe({
        "sets": {n: {"path": str(p), "n_cases": len(cases[n])} for n, p in sets.items()},
        "convention": "pair 'A vs B': B is the reference, RV = V_A / V_B",
        "pairs": {p: {"set_a": a, "set_b": b, **summaries[p]} for (a, b), p in zip(pairs, summaries)},
    }), out_dir / "pairwise_summary.json")
    if plot:
        metric_boxplots({f"{p}\n(n={len(r)})": r for p, r in by_pair.items()}, out_dir / "pairwise_boxplots.png",
                        title="Pairwise agreement")
    return CompareResult(out_rows, summaries, out_dir, n_cached)
