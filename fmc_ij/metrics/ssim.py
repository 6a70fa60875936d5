"""SSIM in 2D and 3D, computed in tiles with torch, and the Fuse My Cells N_SSIM.

Equal to ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=...)``: a Gaussian window (sigma 1.5, truncated at 3.5 sigma,
radius 5) and the mean over the image cropped by that radius. Because of the crop, every value that
enters the mean depends only on voxels inside the image, so the filtering can be "valid" (no padding)
and the volume can be processed in tiles (along Z and Y) with a halo of one radius: peak memory follows
the tile, not the volume, and the inputs may be memory-mapped files.

Two engines run the same code: ``eager`` (plain torch) and ``compiled`` (``torch.compile`` fuses the
separable stencil and the SSIM formula into one loop nest; about 7x faster on a CPU, first call
compiles for ~30 s, then the kernel is cached on disk). ``auto`` compiles for large volumes only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from fmc_ij.errors import FmcInputError
from fmc_ij.metrics.pixel import check_images
from fmc_ij.norm import PMAX, PMIN, percentile_range
from fmc_ij.norm import percentile_normalize as _normalize
from fmc_ij.progress import track

K1, K2 = 0.01, 0.03
Engine = Literal["auto", "eager", "compiled"]
AUTO_COMPILE_VOXELS = 2**26  # below this, compiling costs more than it saves
PROGRESS_VOXELS = 2**27  # a progress bar from here (several seconds on a CPU)
_log = logging.getLogger(__name__)
_compiled: dict[str, Callable] = {}


def percentiles(x: np.ndarray, pmin: float = PMIN, pmax: float = PMAX) -> tuple[float, float]:
    """Both percentiles of the whole image, every voxel counted (works on memory-mapped arrays)."""
    return percentile_range(x, pmin, pmax, max_samples=None)


def percentile_normalize(x: np.ndarray, pmin: float = PMIN, pmax: float = PMAX, *, clip: bool = False) -> np.ndarray:
    """The challenge's normalisation: ``(x - p_min) / (p_max - p_min)`` over the whole image, unclipped.

    If both percentiles are equal the image is returned unchanged (as the organisers' ``tools.py`` does).
    ``clip=True`` gives the clipped variant some teams trained with.
    """
    return _normalize(x, pmin, pmax, clip=clip, flat="identity")


def gaussian_weights(sigma: float = 1.5, truncate: float = 3.5) -> list[float]:
    """The normalised 1D Gaussian window skimage/scipy use (radius ``int(truncate * sigma + 0.5)``)."""
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).tolist()


def _filter_valid(m: torch.Tensor, w: list[float]) -> torch.Tensor:
    """Separable symmetric filter along every axis, 'valid' (each axis shrinks by ``len(w) - 1``)."""
    r = len(w) // 2
    for ax in range(m.dim()):
        n = m.shape[ax] - 2 * r
        acc = m.narrow(ax, r, n) * w[r]
        for j in range(r):  # symmetric taps: one multiply per pair
            acc = acc + (m.narrow(ax, j, n) + m.narrow(ax, 2 * r - j, n)) * w[j]
        m = acc
    return m


def _ssim_tile_sum(x: torch.Tensor, y: torch.Tensor, mx: float, my: float, w: list[float], c1: float, c2: float):
    """Sum of the SSIM map over a tile; ``x``, ``y`` are centred (value - mx, value - my) in data_range units.

    Centring keeps the second moments small so float32 does not cancel catastrophically in var = E[x^2] - E[x]^2.
    """
    ux, uy = _filter_valid(x, w), _filter_valid(y, w)
    vx = _filter_valid(x * x, w) - ux * ux
    vy = _filter_valid(y * y, w) - uy * uy
    vxy = _filter_valid(x * y, w) - ux * uy
    ux, uy = ux + mx, uy + my
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.sum(dtype=torch.float64)


def _tile_fn(engine: str, n_voxels: int) -> tuple[Callable, str]:
    if engine == "eager" or (engine == "auto" and n_voxels < AUTO_COMPILE_VOXELS):
        return _ssim_tile_sum, "eager"
    if "fn" not in _compiled:
        _compiled["fn"] = torch.compile(_ssim_tile_sum, dynamic=True)
    return _compiled["fn"], "compiled"


def _tiles(shape: tuple[int, ...], r: int, tile_voxels: int) -> list[tuple[slice, ...]]:
    """Output tiles along the first two axes (3D) or the first axis (2D); each input slice adds the halo."""
    out = [s - 2 * r for s in shape]
    rest = int(np.prod(shape[1:])) if len(shape) == 2 else int(np.prod(shape[2:]))
    if len(shape) == 2:
        step0 = max(1, tile_voxels // max(rest, 1) - 2 * r)
        return [(slice(z, min(z + step0, out[0]) + 2 * r),) for z in range(0, out[0], step0)]
    # Roughly cubic-ish tiles in (Z, Y): halo overhead stays small on thin slabs of wide planes.
    side = max(8, int(math.sqrt(tile_voxels / max(rest, 1))) - 2 * r)
    sz, sy = min(side, out[0]), min(max(side, tile_voxels // (rest * (min(side, out[0]) + 2 * r)) - 2 * r), out[1])
    return [
        (slice(z, min(z + sz, out[0]) + 2 * r), slice(y, min(y + sy, out[1]) + 2 * r))
        for z in range(0, out[0], sz)
        for y in range(0, out[1], sy)
    ]


def _check_pair(a: np.ndarray, b: np.ndarray, r: int) -> None:
    if a.shape != b.shape:
        raise FmcInputError(f"SSIM needs images of the same shape, got {a.shape} and {b.shape}")
    if a.ndim not in (2, 3):
        raise FmcInputError(f"SSIM works on 2D or 3D images, got {a.ndim} dimensions")
    if min(a.shape) <= 2 * r:
        raise FmcInputError(f"image {a.shape} too small for a {2 * r + 1}-wide SSIM window")


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    data_range: float,
    sigma: float = 1.5,
    truncate: float = 3.5,
    tile_voxels: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    engine: Engine = "auto",
    normalize: tuple[tuple[float, float], tuple[float, float]] | None = None,
    clip: bool = False,
) -> float:
    """Mean structural similarity of two 2D or 3D images (Gaussian window, population covariance).

    Parameters
    ----------
    a, b : ndarray
        Images of the same shape (2D or 3D); memory-mapped arrays are read tile by tile.
    data_range : float
        The dynamic range L in C1 = (K1 L)^2, C2 = (K2 L)^2; 1.0 after percentile normalisation.
    sigma, truncate : float
        Gaussian window; the defaults are Wang et al. 2004 and skimage's.
    tile_voxels : int, optional
        Voxels per tile (the memory bound); the result does not depend on it. Default: 2**19 on a CPU (a tile's
        temporaries stay in cache: 4-10x faster than whole-volume tiles), 2**24 on a GPU.
    device : str or torch.device, optional
        ``"cuda"`` when available, else the CPU.
    dtype : torch.dtype, optional
        Working precision; float64 by default with the eager engine, float32 with the compiled one
        (the tile sums are float64 either way; float32 agrees with skimage to ~1e-9 on the mean).
    engine : {"auto", "eager", "compiled"}
        ``auto`` compiles for volumes of 2**26 voxels or more; a failed compile falls back to eager.
    normalize : ((lo_a, hi_a), (lo_b, hi_b)), optional
        Apply ``(x - lo) / (hi - lo)`` per tile (the percentile normalisation without a full-size copy).
    clip : bool
        Clip the normalised values to [0, 1] (only with ``normalize``).

    Returns
    -------
    float
        The mean SSIM, in [-1, 1].
    """
    w = gaussian_weights(sigma, truncate)
    r = len(w) // 2
    _check_pair(a, b, r)
    if not data_range or not math.isfinite(data_range) or data_range <= 0:
        raise FmcInputError(f"data_range must be a positive number, got {data_range}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fn, used = _tile_fn(engine, int(np.prod(a.shape)))
    dt = dtype or (torch.float32 if used == "compiled" else torch.float64)
    c1, c2 = K1**2, K2**2  # the data are scaled to data_range units below
    # (offset, scale) per image: values in data_range units after the optional percentile normalisation;
    # equal percentiles leave the image unchanged, as the organisers' function does.
    affine = [(lo, (hi - lo) * data_range) if hi != lo else (0.0, data_range) for lo, hi in normalize or ()]
    affine = affine or [(0.0, data_range)] * 2
    tiles = _tiles(a.shape, r, tile_voxels or (2**24 if dev.type == "cuda" else 2**19))
    total, count = 0.0, 0
    items = track(tiles, "SSIM", total=len(tiles)) if np.prod(a.shape) >= PROGRESS_VOXELS else tiles
    with torch.inference_mode():
        for sl in items:
            centred = []
            for img, (off, scale) in zip((a, b), affine):
                t = (torch.from_numpy(np.array(img[sl])).to(dev).to(dt) - off) / scale
                if clip and normalize:
                    t = t.clamp(0.0, 1.0 / data_range)
                m = float(t.mean())
                centred.append((t - m, m))
            (x, mx), (y, my) = centred
            try:
                total += float(fn(x, y, mx, my, w, c1, c2))
            except Exception as err:  # a missing C++ compiler or an unsupported backend: stay correct, go eager
                if fn is _ssim_tile_sum:
                    raise
                _log.warning("torch.compile failed (%s); computing SSIM eagerly", str(err).splitlines()[0][:120])
                fn = _ssim_tile_sum
                total += float(fn(x.double(), y.double(), mx, my, w, c1, c2))
            count += int(np.prod([s.stop - s.start - 2 * r for s in sl])) * int(
                np.prod([n - 2 * r for n in a.shape[len(sl) :]])
            )
    return total / count


def n_ssim_from(s_pred: float, s_input: float, eps: float = 1e-6) -> float:
    """N_SSIM from the two SSIMs; NaN when 1 - SSIM(input, gt) < ``eps`` (see :func:`n_ssim`)."""
    if not (math.isfinite(s_pred) and math.isfinite(s_input)) or 1.0 - s_input < eps:
        return float("nan")
    return (s_pred - s_input) / (1.0 - s_input)


def n_ssim(
    pred: np.ndarray,
    gt: np.ndarray,
    inp: np.ndarray,
    *,
    normalize: bool = True,
    clip: bool = False,
    eps: float = 1e-6,
    **ssim_kwargs,
) -> float:
    """Fuse My Cells N_SSIM = (SSIM(pred, gt) - SSIM(input, gt)) / (1 - SSIM(input, gt)).

    0 means no better than the input, 1 perfect, negative worse than the input. Each image is
    percentile-normalised (2 / 99.8, unclipped unless ``clip``) first unless ``normalize=False``;
    ``data_range`` defaults to 1. An identity prediction scores exactly 0 (the same SSIM is computed
    twice, deterministically).

    Guard: when 1 - SSIM(input, gt) < ``eps`` the input is already (nearly) perfect and the ratio is
    meaningless, so NaN is returned (report and exclude such images rather than letting them dominate
    a mean).
    """
    check_images(pred, gt, inp, names=("prediction", "ground truth", "input"))
    ssim_kwargs.setdefault("data_range", 1.0)
    if normalize:
        p_pred, p_gt, p_in = (percentiles(v) for v in (pred, gt, inp))
        s_in = ssim(inp, gt, normalize=(p_in, p_gt), clip=clip, **ssim_kwargs)
        s_pred = ssim(pred, gt, normalize=(p_pred, p_gt), clip=clip, **ssim_kwargs)
    else:
        s_in, s_pred = ssim(inp, gt, **ssim_kwargs), ssim(pred, gt, **ssim_kwargs)
    return n_ssim_from(s_pred, s_in, eps)
