"""Model subcommands: train, predict, export, validate."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from fmc_ij.cli._app import _out, _parse_ints, app
from fmc_ij.errors import FmcInputError


def _overrides(sets: list[str]) -> dict[str, Any]:
    """``a.b=value`` strings (values parsed as YAML) into a nested dict."""
    import yaml

    out: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise FmcInputError(f"--set {item!r}: write it as field=value, e.g. optim.lr=1e-4")
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


@app.command()
def train(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: config.yaml, model.pt, checkpoints/, log.csv."),
    data: Path | None = typer.Option(None, "--data", help="Registered pairs (fmc-ij register --dataset output)."),
    preset: str | None = typer.Option(
        None, help="care2d, care3d, projection, subdiffraction, isotropic, gan2d or gan3d (default care3d)."
    ),
    config: Path | None = typer.Option(None, "--config", help="A config.yaml (e.g. from an earlier run)."),
    steps: int | None = typer.Option(None, min=1, help="Optimisation steps."),
    minutes: float | None = typer.Option(
        None,
        min=0.01,
        help="Stop after this wall time (best model kept); without --steps the learning rate decays over this budget.",
    ),
    patch: str | None = typer.Option(None, help="Patch size, e.g. 16,64,64 (3D) or 128,128 (2D)."),
    batch: int | None = typer.Option(None, min=1, help="Global batch size (split over processes)."),
    channels: str | None = typer.Option(None, help="Train on these channels only, e.g. nucleus."),
    val: str | None = typer.Option(None, help="Validation specimens or pairs, e.g. image_3 (default: 20% drawn)."),
    ensemble: int | None = typer.Option(None, min=1, help="Train K models with seeds seed..seed+K-1."),
    seed: int | None = typer.Option(None, help="Random seed (weights, patches, split)."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda, cuda:1."),
    deterministic: bool = typer.Option(False, help="Deterministic kernels: a rerun gives the same weights."),
    sets: list[str] = typer.Option([], "--set", help="Any config field, e.g. --set optim.lr=1e-4 (repeatable)."),
    init: Path | None = typer.Option(
        None, "--init", help="Fine-tune: start from this run folder, model.pt or fmc-ij bundle (its architecture)."
    ),
    freeze_encoder: bool = typer.Option(False, help="With --init: train the decoder only (encoder frozen)."),
    per_channel: bool = typer.Option(
        False, help="One model per channel, in --out/<channel> (predict picks each image's channel)."
    ),
    multichannel: bool = typer.Option(
        False, help="One model for all channels together (C in, C out; order --channels, default sorted)."
    ),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint."),
    overwrite: bool = typer.Option(False, help="Train into a non-empty --out from scratch."),
) -> None:
    """Train a CARE U-Net or the Wang et al. GAN on registered pairs (DDP under torchrun)."""
    from fmc_ij.train import TrainConfig
    from fmc_ij.train import train as run_training

    if config is not None and preset is not None:
        raise FmcInputError("give --config or --preset, not both (use --set to change a config's fields)")
    over: dict[str, Any] = _overrides(sets)
    d = over.setdefault("data", {})
    if data is not None:
        d["root"] = str(data)
    if patch is not None:
        d["patch"] = list(_parse_ints(patch, "--patch"))
    if batch is not None:
        d["batch"] = batch
    if channels is not None:
        d["channels"] = [c.strip() for c in channels.split(",") if c.strip()]
    if per_channel and multichannel:
        raise FmcInputError("give --per-channel (one model per channel) or --multichannel (one for all), not both")
    if multichannel:
        d["multichannel"] = True
    if val is not None:
        d["val_names"] = [c.strip() for c in val.split(",") if c.strip()]
    for key, v in (("steps", steps), ("max_minutes", minutes), ("ensemble", ensemble), ("seed", seed),
                   ("device", device)):  # fmt: skip
        if v is not None:
            over[key] = v
    if deterministic:
        over["deterministic"] = True
    if init is not None:
        over["init"] = str(init)
    if freeze_encoder:
        over["freeze_encoder"] = True
    if minutes is not None and steps is None:  # a time budget alone: the schedule follows the clock
        over.setdefault("optim", {}).setdefault("clock", "time")
        over.setdefault("steps", 10**7)
    if config is not None:
        cfg = TrainConfig.load(config).with_overrides(over)
    elif resume and (out / "config.yaml").is_file():
        cfg = TrainConfig.load(out / "config.yaml")
    else:
        cfg = TrainConfig.from_preset(preset or "care3d", **over)
    if per_channel:
        from fmc_ij.train import train_per_channel

        results = train_per_channel(cfg, out, resume=resume, overwrite=overwrite)
    else:
        results = run_training(cfg, out, resume=resume, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        for r in results:
            best = f"{r.best_n_ssim:+.4f}" if r.history and "val_n_ssim" in r.history[-1] else "n/a"
            _out.print(f"{r.out}: {r.step} steps ({r.stopped}); best validation N_SSIM {best} at step {r.best_step}")


@app.command()
def predict(
    inputs: list[Path] = typer.Argument(None, help="Images or folders of images (TIFF, YX or ZYX)."),
    model: Path = typer.Option(..., "--model", "-m", help="A training run folder (fmc-ij train --out)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (same file names as the inputs)."),
    input_dir: Path | None = typer.Option(None, "--input", help="Challenge layout: the input images folder."),
    output_dir: Path | None = typer.Option(None, "--output", help="Challenge layout: the output images folder."),
    output: str = typer.Option("input", "--scale", help="input (the input's scale and dtype), float32, normalized."),
    fallback: str | None = typer.Option(None, help="Blend towards the input: difference or uncertainty."),
    tile: str | None = typer.Option(None, help="Padded tile size per axis, e.g. 64,256,256."),
    halo: str | None = typer.Option(None, help="Context per side (default: the receptive radius, seam-free)."),
    batch: int = typer.Option(1, min=1, help="Tiles per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1."),
    no_uncertainty: bool = typer.Option(False, "--no-uncertainty", help="Do not write *_uncertainty.tif."),
    tta: bool = typer.Option(False, help="Average over 4 lateral flips; their spread is the uncertainty (4x time)."),
    pattern: str = typer.Option("*", help="Only files matching this in input folders, e.g. '*_angle.tif'."),
    no_resample: bool = typer.Option(
        False, "--no-resample", help="Keep the input's voxel size (default: resampled to the model's training grid)."
    ),
    strict: bool = typer.Option(False, help="Refuse inputs far from the model's training voxel size."),
    axes: str | None = typer.Option(None, help="How files store their axes when they do not say, e.g. ZCYX."),
    channels: str | None = typer.Option(
        None,
        help="Channel names of multi-channel images, in order (picks each channel's model), e.g. nucleus,membrane.",
    ),
    gate: str = typer.Option(
        "on", help="on: keep the input where the model is out of its depth (writes *_gate.tif); off: raw output."
    ),
    workers: int | None = typer.Option(None, min=1, help="Spread the work over a Dask LocalCluster of N workers."),
    scheduler: str | None = typer.Option(None, help="Spread the work over a running Dask cluster (address)."),
) -> None:
    """Restore images with a trained model, tiled and seam-free; metadata, names and dtype kept."""
    from fmc_ij.predict import collect_inputs, load_predictor, predict_files

    srcs = list(inputs or []) + ([input_dir] if input_dir else [])
    dst = out or output_dir
    if not srcs:
        raise FmcInputError("no input images: give files/folders or --input DIR")
    if dst is None:
        raise FmcInputError("no output folder: give --out DIR (or --output DIR)")
    if output not in ("input", "float32", "normalized"):
        raise FmcInputError(f"--scale {output!r}: choose input, float32 or normalized")
    if fallback not in (None, "difference", "uncertainty"):
        raise FmcInputError(f"--fallback {fallback!r}: choose difference or uncertainty")
    if gate not in ("on", "off"):
        raise FmcInputError(f"--gate {gate!r}: choose on or off")
    p = load_predictor(model, device)
    p.tta = tta
    kw: dict[str, Any] = {"tile": _parse_ints(tile, "--tile") if tile else None, "batch": batch,
                          "halo": _parse_ints(halo, "--halo") if halo else None}  # fmt: skip
    opts: dict[str, Any] = {"output": output, "fallback": fallback, "uncertainty": not no_uncertainty,
                            "resample": not no_resample, "strict": strict, "gate": gate == "on", "axes": axes,
                            "channels": [c.strip() for c in channels.split(",")] if channels else None}  # fmt: skip
    if workers or scheduler:
        from fmc_ij.predict.distributed import dask_client, predict_file_dask, predict_files_dask

        with dask_client(scheduler, workers) as client:
            files = collect_inputs(srcs, pattern)
            if len(files) == 1:  # one (large) image: spread its tiles
                written = predict_file_dask(client, model, files[0][0], dst / files[0][1], device=device, tta=tta,
                                            **kw, **opts)  # fmt: skip
            else:
                written = predict_files_dask(client, model, srcs, dst, device=device, pattern=pattern, tta=tta, **kw,
                                             **opts)  # fmt: skip
    else:
        written = predict_files(p, srcs, dst, pattern=pattern, **kw, **opts)
    _out.print(f"wrote {len(written)} file(s) to {dst}")


@app.command()
def export(
    run: Path = typer.Argument(..., help="A training run folder (fmc-ij train --out)."),
    out: Path = typer.Option(..., "--out", "-o", help="The bundle to write, e.g. care3d.zip."),
    name: str | None = typer.Option(None, help="Model name shown in deepImageJ / bioimage.io."),
    sample: Path | None = typer.Option(None, help="A raw input image for the test tensors and cover."),
    author: list[str] = typer.Option([], "--author", help="Author name (repeatable)."),
    no_deepimagej: bool = typer.Option(
        False, "--no-deepimagej", help="Parameterised sizes and bioimageio.spec's newest rdf layout (no deepImageJ)."
    ),
    tile_memory: float | None = typer.Option(
        None, min=1, help="Activation memory (MB) of one deepImageJ tile; sets the fixed tile (default 1024)."
    ),
) -> None:
    """Export a run as a bioimage.io bundle (TorchScript + state dict), tested before it is written."""
    from fmc_ij.export import export as export_bundle
    from fmc_ij.io import imread

    if out.suffix.lower() != ".zip":
        raise FmcInputError(f"--out {out}: a bioimage.io bundle is a .zip file")
    data = imread(sample).data if sample else None
    kw = {} if tile_memory is None else {"tile_memory_mb": tile_memory}
    export_bundle(run, out, name=name, sample=data, deepimagej=not no_deepimagej, authors=author or None, **kw)
    _out.print(f"wrote {out} (passed bioimage.io's model test)")


@app.command()
def validate(bundle: Path = typer.Argument(..., help="A bioimage.io bundle (.zip or rdf.yaml).")) -> None:
    """Run bioimage.io's official model test on a bundle and print a summary (exit 1 when it fails)."""
    from fmc_ij.export.bundle import _require

    _require()
    from bioimageio.core import test_model

    if not bundle.exists():
        raise FmcInputError(f"{bundle}: no such bundle")
    import zipfile

    if bundle.suffix.lower() == ".zip" and not zipfile.is_zipfile(bundle):
        raise FmcInputError(f"{bundle}: not a zip file (damaged or not a bioimage.io bundle)")
    summary = test_model(bundle)
    for det in summary.details:
        _out.print(f"{det.status:8s} {det.name}")
    _out.print(f"{bundle}: {summary.status}")
    if summary.status != "passed":
        raise typer.Exit(1)
