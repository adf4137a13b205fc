"""Cross-validation splits that never leak a patient or a duplicated scan between train and val.

``splits_final.json`` is nnU-Net's format: a list of 5 ``{"train": [...], "val": [...]}``. Cases
are grouped first (same ``patient_id``, or the same scan found twice by
:mod:`livseg_pipeline.experiment_planning.duplicates` unless the policy is ``keep``); each group goes
to one fold (largest groups first, each to the fold with the fewest cases; groups of equal size in
an order fixed by the seed). Cases with training weight 0 (``--duplicates drop``) are left out.

The file is the user's to edit. livseg notes the sha256 of each file it writes in
``.splits_final.sha256`` beside it: while the file is as livseg wrote it, it is rebuilt when the dataset
changes (a new source was added); once edited by hand it is never overwritten unless asked
(``overwrite=True``, ``lvs_convert --overwrite-splits``), only checked, and its problems printed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from livseg_pipeline.experiment_planning.duplicates import connected_groups
from livseg_pipeline.utils.files import atomic_path, load_json, save_json

DEFAULT_SEED = 12345  # nnU-Net's seed for its 5-fold split
DEFAULT_FOLDS = 5


def split_groups(cases: dict[str, dict], duplicates: dict | None = None) -> list[list[str]]:
    """Groups of case ids that must share a fold: one patient's scans, and duplicate groups
    (unless the duplicate policy is ``keep``).

    >>> split_groups({"a": {"patient_id": "p"}, "b": {"patient_id": "p"}, "c": {"patient_id": "q"},
    ...               "d": {"patient_id": "r"}}, {"policy": "group", "groups": [["c", "d"]]})
    [['a', 'b'], ['c', 'd']]
    """
    first_of_patient: dict[str, str] = {}
    pairs = []
    for c, rec in sorted(cases.items()):
        pid = str(rec.get("patient_id") or c)
        pairs.append((first_of_patient.setdefault(pid, c), c))
    if duplicates and duplicates.get("policy", "group") != "keep":
        pairs += [(g[0], c) for g in duplicates.get("groups", []) for c in g[1:] if g[0] in cases and c in cases]
    return connected_groups(sorted(cases), pairs)


def assign_groups(cases: dict[str, dict], duplicates: dict) -> None:
    """Write ``group_id`` (smallest patient id of the split group) and ``training_weight`` into the
    dataset.json case records, in place."""
    weights = duplicates.get("weights", {})
    for group in split_groups(cases, duplicates):
        gid = min(str(cases[c].get("patient_id") or c) for c in group)
        for c in group:
            cases[c]["group_id"] = gid
            cases[c]["training_weight"] = float(weights.get(c, 1.0))


def build_splits(cases: dict[str, dict], n_folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED) -> list[dict]:
    """Folds from dataset.json case records (``group_id``, ``training_weight``).

    >>> cases = {f"c{i}": {"group_id": f"g{i // 2}"} for i in range(10)}
    >>> s = build_splits(cases, 5, 0)
    >>> len(s), sorted(len(f["val"]) for f in s), all(f"c{2*k}" in f["val"] for f in s for k in range(5)
    ...                                                if f"c{2*k+1}" in f["val"])
    (5, [2, 2, 2, 2, 2], True)
    """
    used = {c: r for c, r in cases.items() if float(r.get("training_weight", 1.0)) > 0}
    groups: dict[str, list[str]] = {}
    for c, r in sorted(used.items()):
        groups.setdefault(str(r.get("group_id") or r.get("patient_id") or c), []).append(c)
    if not groups:
        return []
    if len(groups) == 1:
        allc = sorted(used)
        print(f"splits: all {len(allc)} cases form one group; nothing can be held out (val = train)")
        return [{"train": allc, "val": list(allc)}]
    k = min(n_folds, len(groups))
    if k < n_folds:
        print(f"splits: only {len(groups)} independent groups; writing {k} folds instead of {n_folds}")
    rng = np.random.default_rng(seed)
    order = [sorted(groups)[i] for i in rng.permutation(len(groups))]
    order.sort(key=lambda gid: -len(groups[gid]))  # stable: seeded order within equal sizes
    folds: list[list[str]] = [[] for _ in range(k)]
    for gid in order:
        min(folds, key=len).extend(groups[gid])
    all_cases = sorted(used)
    return [{"train": sorted(set(all_cases) - set(f)), "val": sorted(f)} for f in folds]


def check_splits(splits: list, cases: dict[str, dict]) -> list[str]:
    """Problems of a (possibly hand-edited) split: malformed folds, unknown cases, a group spread
    over several validation folds, cases in no validation fold, train/val overlap."""
    problems = []
    if not isinstance(splits, list) or not all(isinstance(f, dict) and {"train", "val"} <= set(f) for f in splits):
        return ["not a list of {'train': [...], 'val': [...]}"]
    fold_of: dict[str, int] = {}
    for k, f in enumerate(splits):
        unknown = sorted((set(f["train"]) | set(f["val"])) - set(cases))
        if unknown:
            problems.append(f"fold {k}: unknown cases {unknown[:5]}")
        both = sorted(set(f["train"]) & set(f["val"]))
        if both:
            problems.append(f"fold {k}: cases in train and val {both[:5]}")
        for c in f["val"]:
            fold_of.setdefault(c, k)
    used = [c for c, r in cases.items() if float(r.get("training_weight", 1.0)) > 0]
    missing = sorted(set(used) - set(fold_of))
    if missing:
        problems.append(f"{len(missing)} cases in no validation fold (e.g. {', '.join(missing[:5])})")
    groups: dict[str, set[int]] = {}
    for c, k in fold_of.items():
        if c in cases:
            gid = str(cases[c].get("group_id") or cases[c].get("patient_id") or c)
            groups.setdefault(gid, set()).add(k)
    split_up = sorted(g for g, ks in groups.items() if len(ks) > 1)
    if split_up:
        problems.append(f"groups spread over several folds (patient or duplicate leakage): {', '.join(split_up[:5])}")
    return problems


def make_splits(raw_dataset_dir: str | Path, n_folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED,
                overwrite: bool = False, verbose: bool = True) -> list[dict]:
    """Write ``splits_final.json`` from dataset.json unless it exists (then it is checked and kept)."""
    raw_dir = Path(raw_dataset_dir)
    cases = load_json(raw_dir / "dataset.json").get("cases", {})
    path = raw_dir / "splits_final.json"
    stamp = raw_dir / ".splits_final.sha256"
    if path.exists() and not overwrite and _sha256(path) == _read(stamp):
        overwrite = True  # still exactly as livseg wrote it: not a user's edit
    if path.exists() and not overwrite:
        try:
            splits = load_json(path)
        except ValueError as e:
            print(f"splits: {e}; kept as is (rerun with --overwrite-splits to rebuild)")
            return []
        problems = check_splits(splits, cases)
        if problems and verbose:
            print(f"splits: {path} kept as edited, but: " + "; ".join(problems)
                  + " (rerun with --overwrite-splits to rebuild)")
        return splits if isinstance(splits, list) else []
    splits = build_splits(cases, n_folds, seed)
    save_json(splits, path)
    with atomic_path(stamp) as tmp:
        tmp.write_text(_sha256(path) + "\n")
    if verbose:
        print(f"splits: {len(splits)} folds, val sizes {[len(f['val']) for f in splits]} -> {path.name}")
    return splits


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""
