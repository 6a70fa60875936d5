"""Imaging physics shared by the generators: Gaussian PSFs, space-variant blur, a camera model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548


def fwhm_to_sigma(fwhm: float) -> float:
    return fwhm / FWHM_PER_SIGMA


def sigma_to_fwhm(sigma: float) -> float:
    return sigma * FWHM_PER_SIGMA


def widefield_fwhm(wavelength_nm: float, na: float) -> float:
    """Lateral FWHM (nm) of a widefield / confocal-like PSF: 0.51 lambda / NA."""
    return 0.51 * wavelength_nm / na


def gaussian_blur(image: np.ndarray, sigma_um: Sequence[float], spacing_um: Sequence[float]) -> np.ndarray:
    """Blur by a Gaussian PSF given in physical units (per axis), on a grid of the given spacing."""
    sig = [s / d for s, d in zip(sigma_um, spacing_um)]
    return ndimage.gaussian_filter(image.astype(np.float32, copy=False), sig, mode="constant", truncate=3.5)


def broad_blur(
    image: np.ndarray, sigma_um: Sequence[float], spacing_um: Sequence[float], factor: int = 4
) -> np.ndarray:
    """A wide Gaussian blur computed on a ``factor``-times coarser grid (for halos: exact enough, far cheaper)."""
    pad = [(0, (-n) % factor) for n in image.shape]
    x = np.pad(image.astype(np.float32, copy=False), pad, mode="edge")
    coarse = x.reshape([v for n in x.shape for v in (n // factor, factor)]).mean(axis=tuple(range(1, 2 * x.ndim, 2)))
    coarse = gaussian_blur(coarse, sigma_um, [d * factor for d in spacing_um])
    up = ndimage.zoom(coarse, factor, order=1, mode="nearest", grid_mode=True)
    return up[tuple(slice(0, n) for n in image.shape)]


def depth_varying_blur(
    image: np.ndarray,
    t: np.ndarray,
    sigma_start: Sequence[float],
    sigma_end: Sequence[float],
    spacing_um: Sequence[float],
    levels: int = 6,
) -> np.ndarray:
    """Space-variant Gaussian blur: PSF widths interpolate from ``sigma_start`` (t=0) to ``sigma_end`` (t=1).

    The image is blurred at ``levels`` PSF widths and each voxel blends the two levels that bracket
    its ``t``: the standard "blend of convolutions" approximation of a depth-dependent PSF.
    """
    t = np.clip(t, 0.0, 1.0) * (levels - 1)
    lo = np.floor(t).astype(np.int16)
    frac = (t - lo).astype(np.float32)
    out = np.zeros(image.shape, np.float32)
    s0, s1 = np.asarray(sigma_start, float), np.asarray(sigma_end, float)
    for k in range(levels):
        blurred = gaussian_blur(image, s0 + (s1 - s0) * k / (levels - 1), spacing_um)
        # A voxel bracketed by levels [j, j+1] gets (1 - frac) of level j and frac of level j+1.
        sel = lo == k
        out[sel] += (1.0 - frac[sel]) * blurred[sel]
        if k > 0:
            sel = lo == k - 1
            out[sel] += frac[sel] * blurred[sel]
    return out


def camera(
    photons: np.ndarray,
    rng: np.random.Generator,
    *,
    read_noise: float = 2.0,
    offset: float = 100.0,
    gain: float = 1.0,
    dtype: type = np.uint16,
) -> np.ndarray:
    """sCMOS-like detection: Poisson shot noise, Gaussian read noise (e-), gain (ADU/e-), offset."""
    electrons = rng.poisson(np.clip(photons, 0, None)).astype(np.float32)
    electrons += rng.normal(0.0, read_noise, photons.shape).astype(np.float32)
    adu = np.round(electrons * gain + offset)
    info = np.iinfo(dtype)
    return np.clip(adu, info.min, info.max).astype(dtype)


def sparse_texture(
    shape: Sequence[int], rng: np.random.Generator, n_points: int, background: float = 20.0
) -> np.ndarray:
    """Bright sub-resolution points (amplitude up to 100) on a smooth background: a test image with structure at
    every scale (used for known-sigma SQUIRREL pairs)."""
    img = np.zeros(tuple(shape))
    idx = tuple(rng.integers(0, n, n_points) for n in shape)
    img[idx] = rng.random(n_points) * 100
    return ndimage.gaussian_filter(img, 0.7) + ndimage.gaussian_filter(rng.random(tuple(shape)), 4) * background
