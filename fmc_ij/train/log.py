"""The run's log: ``log.csv`` (rewritten whole, atomically, at each validation), curves, TensorBoard if installed."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from fmc_ij.io import write_text_atomic
from fmc_ij.report import line_plot

BASE_FIELDS = ["step", "time_s", "lr", "loss", "d_loss", "val_mae", "val_ssim", "val_n_ssim"]


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def write_log(out: Path, history: list[dict[str, Any]], cfg: Any = None) -> None:
    """Write ``log.csv``, ``loss.png`` and (with validation) ``validation.png``; mirror the last row to TensorBoard."""
    fields = list(BASE_FIELDS)
    for row in history:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(fields)
    for row in history:
        w.writerow([_fmt(row.get(k)) for k in fields])
    write_text_atomic(out / "log.csv", buf.getvalue())
    steps = np.array([r["step"] for r in history], float)
    curves = {"train loss": (steps, np.array([r["loss"] for r in history], float))}
    if any(r.get("d_loss") is not None for r in history):
        curves["discriminator"] = (steps, np.array([r.get("d_loss") or np.nan for r in history], float))
    line_plot(curves, out / "loss.png", xlabel="step", ylabel="loss")
    val = {
        k: (steps, np.array([r.get(k, np.nan) for r in history], float)) for k in fields if k.startswith("val_n_ssim")
    }
    if val:
        line_plot(val, out / "validation.png", xlabel="step", ylabel="validation N_SSIM", hline=0.0)
    _tensorboard(out, history[-1])


def _tensorboard(out: Path, row: dict[str, Any]) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return
    with SummaryWriter(str(out / "tensorboard")) as tb:
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                tb.add_scalar(k, v, row["step"])
