"""Evaluate predictions on a dataset: per-image metrics, per-channel summaries, outliers, figures.

The challenge layout: ``pred/`` holds one file per input with the input's name
(``image_N_channel_angle.tif``), ``input/`` the inputs and ``gt/`` the ``..._fused.tif`` targets (a file
with the prediction's own name is accepted too). Every image is percentile-normalised (2 / 99.8,
unclipped) as the organisers do, then scored with SSIM (3D, Gaussian sigma 1.5, data_range 1),
N_SSIM, PSNR / NRMSE / MAE / Pearson and, optionally, N_IOU.

Outliers: N_SSIM divides by 1 - SSIM(input, gt); when that is small a tiny SSIM change becomes a huge
N_SSIM and dominates the mean. Images with 1 - SSIM(input, gt) below ``outlier_margin`` (or a
non-finite N_SSIM) are flagged, and the summary gives the mean with and without them and the median.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmc_ij.errors import FmcInputError
from fmc_ij.io import Image, open_lazy, write_text_atomic
from fmc_ij.metrics.pixel import check_images, pixel_metrics
from fmc_ij.metrics.segment import get_segmenter, n_iou
from fmc_ij.metrics.ssim import n_ssim_from, percentiles, ssim
from fmc_ij.progress import track

#: Image files evaluate reads: TIFF (ImageJ, OME, Fuse My Cells) and HDF5 / N5 / Zarr containers.
TIF = re.compile(r"\.((ome\.)?tiff?|h5|hdf5|hdf|n5|zarr)$", re.IGNORECASE)
COLUMNS = (
    "name", "channel", "study", "ssim_input", "ssim_pred", "n_ssim", "n_iou", "psnr", "nrmse", "mae", "pearson",
    "psnr_input", "nrmse_input", "one_minus_ssim_input", "outlier",
)  # fmt: skip


@dataclass
class EvalConfig:
    """Options of :func:`evaluate_dataset`."""

    iou: bool = True
    segmenter: str = "classical"
    iou_spacing: float | None = None
    outlier_margin: float = 0.05
    clip: bool = False
    figures: bool = True
    ssim_engine: str = "auto"
    axes: str | None = None  # stored axes of files that do not name them (e.g. "ZCYX")
    extra: dict[str, Any] = field(default_factory=dict)


def _load(path: Path, axes: str | None = None) -> Image:
    img = open_lazy(path, axes=axes)  # TIFF, or an HDF5 / N5 / Zarr container
    if not isinstance(img.data, np.ndarray):  # zarr over a compressed TIFF: read it
        img = Image(np.asarray(img.data[...]), img.meta)
    return img


def _partner(folder: Path, name: str, exclude: Path | None = None) -> Path | None:
    """``folder/name``, or a file of the same stem in another image format (a TIFF prediction of an HDF5 input)."""
    exact = folder / name
    if exact.exists() and exact != exclude:
        return exact
    stem = TIF.sub("", name)
    for p in sorted(folder.glob(f"{glob_escape(stem)}.*")):
        if TIF.sub("", p.name) == stem and TIF.search(p.name) and p != exclude:
            return p
    return None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def match_files(pred_dir: Path, gt_dir: Path, input_dir: Path) -> list[tuple[str, Path, Path, Path]]:
    """(name, prediction, ground truth, input) for every prediction file, by the challenge naming (the same stem
    in any readable format: TIFF, HDF5, N5, Zarr)."""
    for d, what in ((pred_dir, "--pred"), (gt_dir, "--gt"), (input_dir, "--input")):
        if not d.is_dir():
            raise FmcInputError(f"{what} {d}: no such folder")
    # ``*_fused`` files are targets, ``*_uncertainty`` and ``*_gate`` files predict's error bars and trust maps.
    preds = sorted(
        p
        for p in pred_dir.iterdir()
        if TIF.search(p.name) and not p.name.startswith(".") and not re.search(r"_(fused|uncertainty|gate)\.", p.name)
    )
    if not preds:
        raise FmcInputError(f"--pred {pred_dir}: no image files; write predictions there with the inputs' names")
    out = []
    for p in preds:
        inp = _partner(input_dir, p.name)
        if inp is None:
            raise FmcInputError(f"prediction {p.name} has no input in {input_dir}; predictions must keep the input's "
                                "file name")  # fmt: skip
        gt_name = p.name.replace("_angle", "_fused")
        gt = _partner(gt_dir, gt_name, exclude=inp) or _partner(gt_dir, p.name, exclude=inp)
        if gt is None:
            raise FmcInputError(f"prediction {p.name} has no ground truth in {gt_dir} (looked for {gt_name})")
        out.append((TIF.sub("", p.name), p, gt, inp))
    return out


def split_channels(name: str, pred: Image, gt: Image, inp: Image) -> list[tuple[str, str | None, Image, Image, Image]]:
    """One (name, channel, prediction, ground truth, input) per channel: multi-channel stacks (a ``C`` axis,
    e.g. ImageJ's ZCYX) are scored channel by channel, named from the files' channel names."""
    with_c = [img for img in (pred, gt, inp) if "C" in img.axes]
    if not with_c:
        return [(name, None, pred, gt, inp)]
    if len(with_c) != 3:
        axes = ", ".join(f"{w} {img.axes}" for w, img in zip(("prediction", "ground truth", "input"), (pred, gt, inp)))
        raise FmcInputError(f"{name}: {axes}; give all three as multi-channel stacks or all single-channel")
    parts = [img.channels() for img in (pred, gt, inp)]
    if len({len(p) for p in parts}) != 1:
        raise FmcInputError(f"{name}: the prediction, ground truth and input hold {[len(p) for p in parts]} channels")
    out = []
    for k, (p, g, i) in enumerate(zip(*parts)):
        named = next((img.meta.channel_names[k] for img in (gt, inp, pred) if img.meta.channel_names), None)
        ch = named or f"c{k}"
        load = [Image(np.asarray(x.data[...]), x.meta.replace(channel=ch)) for x in (p, g, i)]
        out.append((f"{name}_{ch}", ch, *load))
    return out


def _channel(name: str, meta_channel: str | None) -> str:
    if meta_channel:
        return str(meta_channel)
    m = re.search(r"(nucleus|membrane)", name)
    return m.group(1) if m else "image"


def evaluate_images(
    pred: np.ndarray, gt: np.ndarray, inp: np.ndarray, *, spacing: Sequence[float] | None, channel: str, cfg: EvalConfig
) -> dict[str, float]:
    """All metrics for one (prediction, ground truth, input) triple."""
    check_images(pred, gt, inp, names=("prediction", "ground truth", "input"))
    p_pred, p_gt, p_in = (percentiles(v) for v in (pred, gt, inp))
    kw = {"data_range": 1.0, "clip": cfg.clip, "engine": cfg.ssim_engine}
    s_in = ssim(inp, gt, normalize=(p_in, p_gt), **kw)
    s_pred = ssim(pred, gt, normalize=(p_pred, p_gt), **kw)
    row: dict[str, float] = {"ssim_input": s_in, "ssim_pred": s_pred, "n_ssim": n_ssim_from(s_pred, s_in)}
    row.update(pixel_metrics(pred, gt, data_range=1.0, normalize=(p_pred, p_gt)))
    row.pop("mse")
    # The identity baseline (the input as its own prediction) on the same scale, for the tables against it.
    ident = pixel_metrics(inp, gt, data_range=1.0, normalize=(p_in, p_gt))
    row.update(psnr_input=ident["psnr"], nrmse_input=ident["nrmse"])
    row["n_iou"] = math.nan
    if cfg.iou:
        seg = get_segmenter(channel, cfg.segmenter)
        row["n_iou"] = n_iou(pred, gt, inp, segmenter=seg, spacing=spacing, iso_spacing=cfg.iou_spacing)["n_iou"]
    row["one_minus_ssim_input"] = 1.0 - s_in
    return row


def _stats(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if isinstance(x, float | int) and math.isfinite(x)], float)
    if not len(v):
        return {"n": 0, "mean": math.nan, "median": math.nan, "std": math.nan}
    return {"n": len(v), "mean": float(v.mean()), "median": float(np.median(v)), "std": float(v.std())}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per channel: mean / median / std of every metric, with and without outliers, and the outliers."""
    out: dict[str, Any] = {}
    for ch in sorted({r["channel"] for r in rows}):
        sub = [r for r in rows if r["channel"] == ch]
        kept = [r for r in sub if not r["outlier"]]
        metrics = (
            "n_ssim", "n_iou", "ssim_input", "ssim_pred", "psnr", "nrmse", "mae", "pearson", "psnr_input", "nrmse_input"
        )  # fmt: skip
        out[ch] = {
            "n_images": len(sub),
            "all": {m: _stats([r[m] for r in sub]) for m in metrics},
            "without_outliers": {m: _stats([r[m] for r in kept]) for m in metrics},
            "improved_fraction": float(np.mean([r["n_ssim"] > 0 for r in sub])),
            "outliers": [r["name"] for r in sub if r["outlier"]],
        }
    return out


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def evaluate_dataset(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    input_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: EvalConfig | None = None,
) -> dict[str, Any]:
    """Score every prediction, write ``metrics.csv``, ``summary.json``, PNGs and ``report.html`` to ``out_dir``.

    Returns the summary (also in ``summary.json``) with ``rows`` added.
    """
    from fmc_ij import report

    cfg = cfg or EvalConfig()
    out = Path(out_dir)
    triples = match_files(Path(pred_dir), Path(gt_dir), Path(input_dir))
    rows: list[dict[str, Any]] = []
    figs: list[Path] = []

    def scored() -> Iterator[tuple[str, str | None, Image, Image, Image]]:  # one file's images at a time
        for stem, p, g, i in track(triples, "evaluate", total=len(triples)):
            yield from split_channels(stem, _load(p, cfg.axes), _load(g, cfg.axes), _load(i, cfg.axes))

    for name, ch, pred, gt, inp in scored():
        channel = ch or _channel(name, inp.meta.channel or gt.meta.channel)
        spacing = list(inp.meta.voxel_size()) or None
        try:
            row = evaluate_images(pred.data, gt.data, inp.data, spacing=spacing, channel=channel, cfg=cfg)
        except FmcInputError as err:
            raise FmcInputError(f"{name}: {err}") from None
        row.update(name=name, channel=channel, study=inp.meta.study if inp.meta.study is not None else "")
        row["outlier"] = bool(row["one_minus_ssim_input"] < cfg.outlier_margin or not math.isfinite(row["n_ssim"]))
        rows.append(row)
        if cfg.figures:
            figs.append(
                report.slice_panel(
                    {"input": inp.data, "prediction": pred.data, "ground truth": gt.data},
                    out / "slices" / f"{name}.png",
                    title=f"{name}: N_SSIM {row['n_ssim']:.3f}",
                    spacing=spacing,
                )
            )
    summary = summarize(rows)
    write_text_atomic(out / "metrics.csv", _csv_text(rows))
    write_text_atomic(out / "summary.json", json.dumps(_finite(summary), indent=2, default=_json_default) + "\n")
    plots = [
        report.strip_plot(
            {ch: [r["n_ssim"] for r in rows if r["channel"] == ch] for ch in summary},
            out / "n_ssim.png",
            ylabel="N_SSIM",
        ),
        report.scatter_plot(
            [r["ssim_input"] for r in rows],
            [r["ssim_pred"] for r in rows],
            out / "ssim_input_vs_pred.png",
            xlabel="SSIM(input, GT)",
            ylabel="SSIM(prediction, GT)",
            labels=[r["channel"] for r in rows],
        ),
    ]
    if cfg.iou:
        plots.append(
            report.strip_plot(
                {ch: [r["n_iou"] for r in rows if r["channel"] == ch] for ch in summary},
                out / "n_iou.png",
                ylabel="N_IOU",
            )
        )
    table = [{k: r[k] for k in COLUMNS} for r in rows]
    report.html_report(
        out / "report.html",
        title="fmc-ij evaluation",
        sections=[
            ("Per channel", [_summary_row(ch, s) for ch, s in summary.items()]),
            ("Per image", table),
            ("Distributions", plots),
            ("Slices (input, prediction, ground truth)", figs),
        ],
    )
    return {**summary, "rows": rows}


def _summary_row(ch: str, s: dict[str, Any]) -> dict[str, Any]:
    a, w = s["all"], s["without_outliers"]
    return {
        "channel": ch,
        "images": s["n_images"],
        "N_SSIM mean": a["n_ssim"]["mean"],
        "N_SSIM median": a["n_ssim"]["median"],
        "N_SSIM mean w/o outliers": w["n_ssim"]["mean"],
        "N_IOU mean": a["n_iou"]["mean"],
        "SSIM input": a["ssim_input"]["mean"],
        "SSIM pred": a["ssim_pred"]["mean"],
        "improved": s["improved_fraction"],
        "outliers": ", ".join(s["outliers"]),
    }


def _finite(v: Any) -> Any:
    """NaN and inf become null: strict JSON readers reject them."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v)}")
