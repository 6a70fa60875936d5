"""SQUIRREL outputs: the error map as TIFF, a PNG heatmap with colour bar and values, JSON and CSV."""

from __future__ import annotations

import csv
import io as _io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from fmc_ij.squirrel.core import ErrorMapResult
from fmc_ij.squirrel.volume import VolumeErrorMapResult


def write_outputs(results: list[ErrorMapResult], out: str | os.PathLike, *, stem: str, per_slice: bool = False):
    """Write ``{stem}_errormap.tif`` (frames or planes stacked), ``{stem}_errormap.png``, ``{stem}_squirrel.json``
    and ``{stem}_squirrel.csv``; return the rows (one per frame or plane)."""
    from fmc_ij import report
    from fmc_ij.io import ImageMeta, imwrite, write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for k, r in enumerate(results):
        rows.append(
            {
                "index": k,
                "sigma": r.sigma,
                "alpha": r.alpha,
                "beta": r.beta,
                "rse": r.rse,
                "rsp": r.rsp,
                "shift_x": float(r.shift[0]),
                "shift_y": float(r.shift[1]),
                "crop_x": r.crop[0],
                "crop_y": r.crop[1],
                "magnification": r.magnification,
                "method": r.method,
            }  # fmt: skip
        )
    shapes = {r.error_map.shape for r in results}
    if len(shapes) == 1:
        stack = np.stack([r.error_map for r in results]).astype(np.float32)
        axes = ("ZYX" if per_slice else "CYX") if len(results) > 1 else "YX"
        imwrite(out / f"{stem}_errormap.tif", stack if len(results) > 1 else stack[0], ImageMeta(axes=axes))
    plt = report.plt
    n = len(results)
    show = results if n <= 4 else [results[i] for i in np.linspace(0, n - 1, 4).astype(int)]
    fig, axes_ = plt.subplots(1, len(show), figsize=(4.4 * len(show), 4.2), squeeze=False)
    for ax, r in zip(axes_[0], show):
        im = ax.imshow(r.error_map, cmap="inferno")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="|error|")
        ax.set_title(f"RSE {r.rse:.4g}  RSP {r.rsp:.4f}\nsigma {r.sigma:.3f} ref px", fontsize=9)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    report.save_figure(fig, out / f"{stem}_errormap.png")
    write_text_atomic(out / f"{stem}_squirrel.json", json.dumps(rows, indent=2) + "\n")
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(out / f"{stem}_squirrel.csv", buf.getvalue())
    return rows


def write_volume_outputs(result: VolumeErrorMapResult, out: str | os.PathLike, *, stem: str) -> dict[str, float]:
    """Write ``{stem}_errormap.tif`` (ZYX) and ``{stem}_squirrel.json`` for an anisotropic 3D analysis."""
    from fmc_ij.io import ImageMeta, imwrite, write_text_atomic

    out = Path(out)
    imwrite(out / f"{stem}_errormap.tif", result.error_map, ImageMeta(axes="ZYX"))
    summary = {k: getattr(result, k) for k in ("sigma_z", "sigma_xy", "alpha", "beta", "rse", "rsp")}
    write_text_atomic(out / f"{stem}_squirrel.json", json.dumps(summary, indent=2) + "\n")
    return summary
