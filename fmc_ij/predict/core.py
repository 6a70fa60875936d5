"""Tiled prediction of arrays of any size, with uncertainty and an optional fallback to the input.

Flow: the input is normalised with its own percentiles (as in training), cut into tiles with receptive-field
context (:mod:`fmc_ij.predict.tiles`), tiles of equal shape are batched through the network, and each tile's
core is written into the output (any array-like: numpy, ``numpy.memmap``, zarr), so memory follows the tile
when the output lives on disk. The result is in target-normalised units unless rescaled (see ``output``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage

from fmc_ij.errors import FmcInputError
from fmc_ij.nn.infer import channel_moments
from fmc_ij.norm import ChannelNormalizer, Normalizer
from fmc_ij.predict.model import Predictor
from fmc_ij.predict.tiles import Tile, auto_tile, pad_tile, tile_grid
from fmc_ij.progress import track

#: Mirrored context at the image border (voxels, rounded up to the pooling product).
BORDER = 8


@dataclass
class Prediction:
    """The restored image and, when the model provides one, its uncertainty (a standard deviation); ``features``:
    the channel moments of the network's deepest activations over the image (the gate's out-of-distribution
    score; :func:`fmc_ij.nn.infer.channel_moments`)."""

    image: Any
    uncertainty: Any | None
    normalizer: Normalizer | ChannelNormalizer
    features: np.ndarray | None = None


def _layout(ndim_model: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Spatial shape the network runs on: a 2D model on a volume runs plane by plane."""
    if ndim_model == len(shape):
        return shape
    if ndim_model == 2 and len(shape) == 3:
        return shape
    raise FmcInputError(f"a {ndim_model}D model cannot predict a {len(shape)}D image; give YX or ZYX data")


Job = tuple[int | None, Tile]  # (plane for a 2D model on a volume, tile)


def plan_tiles(
    predictor: Predictor,
    shape: tuple[int, ...],
    *,
    tile: Sequence[int] | None = None,
    halo: Sequence[int] | None = None,
    border: Sequence[int] | None = None,
    batch: int = 1,
) -> list[list[Job]]:
    """The batches of tiles that cover an image of ``shape`` (tiles of one shape share a batch)."""
    _layout(predictor.ndim, shape)
    plane_wise = predictor.ndim == 2 and len(shape) == 3
    net_shape = shape[1:] if plane_wise else shape
    halo = list(halo) if halo is not None else predictor.radius
    border = list(border) if border is not None else [min(BORDER, h) for h in halo]
    multiple = predictor.multiple
    if predictor.whole_z:  # the network sees every plane at once (a learned projection): tiles span Z
        halo[0], border[0] = 0, 0
        multiple = [max(multiple[0], net_shape[0]), *multiple[1:]]
        if tile is not None:
            tile = [net_shape[0], *tile[1:]]
    if tile is None:
        tile = auto_tile(net_shape, halo, border, multiple, predictor.max_tile_voxels)
    if not len(tile) == len(halo) == len(border) == predictor.ndim:
        raise FmcInputError(f"tile, halo and border need {predictor.ndim} sizes for this {predictor.ndim}D model")
    grid = tile_grid(net_shape, tile, halo, predictor.multiple, border)
    groups: dict[tuple[int, ...], list[Job]] = defaultdict(list)
    for z in range(shape[0]) if plane_wise else [None]:
        for t in grid:
            groups[t.shape].append((z, t))
    return [g[i : i + batch] for g in groups.values() for i in range(0, len(g), batch)]


def run_tiles(
    predictor: Predictor, image: Any, norm: Normalizer | ChannelNormalizer, chunk: list[Job]
) -> list[tuple[tuple[slice, ...], np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """Predict one batch of tiles: (destination, mean core, uncertainty core or None, activation summary or None)
    per tile.

    A multi-channel model (:attr:`Predictor.channels` > 1) reads and writes channel-first images."""
    lead: tuple[slice, ...] = (slice(None),) if predictor.channels > 1 else ()
    blocks = []
    for z, t in chunk:
        read = lead + (t.read if z is None else (z, *t.read))
        block = norm(np.asarray(image[read]))
        blocks.append(pad_tile(block if lead else block[None], [(0, 0), *t.pad]))
    mean, unc = predictor(torch.from_numpy(np.stack(blocks)))
    acts = predictor.last_activations
    mean_np, unc_np = mean.cpu().numpy(), unc.cpu().numpy() if unc is not None else None
    if not lead:
        mean_np, unc_np = mean_np[:, 0], unc_np[:, 0] if unc_np is not None else None
    res = []
    for k, (z, t) in enumerate(chunk):
        inner = lead + tuple(slice(o, o + (c.stop - c.start)) for o, c in zip(t.offset, t.core))
        dst = lead + (t.core if z is None else (z, *t.core))
        moments = _core_moments(acts[k], t, blocks[k].shape[1:]) if acts is not None else None
        res.append((dst, mean_np[k][inner], unc_np[k][inner] if unc_np is not None else None, moments))
    return res


def _core_moments(act: torch.Tensor, t: Tile, tile_shape: tuple[int, ...]) -> np.ndarray:
    """Channel moments of the deepest activations over the part of the tile it writes (its core), so that an
    image's moments add up to the same whatever the tiling (:func:`fmc_ij.nn.infer.channel_moments`)."""
    space = act.shape[1:]
    tile_space = tile_shape[-len(space) :]
    offsets, cores = t.offset[-len(space) :], t.core[-len(space) :]
    sl = [slice(None)]
    for n_act, n_tile, off, core in zip(space, tile_space, offsets, cores):
        f = max(1, round(n_tile / n_act))  # the pooling between the input and the deepest block
        sl.append(slice(off // f, -(-(off + core.stop - core.start) // f)))
    return channel_moments(act[tuple(sl)]).cpu().numpy()


def predict_array(
    predictor: Predictor,
    image: Any,
    *,
    tile: Sequence[int] | None = None,
    halo: Sequence[int] | None = None,
    border: Sequence[int] | None = None,
    batch: int = 1,
    out: Any | None = None,
    uncertainty_out: Any | None = None,
    normalizer: Normalizer | ChannelNormalizer | None = None,
    progress: bool = True,
) -> Prediction:
    """Predict a YX or ZYX array (numpy or lazy) tile by tile; ``CYX`` or ``CZYX`` for a multi-channel model.

    Parameters
    ----------
    predictor : Predictor
    image : array-like
        The raw input; read one tile (plus context) at a time.
    tile : sequence of int, optional
        Padded tile size per axis of the network (default: the fewest computed voxels within the
        predictor's memory budget, :attr:`Predictor.max_tile_voxels`).
    halo : sequence of int, optional
        Context per side; default the network's receptive radius, which makes the tiled result equal to a
        whole-array pass. Smaller is faster and approximate.
    border : sequence of int, optional
        Mirrored context added at the image border (default :data:`BORDER`, capped at the halo): it keeps the
        network's zero-padding rim out of the result without paying a full halo at every edge.
    batch : int
        Tiles per forward pass.
    out, uncertainty_out : array-like, optional
        float32 destinations (e.g. a zarr array or memmap) written tile core by tile core; default in memory.
    normalizer : Normalizer or ChannelNormalizer, optional
        Input normalisation; default the image's own ``pmin``/``pmax`` percentiles (per channel).
    """
    shape = tuple(int(s) for s in image.shape)
    spatial = shape
    if predictor.channels > 1:
        if len(shape) < 3 or shape[0] != predictor.channels:
            raise FmcInputError(f"this model takes {predictor.channels} channels first (CYX or CZYX); got an "
                                f"array of shape {shape}")  # fmt: skip
        spatial = shape[1:]
    chunks = plan_tiles(predictor, spatial, tile=tile, halo=halo, border=border, batch=batch)
    fit = ChannelNormalizer.fit if predictor.channels > 1 else Normalizer.fit
    norm = normalizer or fit(image, predictor.pmin, predictor.pmax)
    if out is None:
        out = np.zeros(shape, np.float32)
    if uncertainty_out is None and predictor.has_uncertainty:
        uncertainty_out = np.zeros(shape, np.float32)
    it = track(chunks, "predict", total=len(chunks)) if progress and len(chunks) > 1 else chunks
    moments = None
    for chunk in it:
        for dst, mean, unc, m in run_tiles(predictor, image, norm, chunk):
            out[dst] = mean
            if unc is not None and uncertainty_out is not None:
                uncertainty_out[dst] = unc
            if m is not None:
                moments = m if moments is None else moments + m
    return Prediction(out, uncertainty_out, norm, moments)


def difference_weight(inp: np.ndarray, pred: np.ndarray, *, size: int = 9, sigma: float = 3.0) -> np.ndarray:
    """Wodzinski & Mueller's fallback weight: where the network changed the input most, trust it (w -> 1).

    |input - prediction| (both normalised) is max-filtered over ``size`` voxels, smoothed with ``sigma``,
    percentile-normalised (2 / 98) and clipped to [0, 1]. Computed at most 128 voxels per axis, then resampled.
    """
    diff = np.abs(np.asarray(inp, np.float32) - np.asarray(pred, np.float32))
    factors = [max(1.0, n / 128) for n in diff.shape]
    small = ndimage.zoom(diff, [1 / f for f in factors], order=1) if max(factors) > 1 else diff
    small = ndimage.gaussian_filter(ndimage.maximum_filter(small, size), sigma)
    lo, hi = np.percentile(small, (2, 98))
    w = np.clip((small - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32)
    if w.shape != diff.shape:
        w = ndimage.zoom(w, [n / s for n, s in zip(diff.shape, w.shape)], order=1)
        w = w[tuple(slice(0, n) for n in diff.shape)]
    return w


def fallback_blend(
    inp_norm: np.ndarray,
    pred: np.ndarray,
    uncertainty: np.ndarray | None = None,
    *,
    mode: Literal["difference", "uncertainty"] = "difference",
    max_uncertainty: float = 0.1,
) -> np.ndarray:
    """Blend the prediction back towards the (normalised) input where it should not be trusted.

    ``difference``: ``in * (1 - w) + out * w`` with :func:`difference_weight` (keeps regions the network
    barely touched as they were). ``uncertainty``: fall back where the predicted standard deviation exceeds
    ``max_uncertainty`` (normalised units), with a smooth ramp.
    """
    if mode == "difference":
        w = difference_weight(inp_norm, pred)
    else:
        if uncertainty is None:
            raise FmcInputError("uncertainty fallback needs a probabilistic model or an ensemble")
        w = np.clip(2.0 - np.asarray(uncertainty, np.float32) / max_uncertainty, 0.0, 1.0)
    return (np.asarray(inp_norm, np.float32) * (1 - w) + np.asarray(pred, np.float32) * w).astype(np.float32)
