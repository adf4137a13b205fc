"""Training progress: one flushed line per epoch, ``training_log.csv`` and ``progress.png``.

The history (one dict per epoch) lives in the checkpoint, and the CSV and the plot are rewritten from
it after every epoch, so after ``--continue`` they show exactly the epochs of the resumed run.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

from livseg_pipeline.utils.files import atomic_path

COLUMNS = ["epoch", "train_loss", "val_dsc", "lr", "epoch_time_s", "segments_per_s", "data_wait_share",
           "val_time_s"]


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def epoch_line(row: dict, total_epochs: int) -> str:
    """The console line of one epoch.

    >>> epoch_line({"epoch": 3, "train_loss": 0.25, "val_dsc": 0.9, "lr": 0.007, "epoch_time_s": 12.0,
    ...             "segments_per_s": 33.3, "data_wait_share": 0.01}, 8)
    'epoch 3/8  loss 0.2500  val DSC 0.9000  lr 0.007  12.0 s  33.3 seg/s  data wait 1%'
    """
    dsc = row.get("val_dsc")
    val = f"  val DSC {dsc:.4f}" if dsc is not None and not math.isnan(dsc) else ""
    return (f"epoch {row['epoch']}/{total_epochs}  loss {row['train_loss']:.4f}{val}  lr {row['lr']:.3g}  "
            f"{row['epoch_time_s']:.1f} s  {row['segments_per_s']:.1f} seg/s  "
            f"data wait {100 * row['data_wait_share']:.0f}%")


def print_line(text: str) -> None:
    print(text, file=sys.stdout, flush=True)


def write_csv(history: list[dict], path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for row in history:
        w.writerow([_fmt(row.get(c)) for c in COLUMNS])
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")


def plot_progress(history: list[dict], path: Path, title: str = "") -> None:
    """Training loss and validation DSC over epochs (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history if r.get("train_loss") is not None]
    loss = [r["train_loss"] for r in history if r.get("train_loss") is not None]
    val = [(r["epoch"], r["val_dsc"]) for r in history
           if r.get("val_dsc") is not None and not math.isnan(r["val_dsc"])]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(ep, loss, color="tab:blue", label="training loss (BCE)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="tab:blue")
    ax2 = ax.twinx()
    if val:
        ax2.plot([v[0] for v in val], [v[1] for v in val], "o-", color="tab:red", label="validation DSC")
    ax2.set_ylabel("validation DSC (full volume)", color="tab:red")
    ax2.set_ylim(0, 1)
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
