"""SQUIRREL for 3D volumes with an anisotropic RSF: one sigma per axis (Z, and Y = X), block means.

The reference is (Z, Y, X); the image is (mz Z, m Y, m X). The objective is the binned one of
:mod:`fmc_ij.squirrel.core` with a separable pixel-integrated Gaussian of sigma_z along Z and sigma_xy
laterally; alpha, beta are closed form, and the two sigmas are found by alternating 1-D searches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import optimize

from fmc_ij.errors import FmcInputError
from fmc_ij.squirrel.core import SIGMA_RANGE, _as_float, rsf_kernel_1d


@dataclass
class VolumeErrorMapResult:
    sigma_z: float  # reference voxels along Z
    sigma_xy: float  # reference pixels laterally
    alpha: float
    beta: float
    rse: float
    rsp: float
    error_map: np.ndarray  # |R upsampled - C| on the image grid
    magnification: tuple[int, int, int]


def _kernel_fft(sigma_px: float, n: int, real: bool, dev: torch.device, dtype=torch.float64) -> torch.Tensor:
    k = torch.as_tensor(rsf_kernel_1d(sigma_px), dtype=dtype, device=dev)
    r = (k.numel() - 1) // 2
    v = torch.zeros(n, dtype=dtype, device=dev)
    v[: r + 1] = k[r:]
    if r:
        v[-r:] = k[:r]
    return torch.fft.rfft(v) if real else torch.fft.fft(v)


def error_map_3d(
    reference: np.ndarray,
    image: np.ndarray,
    magnification: tuple[int, int, int] | None = None,
    *,
    sigma_range: tuple[float, float] = SIGMA_RANGE,
    rounds: int = 2,
    device: str | None = None,
) -> VolumeErrorMapResult:
    """Anisotropic SQUIRREL analysis of a volume (binned method; see the module docstring)."""
    ref = _as_float(reference, "reference")
    img = _as_float(image, "image")
    if ref.ndim != 3 or img.ndim != 3:
        raise FmcInputError(f"SQUIRREL 3D needs two ZYX volumes, got {ref.shape} and {img.shape}")
    ratios = [i / r for i, r in zip(img.shape, ref.shape)]
    mag = tuple(int(round(x)) for x in ratios) if magnification is None else tuple(magnification)
    if any(abs(x - round(x)) > 1e-9 or round(x) < 1 for x in ratios) or tuple(int(round(x)) for x in ratios) != mag:
        raise FmcInputError(
            f"SQUIRREL 3D: image {img.shape} must be an integer multiple of the reference {ref.shape} on every axis"
        )
    if mag[1] != mag[2]:
        raise FmcInputError(f"SQUIRREL 3D: lateral magnifications differ ({mag[1]} vs {mag[2]})")
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mz, m = mag[0], mag[1]
    pz = max(1, 3 * int(sigma_range[1] * mz))
    pxy = max(1, 3 * int(sigma_range[1] * m))
    # float32 FFTs (twice as fast; the sums below are float64): the fit needs ~1e-6 relative accuracy, not 1e-15.
    x = F.pad(torch.as_tensor(img, dtype=torch.float32, device=dev)[None, None], (pxy, pxy, pxy, pxy, pz, pz),
              mode="replicate")[0, 0]  # fmt: skip
    shape = tuple(x.shape)
    spec = torch.fft.rfftn(x)
    r = torch.as_tensor(ref, dtype=torch.float64, device=dev).flatten()
    n, sr, srr = r.numel(), float(r.sum()), float(r @ r)
    cache: dict[tuple[float, float], tuple[float, float, float, torch.Tensor]] = {}

    def model(sz: float, sxy: float):
        key = (round(sz, 9), round(sxy, 9))
        if key not in cache:
            fz = _kernel_fft(float(np.float32(sz * mz)), shape[0], False, dev, torch.float32)
            fy = _kernel_fft(float(np.float32(sxy * m)), shape[1], False, dev, torch.float32)
            fx = _kernel_fft(float(np.float32(sxy * m)), shape[2], True, dev, torch.float32)
            conv = torch.fft.irfftn(spec * fz[:, None, None] * fy[None, :, None] * fx[None, None, :], s=shape)
            conv = conv[pz : pz + img.shape[0], pxy : pxy + img.shape[1], pxy : pxy + img.shape[2]]
            b = F.avg_pool3d(conv[None, None], (mz, m, m))[0, 0].flatten().double()
            sb, sbb, sbr = float(b.sum()), float(b @ b), float(b @ r)
            vb, cov = sbb - sb * sb / n, sbr - sb * sr / n
            alpha = max(cov / vb if vb > 0 else 0.001, 0.001)
            beta = (sr - alpha * sb) / n
            sse = srr - 2 * alpha * sbr - 2 * beta * sr + alpha**2 * sbb + 2 * alpha * beta * sb + n * beta**2
            cache[key] = (math.sqrt(max(sse, 0.0) / n), alpha, beta, conv)
        return cache[key]

    def search(f) -> float:
        grid = np.linspace(*sigma_range, 12)
        best = grid[int(np.argmin([f(s) for s in grid]))]
        step = grid[1] - grid[0]
        lo, hi = max(sigma_range[0], best - step), min(sigma_range[1], best + step)
        return float(optimize.minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4}).x)

    sz = sxy = 2.0
    for _ in range(rounds):
        sxy = search(lambda s, sz=sz: model(sz, s)[0])
        sz = search(lambda s, sxy=sxy: model(s, sxy)[0])
    _, alpha, beta, conv = model(sz, sxy)
    c = (alpha * conv + beta)[None, None]
    down = F.avg_pool3d(c, (mz, m, m))[0, 0].cpu().numpy()
    rse = float(np.sqrt(np.mean((down - ref) ** 2)))
    rsp = float(np.corrcoef(down.ravel(), ref.ravel())[0, 1])
    up = F.interpolate(torch.as_tensor(ref)[None, None], size=img.shape, mode="trilinear", align_corners=False)
    err = np.abs(up[0, 0].numpy() - c[0, 0].cpu().numpy())
    return VolumeErrorMapResult(sz, sxy, alpha, beta, rse, rsp, err.astype(np.float32), (mz, m, m))
