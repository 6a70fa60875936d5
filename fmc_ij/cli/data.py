"""Data subcommands: simulate, info, evaluate, register, squirrel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.table import Table

from fmc_ij.cli._app import _out, _parse_floats, _parse_ints, app
from fmc_ij.errors import FmcInputError


@app.command()
def simulate(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created)."),
    kind: str = typer.Option("lightsheet", help="lightsheet, beads, filaments, surface, or all (one subfolder each)."),
    n: int = typer.Option(2, "--n", min=1, help="Number of specimens / fields."),
    shape: str = typer.Option("64,256,256", help="Light-sheet volume size Z,Y,X in voxels."),
    spacing: str | None = typer.Option(
        None,
        help="Voxel size Z,Y,X in micrometres (built-in light sheet: "
        "default 1.0,0.4,0.4; --from: for volumes without a calibration).",
    ),
    channels: str = typer.Option("nucleus,membrane", help="Light-sheet channels."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same files."),
    misregister: bool = typer.Option(False, help="Shift and elastically warp the single view; save the truth."),
    flavour: str = typer.Option("imagej", help="TIFF flavour: imagej (Fiji reads the calibration), ome, fmc."),
    overwrite: bool = typer.Option(False, help="Write into a non-empty folder."),
    source: Path | None = typer.Option(
        None,
        "--from",
        help="Your own good ZYX volumes (a file or folder: fused "
        "views, confocal stacks): each becomes --n single-view training pairs.",
    ),
    channel: str | None = typer.Option(None, help="--from: the channel of every volume (default: from each file)."),
) -> None:
    """Write a built-in synthetic dataset (challenge layout and metadata), or with --from, single-view training pairs
    rendered from your own good volumes by a randomised light-sheet physics."""
    from fmc_ij.synthetic import LightSheetConfig
    from fmc_ij.synthetic import simulate as run

    if flavour not in ("imagej", "ome", "fmc"):
        raise FmcInputError(f"unknown --flavour {flavour!r}: use imagej, ome or fmc")
    chans = tuple(c.strip() for c in channels.split(",") if c.strip())
    bad = [c for c in chans if c not in ("nucleus", "membrane")]
    if bad or not chans:
        raise FmcInputError(f"unknown channel(s) {bad or channels!r}: use nucleus and/or membrane")
    if source is not None:
        from fmc_ij.synthetic.degrade import simulate_from

        if channel is not None and channel not in ("nucleus", "membrane"):
            raise FmcInputError(f"--channel {channel!r}: use nucleus or membrane")
        sp = _parse_floats(spacing, "--spacing", 3) if spacing else None
        written = simulate_from(source, out, n=n, seed=seed, channel=channel, spacing=sp, overwrite=overwrite)
        _out.print(f"wrote {len(written) // 2} pair(s) to [bold]{out}[/bold]")
        return
    kwargs: dict[str, Any] = {"n": n, "seed": seed, "flavour": flavour}
    if kind in ("lightsheet", "all"):
        try:
            cfg = LightSheetConfig(
                shape=_parse_ints(shape, "--shape", 3),
                **({"spacing": _parse_floats(spacing, "--spacing", 3)} if spacing else {}),
            )
        except ValueError as e:
            raise FmcInputError(str(e)) from None
        kwargs.update(cfg=cfg, channels=chans, misregister=misregister)
    paths = run(out, kind, overwrite=overwrite, **kwargs)
    for p in paths:
        _out.print(f"wrote [bold]{p}[/bold]")


def _describe(path: Path, axes: str | None = None) -> dict[str, Any]:
    from fmc_ij.io import open_lazy
    from fmc_ij.io.check import value_range

    img = open_lazy(path, axes=axes)
    lo, hi = value_range(img.data)
    m = img.meta
    return {
        "path": str(path),
        "shape": list(img.shape),
        "dtype": img.dtype.name,
        "axes": m.axes,
        "voxel_size": {a: m.spacing[a] for a in m.spatial_axes},
        "unit": m.unit,
        "channel": m.channel,
        "study": m.study,
        "min": lo,
        "max": hi,
        **({"channel_names": list(m.channel_names)} if m.channel_names else {}),
        **({"note": m.note} if m.note else {}),
        **({"extra": m.extra} if m.extra else {}),
    }


def _short(value: Any, width: int = 100) -> str:
    """A metadata value on one table line (ImageJ's Info blocks run to pages)."""
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _fmt_voxel(d: dict[str, Any]) -> str:
    vs = d["voxel_size"]
    return " x ".join(f"{vs[a]:g}" for a in vs) + f" {d['unit']}"


@app.command()
def info(
    path: Path = typer.Argument(
        ..., help="A TIFF, an HDF5 / N5 / Zarr dataset (file.h5 or file.h5:/path), or a dataset folder."
    ),
    low: str = typer.Option(None, help="Glob of the input files (with --high) for non-challenge layouts."),
    high: str = typer.Option(None, help="Glob of the target files, e.g. 'sted/*.tif'."),
    inputs_only: bool = typer.Option(False, help="Test-time folder: inputs without targets are fine."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    axes: str = typer.Option(None, help="The stored axes of a file that does not name them, e.g. ZCYX."),
) -> None:
    """Shape, dtype, axes, voxel size, channel, study and value range of a file or every pair of a dataset."""
    from fmc_ij.io import discover
    from fmc_ij.io.containers import is_container

    if path.is_dir() and not (is_container(path) or (path / ".zattrs").exists() or (path / "zarr.json").exists()):
        pairs = discover(path, low=low, high=high, require_target=not inputs_only)
        from fmc_ij.progress import track

        rows = []
        for p in track(pairs, "reading", total=len(pairs)):
            rows.append(
                {
                    "pair": p.name,
                    "channel": p.channel,
                    "input": _describe(p.low),
                    "target": _describe(p.high) if p.high else None,
                }
            )
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        t = Table(title=f"{path}: {len(rows)} pair(s)")
        for col in ("pair", "channel", "study", "shape (axes)", "voxel size", "dtype", "input range", "target range"):
            t.add_column(col)
        for r in rows:
            i, g = r["input"], r["target"]
            t.add_row(
                r["pair"],
                str(i["channel"] or r["channel"] or "-"),
                str(i["study"] if i["study"] is not None else "-"),
                f"{'x'.join(map(str, i['shape']))} ({i['axes']})",
                _fmt_voxel(i),
                i["dtype"],
                f"{i['min']:g}..{i['max']:g}",
                f"{g['min']:g}..{g['max']:g}" if g else "missing",
            )
        _out.print(t)
        return
    d = _describe(path, axes)
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    t = Table(title=str(path), show_header=False)
    for k, v in (
        ("shape", f"{'x'.join(map(str, d['shape']))}"),
        ("axes", d["axes"]),
        ("dtype", d["dtype"]),
        ("voxel size", f"{_fmt_voxel(d)} ({''.join(d['voxel_size'])})"),
        ("channel", str(d["channel"] or ", ".join(d.get("channel_names", [])) or "-")),
        ("study", "-" if d["study"] is None else str(d["study"])),
        ("range", f"{d['min']:g} .. {d['max']:g}"),
        *((("note", d["note"]),) if "note" in d else ()),
        *((f"{k}", _short(v)) for k, v in d.get("extra", {}).items()),
    ):
        t.add_row(k, v)
    _out.print(t)


@app.command()
def evaluate(
    pred: Path = typer.Option(..., help="Folder of predictions, named like their inputs (image_N_channel_angle.tif)."),
    gt: Path = typer.Option(..., help="Folder of ground truths (image_N_channel_fused.tif)."),
    input: Path = typer.Option(..., "--input", help="Folder of the inputs (image_N_channel_angle.tif)."),
    out: Path = typer.Option(..., help="Where metrics.csv, summary.json, the PNGs and report.html go."),
    iou: bool = typer.Option(True, help="Also compute N_IOU (segmentation; slower)."),
    segmenter: str = typer.Option("classical", help="N_IOU segmenter: classical (offline) or cellpose."),
    iou_spacing: float = typer.Option(None, help="Isotropic voxel size for N_IOU (default: the coarsest axis)."),
    outlier_margin: float = typer.Option(0.05, help="Flag images with 1 - SSIM(input, GT) below this."),
    clip: bool = typer.Option(False, help="Clip the percentile-normalised images to [0, 1] (default: unclipped)."),
    figures: bool = typer.Option(True, help="Write a slice PNG per image."),
    axes: str = typer.Option(None, help="The stored axes of files that do not name them, e.g. ZCYX."),
) -> None:
    """Fuse My Cells metrics (N_SSIM, N_IOU) and SSIM / PSNR / NRMSE / MAE / Pearson per image and per channel."""
    from fmc_ij.evaluate import EvalConfig, evaluate_dataset

    cfg = EvalConfig(
        iou=iou, segmenter=segmenter, iou_spacing=iou_spacing, outlier_margin=outlier_margin, clip=clip,
        figures=figures, axes=axes,
    )  # fmt: skip
    if segmenter not in ("classical", "cellpose"):
        raise FmcInputError(f"--segmenter {segmenter!r}: use classical or cellpose")
    res = evaluate_dataset(pred, gt, input, out, cfg)
    t = Table(title=f"{len(res['rows'])} image(s) -> {out}")
    for col in (
        "channel",
        "images",
        "N_SSIM mean",
        "N_SSIM median",
        "N_IOU mean",
        "SSIM input",
        "SSIM pred",
        "outliers",
    ):
        t.add_column(col)
    for ch, s in ((k, v) for k, v in res.items() if k != "rows"):
        a = s["all"]
        t.add_row(
            ch,
            str(s["n_images"]),
            f"{a['n_ssim']['mean']:.4f}",
            f"{a['n_ssim']['median']:.4f}",
            f"{a['n_iou']['mean']:.4f}",
            f"{a['ssim_input']['mean']:.4f}",
            f"{a['ssim_pred']['mean']:.4f}",
            ", ".join(s["outliers"]) or "-",
        )
    _out.print(t)


@app.command()
def register(
    lr: Path = typer.Argument(None, help="The cheap acquisition (moves), e.g. image_0_nucleus_angle.tif."),
    hr: Path = typer.Argument(None, help="The expensive acquisition (reference), e.g. image_0_nucleus_fused.tif."),
    out: Path = typer.Option(..., help="Output folder."),
    dataset: Path = typer.Option(None, help="Register every pair of this dataset folder instead of LR HR."),
    low: str = typer.Option(None, help="With --dataset: glob of the LR files (non-challenge layouts)."),
    high: str = typer.Option(None, help="With --dataset: glob of the HR files."),
    engine: str = typer.Option("native", help="native (torch, 2D/3D) or fiji (NanoJ-Core in your Fiji, 2D)."),
    elastic: bool = typer.Option(True, help="Pyramidal elastic step after the global shift."),
    min_block: int = typer.Option(64, help="Smallest elastic block (px)."),
    min_similarity: float = typer.Option(0.5, help="Blocks with a lower peak NCC are ignored."),
    overwrite: bool = typer.Option(False, help="Write into a non-empty --out."),
    refine: bool = typer.Option(
        None, "--refine/--no-refine", help="Dense refinement after the blocks (default: 2D and volumes <= 8 Mvoxel)."
    ),
) -> None:
    """Align LR onto HR: sub-pixel global shift, then pyramidal elastic registration; QC PNGs and a CSV."""
    from fmc_ij.io import imread, write_text_atomic
    from fmc_ij.register import qc_figure, register_dataset, register_images, write_registered

    if engine not in ("native", "fiji"):
        raise FmcInputError(f"--engine {engine!r}: use native or fiji")
    if (dataset is None) == (lr is None or hr is None):
        raise FmcInputError("give either LR HR (two files) or --dataset DIR")
    if engine == "fiji":
        from fmc_ij.fiji import run_nanoj_register

        if dataset is not None:
            raise FmcInputError("--engine fiji registers one pair at a time; pass LR HR")
        path = run_nanoj_register(hr, lr, out)
        _out.print(f"NanoJ registered image: {path}")
        return
    if dataset is not None:
        rows = register_dataset(dataset, out, low=low, high=high, elastic=elastic, min_block=min_block,
                                min_similarity=min_similarity, overwrite=overwrite, refine=refine)  # fmt: skip
        t = Table(title=f"{len(rows)} pair(s) registered -> {out}")
        for col in ("pair", "global shift (px)", "NCC before", "rigid", "elastic"):
            t.add_column(col)
        for r in rows:
            t.add_row(r.name, ", ".join(f"{v:+.3f}" for v in r.shift), f"{r.ncc_before:.4f}", f"{r.ncc_rigid:.4f}",
                      f"{r.ncc_after:.4f}")  # fmt: skip
        _out.print(t)
        return
    from fmc_ij.io import output_name

    lo, hi = imread(lr), imread(hr)
    res = register_images(lo, hi, elastic=elastic, min_block=min_block, min_similarity=min_similarity, progress=True,
                          refine=refine)  # fmt: skip
    name = output_name(lr)  # a container dataset (vol.h5:/raw) gets a TIFF name (vol_raw.tif)
    stem = Path(name).stem
    target = out / name
    if target.exists() and not overwrite:
        raise FmcInputError(f"{target} exists; pass --overwrite")
    write_registered(target, res, lo, hi)
    from fmc_ij.io.atomic import atomic_path

    with atomic_path(out / f"{stem}_field.npy") as tmp:
        np.save(tmp, res.field)
    qc_figure(hi.data, res, out / f"{stem}_qc.png")
    summary = {
        "shift": [float(v) for v in res.shift],
        "ncc_before": res.ncc_before,
        "ncc_rigid": res.ncc_rigid,
        "ncc_after": res.ncc_after,
        "valid_fraction": float(res.valid.mean()),
        "levels": [vars(lv) for lv in res.levels],
    }
    write_text_atomic(out / f"{stem}_registration.json", json.dumps(summary, indent=2) + "\n")
    _out.print(
        f"shift {', '.join(f'{v:+.3f}' for v in res.shift)} px; NCC {res.ncc_before:.4f} -> rigid {res.ncc_rigid:.4f}"
        f" -> elastic {res.ncc_after:.4f}; wrote {target}"
    )


@app.command()
def squirrel(
    reference: Path = typer.Argument(..., help="Diffraction-limited reference (2D, or ZYX with --per-slice)."),
    image: Path = typer.Argument(..., help="Reconstruction(s): 2D, a stack of frames, or ZYX with --per-slice."),
    out: Path = typer.Option(..., help="Output folder."),
    method: str = typer.Option("nanoj", help="nanoj (NanoJ's numbers and quirks) or binned (block means)."),
    rsf: float = typer.Option(None, help="Hold the RSF sigma (reference px) instead of optimising it."),
    per_slice: bool = typer.Option(False, help="Analyse ZYX volumes plane by plane."),
    engine: str = typer.Option("native", help="native, or fiji (NanoJ-SQUIRREL in your Fiji)."),
    no_register: bool = typer.Option(False, "--no-register", help="Skip NanoJ's registration step."),
) -> None:
    """NanoJ-SQUIRREL error map, RSF sigma, alpha, beta, RSE and RSP; TIFF map, PNG heatmap, JSON and CSV."""
    from fmc_ij.io import imread
    from fmc_ij.squirrel.report import write_outputs, write_volume_outputs

    if method not in ("nanoj", "binned"):
        raise FmcInputError(f"--method {method!r}: use nanoj or binned")
    if engine == "fiji":
        from fmc_ij.fiji import run_nanoj_squirrel
        from fmc_ij.io import write_text_atomic

        rows = run_nanoj_squirrel(reference, image, out)
        write_text_atomic(out / f"{image.name.split('.')[0]}_squirrel_fiji.json", json.dumps(rows, indent=2) + "\n")
        for r in rows:
            _out.print(f"NanoJ frame {r['frame']}: RSE {r['rse']:.6g}, RSP {r['rsp']:.6g}")
        return
    if engine != "native":
        raise FmcInputError(f"--engine {engine!r}: use native or fiji")
    from fmc_ij.squirrel import error_map, error_map_per_slice

    ref_img, img_img = imread(reference), imread(image)
    for im, path in ((ref_img, reference), (img_img, image)):
        if "C" in im.meta.axes or "S" in im.meta.axes:
            raise FmcInputError(
                f"{path.name}: axes {im.meta.axes}; SQUIRREL takes single-channel images (split C first)"
            )
    ref, img = ref_img.data, img_img.data
    if ref.ndim == 3 and not per_slice:
        from fmc_ij.squirrel import error_map_3d

        v = error_map_3d(ref, img)
        write_volume_outputs(v, out, stem=image.name.split(".")[0])
        _out.print(
            f"3D anisotropic RSF: sigma_z {v.sigma_z:.4f}, sigma_xy {v.sigma_xy:.4f} ref px; alpha {v.alpha:.4g}, "
            f"beta {v.beta:.4g}; RSE {v.rse:.4g}, RSP {v.rsp:.4f}"
        )
        return
    kw = {"rsf": rsf, "method": method, "register": not no_register}
    results = error_map_per_slice(ref, img, **kw) if per_slice else error_map(ref, img, **kw)
    rows = write_outputs(results, out, stem=image.name.split(".")[0], per_slice=per_slice)
    t = Table(title=f"SQUIRREL ({method}) -> {out}")
    for col in ("frame" if not per_slice else "z", "sigma (ref px)", "alpha", "beta", "RSE", "RSP"):
        t.add_column(col)
    for r in rows:
        t.add_row(str(r["index"]), f"{r['sigma']:.4f}", f"{r['alpha']:.4g}", f"{r['beta']:.4g}", f"{r['rse']:.4g}",
                  f"{r['rsp']:.4f}")  # fmt: skip
    _out.print(t)
