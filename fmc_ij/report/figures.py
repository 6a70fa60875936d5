"""Figures for results: PNGs written atomically, labelled axes, colour bars on every image.

Matplotlib runs headless (Agg). Every function returns the path it wrote.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fmc_ij.io.atomic import atomic_path  # noqa: E402


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def display_range(img: np.ndarray, pmin: float = 1.0, pmax: float = 99.8) -> tuple[float, float]:
    """Percentile display limits (never an empty range)."""
    lo, hi = np.percentile(img, (pmin, pmax))
    return float(lo), float(hi if hi > lo else lo + 1)


def _planes(img: np.ndarray) -> list[tuple[str, np.ndarray]]:
    if img.ndim == 2:
        return [("XY", img)]
    return [("XY", img[img.shape[0] // 2]), ("XZ", img[:, img.shape[1] // 2, :])]


def orthoviews(
    images: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    title: str = "",
    spacing: Sequence[float] | None = None,
    unit: str = "µm",
    cmaps: Mapping[str, str] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """One column per image: the middle XY plane and, for 3D, the middle XZ plane, at the true aspect ratio.

    Axes are in ``unit`` when ``spacing`` (ZYX or YX) is given, in pixels otherwise; every panel has a colour
    bar. ``ranges`` fixes a column's display limits (default: 1st-99.8th percentile of the plane), ``cmaps``
    its colour map (default grey) and ``labels`` its colour-bar label (default "intensity").
    """
    names = list(images)
    first = np.asarray(next(iter(images.values())))
    rows = 2 if first.ndim == 3 else 1
    sp = list(spacing) if spacing is not None else [1.0] * first.ndim
    u = unit if spacing is not None else "px"
    nz = first.shape[0] * sp[0] if rows == 2 else 0.0
    ny = first.shape[-2] * sp[-2]
    heights = [ny, max(nz, 0.15 * ny)] if rows == 2 else [ny]
    fig, axes = plt.subplots(
        rows, len(names), figsize=(3.3 * len(names), 3.0 * sum(heights) / ny + 0.6), squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )  # fmt: skip
    for j, name in enumerate(names):
        img = np.asarray(images[name], np.float32)
        for i, (plane_name, plane) in enumerate(_planes(img)):
            ax = axes[i, j]
            lo, hi = (ranges or {}).get(name) or display_range(plane)
            vert = sp[0] if plane_name == "XZ" else sp[-2]
            extent = (0, plane.shape[1] * sp[-1], plane.shape[0] * vert, 0)
            im = ax.imshow(
                plane, cmap=(cmaps or {}).get(name, "gray"), vmin=lo, vmax=hi, extent=extent, interpolation="nearest"
            )
            cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
            cb.set_label((labels or {}).get(name, "intensity"), fontsize=8)
            cb.ax.tick_params(labelsize=7)
            ax.set_xlabel(f"x ({u})", fontsize=8)
            ax.set_ylabel(f"{'z' if plane_name == 'XZ' else 'y'} ({u})", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_title(f"{name} ({plane_name})", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def slice_panel(
    images: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    title: str = "",
    spacing: Sequence[float] | None = None,
) -> Path:
    """Input / prediction / ground truth side by side on one shared display range (that of the last image)."""
    last = np.asarray(list(images.values())[-1], np.float32)
    rng = display_range(last)
    return orthoviews(images, path, title=title, spacing=spacing, ranges=dict.fromkeys(images, rng))


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
