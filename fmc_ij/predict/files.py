"""Prediction of files and folders: the challenge container layout, metadata kept, outputs written atomically."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fmc_ij.errors import FmcInputError
from fmc_ij.io import (
    Image,
    check_image,
    imagej_dtype,
    imwrite,
    is_container,
    is_image_path,
    open_lazy,
    output_name,
    split_container_path,
    to_dtype,
)
from fmc_ij.io.dataset import FMC_PATTERN
from fmc_ij.predict.core import Prediction, fallback_blend
from fmc_ij.predict.foreign import BundlePredictor
from fmc_ij.predict.model import ChannelPredictors, Predictor
from fmc_ij.predict.restore import Engine, Restored, restore

Output = Literal["input", "float32", "normalized"]
_SUFFIXES = (".tif", ".tiff")
#: Above this many voxels a prediction streams through an on-disk zarr store: memory follows the tile.
STREAM_VOXELS = 2**26


class _Fresh:
    """Reads a memory-mapped file through a new mapping each time, so pages read once are not kept resident:
    the process's memory follows the tile, not the file."""

    def __init__(self, path: Path, like: Any):
        self.path, self.shape, self.dtype, self.ndim = path, tuple(like.shape), np.dtype(like.dtype), like.ndim

    def __getitem__(self, idx: Any) -> np.ndarray:
        m = open_lazy(self.path).data
        out = np.array(m[idx])
        del m
        return out


class _Converted:
    """A lazy view that converts what is read (``fn``) from an on-disk array."""

    def __init__(self, src: Any, fn: Callable[[np.ndarray], np.ndarray], dtype: Any):
        self.src, self.fn, self.shape, self.dtype, self.ndim = src, fn, tuple(src.shape), np.dtype(dtype), src.ndim

    def __getitem__(self, idx: Any) -> np.ndarray:
        return self.fn(np.asarray(self.src[idx]))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        # Whole-array reads happen only to reorder axes (a channel-first result into ImageJ's ZCYX).
        a = self[...]
        return a.astype(dtype) if dtype is not None else a


def predict_file(
    predictor: Predictor | ChannelPredictors | BundlePredictor,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    output: Output = "input",
    uncertainty: bool = True,
    fallback: Literal["difference", "uncertainty"] | None = None,
    tile: Sequence[int] | None = None,
    halo: Sequence[int] | None = None,
    batch: int = 1,
    progress: bool = True,
    stream: bool | None = None,
    engine: Engine | None = None,
    resample: bool = True,
    strict: bool = False,
    gate: bool = True,
    axes: str | None = None,
    channels: Sequence[str] | None = None,
) -> list[Path]:
    """Predict one image file; write ``dst`` (and ``<dst stem>_uncertainty.tif``) with the input's metadata.

    ``output``: ``"input"`` maps the prediction back to the input's intensity scale and dtype (uint16 for
    the challenge), ``"float32"`` keeps that scale as float32, ``"normalized"`` writes target-normalised units.
    ``stream`` (default: above :data:`STREAM_VOXELS`) reads the input tile by tile and writes the result
    through a temporary zarr store beside ``dst``, plane by plane: peak memory follows the tile (same-grid
    models; isotropic and projection results are held in memory). ``engine``: the tile runner (default this
    process; :class:`fmc_ij.predict.distributed.DaskTiles` for a cluster). ``resample``: bring the image to the
    model's training voxel size and back (``strict``: a far-off scale is an error; :mod:`fmc_ij.predict.resample`).
    ``gate`` (default on, off with a ``fallback``): keep the input where the model is out of its depth or contradicts
    the input (:mod:`fmc_ij.predict.gate`); the map is written as ``<dst stem>_gate.tif``. ``axes``: how the file
    stores its axes when it does not say (e.g. ``ZCYX``); a multi-channel image given to one-channel models is
    restored channel by channel, each with its channel's model (names from the file or ``channels``), and written
    back as one image.
    """
    src, dst = Path(src), Path(dst)
    img = open_lazy(src, axes=axes)
    kw: dict[str, Any] = {"tile": tile, "halo": halo, "batch": batch, "progress": progress, "engine": engine,
                          "unit": img.meta.unit, "resample": resample, "strict": strict,
                          "gate": gate and fallback is None}  # fmt: skip
    if "C" in img.axes and not (isinstance(predictor, Predictor) and predictor.channels > 1):
        return _channel_by_channel(predictor, img, src.name, dst, channels, output, uncertainty, kw)
    if isinstance(predictor, BundlePredictor):  # another tool's model: its own scaling, float32 out
        check_image(img.data, src.name, what="prediction", axes=img.axes)
        res = predictor.predict(np.asarray(img.data), img.axes)
        meta = img.meta if res.ndim == len(img.axes) else img.meta.replace(axes="C" + img.axes)
        return [imwrite(dst, res, meta)]
    if isinstance(predictor, ChannelPredictors):  # one model per channel: the image's own
        m = FMC_PATTERN.match(src.name)
        predictor = predictor.select(img.meta.channel or (m["channel"] if m else None), src.name)
    img = _model_layout(predictor, img, src.name)
    streamed = predictor.task == "restore" and (int(np.prod(img.shape)) > STREAM_VOXELS if stream is None else stream)
    if not streamed:
        res = restore(predictor, img.data, axes=img.axes, spacing=img.spacing, **kw)
        return write_prediction(img, dst, res, output=output, uncertainty=uncertainty, fallback=fallback)
    if fallback is not None:
        raise FmcInputError(f"{src.name}: --fallback needs the volume in memory; it is too large, predict without it")
    import zarr

    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".fmc-predict-") as tmp:
        chunks = (*[1] * (len(img.shape) - 2), *(min(n, 512) for n in img.shape[-2:]))
        mean = zarr.open_array(f"{tmp}/mean.zarr", mode="w", shape=img.shape, chunks=chunks, dtype="float32")
        unc = None
        if uncertainty and predictor.has_uncertainty:
            unc = zarr.open_array(f"{tmp}/unc.zarr", mode="w", shape=img.shape, chunks=chunks, dtype="float32")
        if kw["gate"]:
            kw["gate_out"] = zarr.open_array(f"{tmp}/gate.zarr", mode="w", shape=img.shape, chunks=chunks,
                                             dtype="float32")  # fmt: skip
        # Fresh memory maps index the file's own axis order; a channel-first view reads through its own map.
        # (a cluster's workers read their tiles the same way: the reader travels as the file's path).
        fresh = predictor.channels == 1 and (isinstance(img.data, np.memmap) or engine is not None)
        reader = _Fresh(src, img.data) if fresh else img.data
        res = restore(predictor, reader, axes=img.axes, spacing=img.spacing, out=mean, uncertainty_out=unc, **kw)
        return write_prediction(img, dst, res, output=output, uncertainty=uncertainty)


def _channel_by_channel(
    predictor: Predictor | ChannelPredictors | BundlePredictor, img: Image, name: str, dst: Path,
    names: Sequence[str] | None, output: Output, uncertainty: bool, kw: dict[str, Any],
) -> list[Path]:  # fmt: skip
    """A multi-channel image through one-channel models, channel by channel (each with its own scaling and, for a
    per-channel model, its channel's network), written back as one image in the file's axis order."""
    parts = img.channels()
    if names is not None and len(names) != len(parts):
        raise FmcInputError(f"{name}: --channels names {len(names)} channels, the image has {len(parts)}")
    c = img.axes.index("C")
    means, sds, gates = [], [], []
    for k, part in enumerate(parts):
        label = f"{name} channel {k}"
        model = predictor
        if isinstance(predictor, ChannelPredictors):
            model = predictor.select(names[k] if names else part.meta.channel, label)
        check_image(part.data, label, what="prediction", axes=part.axes)
        data = np.asarray(part.data)
        if isinstance(model, BundlePredictor):
            means.append(model.predict(data, part.axes))
            continue
        assert isinstance(model, Predictor)
        res = restore(model, data, axes=part.axes, spacing=part.spacing, **kw)
        if not res.same_grid:
            raise FmcInputError(f"{name}: a {model.task} model changes the grid; give it one channel at a time")
        out_dtype = imagej_dtype(img.dtype) if output == "input" else np.float32
        means.append(_convert(np.asarray(res.image), res.normalizer, output, out_dtype))
        if uncertainty and res.uncertainty is not None:
            sds.append(np.asarray(res.uncertainty) if output == "normalized" else res.normalizer.scale(res.uncertainty))
        if res.gate is not None:
            gates.append(np.asarray(res.gate.weight))
    written = [imwrite(dst, np.stack(means, axis=c), img.meta)]
    stem = dst.name.split(".")[0]
    for suffix, maps in (("_uncertainty", sds), ("_gate", gates)):
        if maps and len(maps) == len(parts):
            written.append(imwrite(dst.with_name(stem + suffix + ".tif"), np.stack(maps, axis=c), img.meta))
    return written


def _convert(a: np.ndarray, norm: Any, output: Output, out_dtype: Any) -> np.ndarray:
    """A prediction in target-normalised units as written: the input's scale and dtype, float32, or as is."""
    if output == "normalized":
        return np.asarray(a, np.float32)
    return to_dtype(norm.invert(a), out_dtype) if output == "input" else norm.invert(a)


def _model_layout(predictor: Predictor, img: Image, name: str) -> Image:
    """``img`` as the model takes it (a multi-channel model: channel first), each channel checked."""
    if predictor.channels > 1 and "C" in img.axes:
        img = _channel_first(img, name)
    else:
        check_image(img.data, name, what="prediction", axes=img.axes)
    if predictor.channels > 1 and (img.axes[0] != "C" or img.shape[0] != predictor.channels):
        raise FmcInputError(
            f"{name}: this model restores {predictor.channels} channels together "
            f"({', '.join(predictor.channel_names) or 'in training order'}); give a {predictor.channels}-channel "
            f"image (axes CZYX or CYX), got {img.axes} {tuple(img.shape)}, or a folder with one "
            "image_N_<channel>_angle.tif per channel"
        )
    return img


def _channel_first(img: Image, name: str) -> Image:
    """``img`` with its channel axis first (ImageJ files store ZCYX), each channel checked."""
    c = img.axes.index("C")
    data = np.moveaxis(img.data, c, 0) if c else img.data
    rest = img.axes.replace("C", "")
    for k in range(data.shape[0]):
        check_image(data[k], f"{name} channel {k}", what="prediction", axes=rest)
    return Image(data, img.meta.replace(axes="C" + rest))


def write_prediction(
    img: Image,
    dst: str | os.PathLike,
    pred: Prediction | Restored,
    *,
    output: Output = "input",
    uncertainty: bool = True,
    fallback: Literal["difference", "uncertainty"] | None = None,
) -> list[Path]:
    """Write the prediction of ``img`` (fallback, rescaling and dtype as in :func:`predict_file`); a
    :class:`Restored` on another grid (isotropic, projection) is written with its own axes and voxel size and
    the input's dtype."""
    dst = Path(dst)
    meta, same_grid, gate_map = img.meta, True, None
    if isinstance(pred, Restored):
        same_grid = pred.same_grid
        gate_map = pred.gate.weight if pred.gate is not None else None
        if not same_grid:
            meta = img.meta.replace(axes=pred.axes, spacing=pred.spacing)
        pred = pred.prediction
    mean, unc, norm = pred.image, pred.uncertainty, pred.normalizer
    if fallback is not None:
        if not same_grid:
            raise FmcInputError("--fallback blends with the input's grid; this model's task changes the grid")
        mean = fallback_blend(norm(np.asarray(img.data)), np.asarray(mean), unc, mode=fallback)

    def convert(a: np.ndarray) -> np.ndarray:
        return _convert(a, norm, output, out_dtype)

    def lazy(a: Any, fn: Callable[[np.ndarray], np.ndarray], dtype: Any) -> Any:
        # In-memory results convert at once; on-disk ones (streaming) convert plane by plane while written.
        return fn(a) if isinstance(a, np.ndarray) else _Converted(a, fn, dtype)

    out_dtype = imagej_dtype(img.dtype) if output == "input" else np.float32
    written = [imwrite(dst, lazy(mean, convert, out_dtype), meta)]
    stem = dst.name.split(".")[0]
    if uncertainty and unc is not None:
        sd = lazy(unc, (lambda a: np.asarray(a, np.float32)) if output == "normalized" else norm.scale, np.float32)
        written.append(imwrite(dst.with_name(stem + "_uncertainty.tif"), sd, meta))
    if gate_map is not None:  # 1: the network's value, 0: the input's
        written.append(imwrite(dst.with_name(stem + "_gate.tif"), lazy(gate_map, _as_float, np.float32), meta))
    return written


def _as_float(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32)


def collect_inputs(inputs: Sequence[str | os.PathLike], pattern: str = "*") -> list[tuple[Path, Path]]:
    """(image, output path relative to its root) for every image given directly (a TIFF, an HDF5 / N5 / Zarr
    container or ``file.h5:/dataset``) or found (matching ``pattern``) in a given folder; a container's result is
    a TIFF (``vol.h5:/raw`` -> ``vol_raw.tif``)."""
    found = []
    for item in inputs:
        p = Path(item)
        if is_container(item) and not p.is_dir() or p.is_file():
            split = split_container_path(item)
            if split is not None and not split[0].exists():
                raise FmcInputError(f"{split[0]}: no such file")
            if not is_image_path(item):
                raise FmcInputError(f"{p}: not an image fmc-ij reads (TIFF, HDF5, N5 or Zarr)")
            found.append((p, Path(output_name(item))))
        elif p.is_dir() and is_image_path(p):  # a Zarr / N5 folder given itself
            found.append((p, Path(output_name(p))))
        elif p.is_dir():
            files = sorted(f for f in p.rglob(pattern) if is_image_path(f) and (f.is_file() or f.is_dir())
                           and not any(is_image_path(a) and a != f for a in f.relative_to(p).parents
                                       if str(a) != "."))  # fmt: skip
            if not files:
                raise FmcInputError(f"{p}: no images matching {pattern} inside (TIFF, HDF5, N5, Zarr)")
            found += [(f, f.relative_to(p).with_name(output_name(f))) for f in files]
        else:
            raise FmcInputError(f"{p}: no such file or folder")
    return found


def predict_files(
    predictor: Predictor | ChannelPredictors | BundlePredictor,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    pattern: str = "*",
    **kwargs,
) -> list[Path]:
    """Predict every input into ``out`` under the same relative names (a challenge container's contract)."""
    out = Path(out)
    pairs = collect_inputs(inputs, pattern)
    for src, rel in pairs:
        if (out / rel).resolve() == src.resolve():
            raise FmcInputError(f"--out {out} would overwrite the input {src.name}; inputs are never modified")
    out.mkdir(parents=True, exist_ok=True)  # a file in the way fails now, not after minutes of prediction
    written: list[Path] = []
    if isinstance(predictor, Predictor) and predictor.channels > 1:
        pairs, groups = _channel_groups(predictor, pairs)
        for group in groups:
            written += predict_channels(predictor, {ch: src for ch, (src, _) in group.items()},
                                        {ch: out / rel for ch, (_, rel) in group.items()}, **kwargs)  # fmt: skip
    for src, rel in pairs:
        written += predict_file(predictor, src, out / rel, **kwargs)
    return written


def _channel_groups(
    predictor: Predictor, pairs: list[tuple[Path, Path]]
) -> tuple[list[tuple[Path, Path]], list[dict[str, tuple[Path, Path]]]]:
    """Multi-channel images as they are, and single-channel Fuse My Cells files grouped by specimen."""
    names = [c.lower() for c in predictor.channel_names]
    whole, groups = [], {}
    for src, rel in pairs:
        if "C" in open_lazy(src).axes:  # ImageJ stores ZCYX
            whole.append((src, rel))
            continue
        m = FMC_PATTERN.match(src.name)
        if m is None or not names:
            raise FmcInputError(f"{src.name}: one channel of a multi-channel model's input; name the channels "
                                "image_N_<channel>_angle.tif or stack them into one CZYX image")  # fmt: skip
        groups.setdefault((src.parent, m["index"], m["kind"].lower()), {})[m["channel"].lower()] = (src, rel)
    for key, g in groups.items():
        missing = [c for c in names if c not in g]
        if missing:
            raise FmcInputError(f"image_{key[1]} in {key[0]}: no {', '.join(missing)} image; the model needs "
                                f"{', '.join(names)} together")  # fmt: skip
    return whole, [{c: g[c] for c in names} for g in groups.values()]


def predict_channels(
    predictor: Predictor,
    srcs: dict[str, Path],
    dsts: dict[str, Path],
    *,
    output: Output = "input",
    uncertainty: bool = True,
    fallback: Literal["difference", "uncertainty"] | None = None,
    stream: bool | None = None,
    axes: str | None = None,
    channels: Sequence[str] | None = None,
    gate: bool = True,
    **tiling: Any,
) -> list[Path]:
    """Predict the one-channel files of a specimen (``{channel: path}``, in the model's channel order) with a
    multi-channel model, together; each channel's result goes to ``dsts[channel]`` with that file's metadata.
    ``tiling``: ``tile``, ``halo``, ``batch``, ``progress`` as in :func:`predict_file`; the stack is held in
    memory (``stream``, ``axes`` and ``channels`` are not used: each file is one channel)."""
    imgs = {c: open_lazy(p) for c, p in srcs.items()}
    shapes = {tuple(i.shape) for i in imgs.values()}
    if len(shapes) > 1:
        raise FmcInputError(f"{', '.join(p.name for p in srcs.values())}: channels differ in shape {sorted(shapes)}")
    for c, i in imgs.items():
        check_image(i.data, srcs[c].name, what="prediction", axes=i.axes)
    stack = np.stack([np.asarray(i.data) for i in imgs.values()])
    first = next(iter(imgs.values()))
    res = restore(predictor, stack, axes="C" + first.axes, spacing=first.spacing, unit=first.meta.unit,
                  gate=gate and fallback is None, **tiling)  # fmt: skip
    written: list[Path] = []
    for k, (c, img) in enumerate(imgs.items()):
        verdict = None if res.gate is None else dataclasses.replace(res.gate, weight=np.asarray(res.gate.weight)[k])
        one = dataclasses.replace(
            res, image=np.asarray(res.image)[k], axes=first.axes, gate=verdict,
            uncertainty=None if res.uncertainty is None else np.asarray(res.uncertainty)[k],
            normalizer=res.normalizer.parts[k],  # type: ignore[union-attr]
        )  # fmt: skip
        written += write_prediction(img, dsts[c], one, output=output, uncertainty=uncertainty, fallback=fallback)
    return written
