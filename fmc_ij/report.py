"""Figures and HTML for results: PNGs written atomically, an HTML page that embeds them.

Matplotlib runs headless (Agg). Every function returns the path it wrote.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fmc_ij.io.atomic import atomic_path, write_text_atomic  # noqa: E402


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def _display_range(img: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(img, (1, 99.8))
    return float(lo), float(hi if hi > lo else lo + 1)


def slice_panel(
    images: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    title: str = "",
    spacing: Sequence[float] | None = None,
) -> Path:
    """One row per image: the middle XY plane and, for 3D, the middle XZ plane at the true aspect ratio."""
    names = list(images)
    is3d = next(iter(images.values())).ndim == 3
    cols = 2 if is3d else 1
    fig, axes = plt.subplots(cols, len(names), figsize=(3.2 * len(names), 3.2 * cols), squeeze=False)
    sz = (spacing[0] / spacing[-1]) if (is3d and spacing is not None) else 1.0
    for j, name in enumerate(names):
        img = np.asarray(images[name], np.float32)
        planes = [img[img.shape[0] // 2], img[:, img.shape[1] // 2, :]] if is3d else [img]
        for i, plane in enumerate(planes):
            lo, hi = _display_range(plane)
            ax = axes[i, j]
            ax.imshow(plane, cmap="gray", vmin=lo, vmax=hi, aspect=sz if i == 1 else 1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=10)
            if j == 0:
                ax.set_ylabel("XY" if i == 0 else "XZ")
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def strip_plot(
    groups: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    ylabel: str,
    zero_line: bool = True,
    title: str = "",
) -> Path:
    """Values per group as jittered points over a box plot (NaNs dropped), with medians printed."""
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(groups), 3.6))
    rng = np.random.default_rng(0)
    labels = []
    for k, (name, values) in enumerate(groups.items()):
        v = np.asarray([x for x in values if np.isfinite(x)], float)
        labels.append(f"{name}\n(n={len(v)})")
        if len(v):
            ax.boxplot([v], positions=[k], widths=0.5, showfliers=False)
            ax.scatter(k + rng.uniform(-0.15, 0.15, len(v)), v, s=14, alpha=0.7)
            ax.annotate(
                f"median {np.median(v):.3f}", (k, np.median(v)), xytext=(20, 0), textcoords="offset points", fontsize=8
            )
    if zero_line:
        ax.axhline(0, color="gray", lw=0.8, ls="--")
    ax.set_xticks(range(len(groups)), labels)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def scatter_plot(
    x: Sequence[float],
    y: Sequence[float],
    path: str | os.PathLike,
    *,
    xlabel: str,
    ylabel: str,
    labels: Sequence[str] = (),
    diagonal: bool = True,
) -> Path:
    """Paired values (e.g. SSIM of input vs SSIM of prediction); points above the diagonal improved."""
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    x, y = np.asarray(x, float), np.asarray(y, float)
    groups = sorted(set(labels)) if len(labels) else [""]
    for g in groups:
        sel = np.array([lab == g for lab in labels]) if len(labels) else np.ones(len(x), bool)
        ax.scatter(x[sel], y[sel], s=18, label=g or None)
    if diagonal and len(x):
        lo, hi = np.nanmin(np.r_[x, y]), np.nanmax(np.r_[x, y])
        ax.plot([lo, hi], [lo, hi], color="gray", lw=0.8, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(labels):
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def line_plot(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    *,
    xlabel: str,
    ylabel: str,
    logy: bool = False,
    hline: float | None = None,
) -> Path:
    """Several named curves on one axis (spectra, FRC)."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, (x, y) in curves.items():
        ax.plot(x, y, label=name)
    if logy:
        ax.set_yscale("log")
    if hline is not None:
        ax.axhline(hline, color="gray", lw=0.8, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def html_report(
    path: str | os.PathLike,
    *,
    title: str,
    sections: Sequence[tuple[str, str | Sequence[Path] | Sequence[Mapping[str, object]]]],
) -> Path:
    """A self-contained-looking HTML page: each section is text, a list of PNGs (linked relative to the
    page) or a table (a list of dicts)."""
    out = Path(path)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:right}img{max-width:100%}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
    ]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(body, str):
            parts.append(f"<p>{html.escape(body)}</p>")
        elif body and isinstance(body[0], Mapping):
            cols = list(body[0])
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>")
            for row in body:
                cells = "".join(f"<td>{html.escape(_fmt(row.get(c)))}</td>" for c in cols)
                parts.append(f"<tr>{cells}</tr>")
            parts.append("</table>")
        else:
            for png in body:
                rel = os.path.relpath(Path(png), out.parent)
                parts.append(f"<p><img src='{html.escape(rel)}' alt='{html.escape(Path(png).stem)}'></p>")
    parts.append("</body></html>")
    return write_text_atomic(out, "\n".join(parts))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
