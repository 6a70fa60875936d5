"""Semi-synthetic training pairs where no ground truth exists (CARE isotropic restoration, Weigert et al. 2018).

A volume with coarse axial sampling (dz >> dx) has sharp lateral (YX) planes and blurred, undersampled axial
(XZ / YZ) planes. Lateral planes serve as ground truth; each is degraded along one lateral axis the way the
microscope degrades Z: convolution with the axial PSF (beyond the lateral one) and subsampling by dz / dx, then
linear re-interpolation to the original grid (what prediction does to an axial plane before the network sees it).
Half of the planes are degraded along X, half along Y, so the network learns the degradation in both orientations.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from fmc_ij.data.pairs import TrainPair, open_pair
from fmc_ij.errors import FmcInputError
from fmc_ij.io import imread
from fmc_ij.io.dataset import FMC_PATTERN
from fmc_ij.norm import PMAX, PMIN

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def axial_degrade(
    image: np.ndarray,
    factor: float,
    psf_sigma_px: float,
    *,
    axis: int = -1,
    noise_sigma: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Degrade ``image`` along ``axis`` as an axial direction: blur, subsample by ``factor``, re-interpolate.

    Parameters
    ----------
    image : ndarray
        A lateral plane (or any array); float32 is returned, same shape.
    factor : float
        Subsampling factor (axial step / lateral pixel), at least 1.
    psf_sigma_px : float
        Gaussian sigma of the extra axial blur in pixels of ``image``.
    noise_sigma : float
        Optional additive Gaussian noise (in image units) after subsampling.
    """
    if factor < 1:
        raise FmcInputError(f"subsampling factor must be >= 1, got {factor}")
    x = np.asarray(image, np.float32)
    ax = axis % x.ndim
    if psf_sigma_px > 0:
        x = ndimage.gaussian_filter1d(x, psf_sigma_px, axis=ax, mode="reflect")
    n = x.shape[ax]
    coarse_pos = np.arange(0.0, n - 1 + 1e-9, factor)
    coords = np.meshgrid(*[np.arange(s, dtype=np.float64) if i != ax else coarse_pos for i, s in enumerate(x.shape)],
                         indexing="ij")  # fmt: skip
    coarse = ndimage.map_coordinates(x, coords, order=1, mode="nearest")
    if noise_sigma > 0:
        coarse = coarse + (rng or np.random.default_rng()).normal(0.0, noise_sigma, coarse.shape).astype(np.float32)
    # Back onto the fine grid: fine position p sits at coarse index p / factor.
    fine = np.meshgrid(*[np.arange(s, dtype=np.float64) if i != ax else np.arange(n) / factor
                         for i, s in enumerate(x.shape)], indexing="ij")  # fmt: skip
    return ndimage.map_coordinates(coarse, fine, order=1, mode="nearest").astype(np.float32)


def isotropic_factor(spacing: Sequence[float]) -> float:
    """k = dz / dx of a ZYX voxel size; an error when there is nothing to restore or the pixels are not square."""
    dz, dy, dx = (float(s) for s in spacing)
    if abs(dy - dx) > 1e-6 * dx:
        raise FmcInputError(f"isotropic CARE needs square lateral pixels, got dy={dy}, dx={dx}")
    k = dz / dx
    if k < 1.5:
        raise FmcInputError(
            f"the volume is already about isotropic (dz/dx = {k:.2f}); check its voxel size (fmc-ij info FILE)"
        )
    return k


def isotropic_pairs(
    volume: np.ndarray,
    spacing: Sequence[float],
    *,
    psf_axial_fwhm: float | None = None,
    psf_lateral_fwhm: float | None = None,
    planes: Sequence[int] | None = None,
    noise_sigma: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(degraded, ground truth) stacks of lateral planes for isotropic CARE, shapes (P, Y, X).

    Parameters
    ----------
    volume : ndarray (Z, Y, X)
    spacing : (dz, dy, dx)
        Voxel size; the subsampling factor is ``dz / dx``.
    psf_axial_fwhm, psf_lateral_fwhm : float, optional
        PSF widths in the units of ``spacing``; the extra axial blur is their quadrature difference. Default: an
        axial FWHM of ``dz`` (the sampling-limited case) and a lateral FWHM of ``2 dx``.
    planes : sequence of int, optional
        Which Z planes to use (default all).
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise FmcInputError(f"isotropic pairs need a ZYX volume, got {volume.ndim} dimensions")
    factor = isotropic_factor(spacing)
    dz, dx = float(spacing[0]), float(spacing[2])
    ax_fwhm = dz if psf_axial_fwhm is None else psf_axial_fwhm
    lat_fwhm = 2 * dx if psf_lateral_fwhm is None else psf_lateral_fwhm
    extra = np.sqrt(max(ax_fwhm**2 - lat_fwhm**2, 0.0)) / FWHM_PER_SIGMA / dx
    rng = np.random.default_rng(seed)
    idx = list(range(volume.shape[0])) if planes is None else list(planes)
    lows, highs = [], []
    for k, z in enumerate(idx):
        gt = np.asarray(volume[z], np.float32)
        axis = -1 if k % 2 == 0 else -2
        lows.append(axial_degrade(gt, factor, extra, axis=axis, noise_sigma=noise_sigma, rng=rng))
        highs.append(gt)
    return np.stack(lows), np.stack(highs)


def isotropic_dataset(
    root: str | os.PathLike,
    pattern: str = "*.tif*",
    *,
    psf_axial_fwhm: float | None = None,
    psf_lateral_fwhm: float | None = None,
    pmin: float = PMIN,
    pmax: float = PMAX,
) -> list[TrainPair]:
    """Isotropic-CARE training pairs from every ZYX volume matching ``pattern`` below ``root``.

    Each volume becomes a stack of (degraded, ground truth) lateral planes (see :func:`isotropic_pairs`),
    wrapped as a :class:`TrainPair` whose "Z" axis indexes planes; train a 2D network on ``(1, Y, X)`` patches.
    """
    root = Path(root)
    files = sorted(p for p in root.rglob(pattern) if p.is_file()) if root.is_dir() else [root]
    if not files:
        raise FmcInputError(f"no volumes matching {pattern} in {root}")
    out = []
    for f in files:
        img = imread(f)
        if img.axes != "ZYX":
            raise FmcInputError(f"{f.name}: isotropic restoration needs ZYX volumes, got {img.axes}")
        low, high = isotropic_pairs(img.data, img.meta.voxel_size("ZYX"), psf_axial_fwhm=psf_axial_fwhm,
                                    psf_lateral_fwhm=psf_lateral_fwhm)  # fmt: skip
        dy, dx = img.meta.voxel_size("YX")
        # One specimen's channels and views (image_N_<channel>_<angle|fused>) stay on one side of the split.
        m = FMC_PATTERN.match(f.name)
        out.append(open_pair(low, high, name=f.stem, axes="ZYX", spacing=(1.0, dy, dx), pmin=pmin, pmax=pmax,
                             channel=img.meta.channel or (m["channel"].lower() if m else None),
                             specimen=f"image_{m['index']}" if m else f.stem, unit=img.meta.unit))  # fmt: skip
    return out
