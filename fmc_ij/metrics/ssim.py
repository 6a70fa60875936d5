"""SSIM in 2D and 3D, computed in slabs with torch, and the Fuse My Cells N_SSIM.

Equal to ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=...)``: a Gaussian window (sigma 1.5, truncated at 3.5 sigma,
radius 5) and the mean over the image cropped by that radius. Because of the crop, every value that
enters the mean depends only on voxels inside the image, so the filtering can be "valid" (no padding)
and the volume can be processed in slabs along the first axis with a halo of one radius: peak memory
follows the slab, not the volume (a 300x1920x1920 volume runs in a few GB).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from fmc_ij.errors import FmcInputError

K1, K2 = 0.01, 0.03


def percentile_normalize(
    x: np.ndarray, pmin: float = 2.0, pmax: float = 99.8, *, clip: bool = False, eps: float = 0.0
) -> np.ndarray:
    """The challenge's normalisation: ``(x - p_min) / (p_max - p_min)`` over the whole image, unclipped.

    If both percentiles are equal the image is returned unchanged (as the organisers' ``tools.py`` does).
    ``clip=True`` gives the clipped variant some teams trained with.
    """
    x = np.asarray(x)
    lo, hi = np.percentile(x, (pmin, pmax))
    if hi == lo:
        return x.astype(np.float32)
    out = (x.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo + eps)
    return np.clip(out, 0.0, 1.0) if clip else out


def _gauss_kernel(sigma: float, truncate: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def _filter_valid(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian along every spatial axis of (N, 1, *spatial), 'valid' (no padding)."""
    nd = maps.dim() - 2
    conv = F.conv3d if nd == 3 else F.conv2d
    k = kernel.numel()
    for ax in range(nd):
        shape = [1, 1] + [1] * nd
        shape[2 + ax] = k
        maps = conv(maps, kernel.reshape(shape))
    return maps


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    data_range: float,
    sigma: float = 1.5,
    truncate: float = 3.5,
    slab_voxels: int = 2**25,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
) -> float:
    """Mean structural similarity of two 2D or 3D images (Gaussian window, population covariance).

    Parameters
    ----------
    a, b : ndarray
        Images of the same shape (2D or 3D).
    data_range : float
        The dynamic range L in C1 = (K1 L)^2, C2 = (K2 L)^2; 1.0 after percentile normalisation.
    sigma, truncate : float
        Gaussian window; the defaults are Wang et al. 2004 and skimage's.
    slab_voxels : int
        Voxels per slab along the first axis (memory bound); the result does not depend on it.
    device : str or torch.device, optional
        ``"cuda"`` when available, else the CPU.
    dtype : torch.dtype
        float64 (default) reproduces skimage to 1e-6; float32 is faster on GPUs.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise FmcInputError(f"SSIM needs images of the same shape, got {a.shape} and {b.shape}")
    if a.ndim not in (2, 3):
        raise FmcInputError(f"SSIM works on 2D or 3D images, got {a.ndim} dimensions")
    if not data_range or not math.isfinite(data_range) or data_range <= 0:
        raise FmcInputError(f"data_range must be a positive number, got {data_range}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kernel = _gauss_kernel(sigma, truncate, dtype, dev)
    r = (kernel.numel() - 1) // 2
    if min(a.shape) <= 2 * r:
        raise FmcInputError(f"image {a.shape} too small for a {2 * r + 1}-wide SSIM window")
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    plane = int(np.prod(a.shape[1:]))
    step = max(1, slab_voxels // max(plane, 1) - 2 * r)
    total, count = 0.0, 0
    n_out = a.shape[0] - 2 * r
    with torch.inference_mode():
        for z0 in range(0, n_out, step):
            z1 = min(z0 + step, n_out)
            x = torch.as_tensor(np.ascontiguousarray(a[z0 : z1 + 2 * r]), device=dev).to(dtype)
            y = torch.as_tensor(np.ascontiguousarray(b[z0 : z1 + 2 * r]), device=dev).to(dtype)
            maps = torch.stack([x, y, x * x, y * y, x * y]).unsqueeze(1)
            ux, uy, uxx, uyy, uxy = _filter_valid(maps, kernel)[:, 0]
            vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
            s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
            # Lateral axes are cropped by the 'valid' filter already; the first axis by the slab bounds.
            total += float(s.sum())
            count += s.numel()
    return total / count


def n_ssim(
    pred: np.ndarray, gt: np.ndarray, inp: np.ndarray, *, normalize: bool = True, eps: float = 1e-6, **ssim_kwargs
) -> float:
    """Fuse My Cells N_SSIM = (SSIM(pred, gt) - SSIM(input, gt)) / (1 - SSIM(input, gt)).

    0 means no better than the input, 1 perfect, negative worse than the input. Each image is
    percentile-normalised (2 / 99.8, unclipped) first unless ``normalize=False``; ``data_range``
    defaults to 1. Guard: when 1 - SSIM(input, gt) < ``eps`` the input is already (nearly) perfect and
    the ratio is meaningless, so NaN is returned (report and exclude such images rather than letting
    them dominate a mean).
    """
    if normalize:
        pred, gt, inp = (percentile_normalize(v) for v in (pred, gt, inp))
    ssim_kwargs.setdefault("data_range", 1.0)
    s_in = ssim(inp, gt, **ssim_kwargs)
    if 1.0 - s_in < eps:
        return float("nan")
    return (ssim(pred, gt, **ssim_kwargs) - s_in) / (1.0 - s_in)
