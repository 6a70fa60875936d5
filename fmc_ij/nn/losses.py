"""Training losses: MSE, MAE, differentiable SSIM (2D/3D), Laplace NLL, N_SSIM-aware, the Wang et al. GAN losses.

The SSIM here is the same Gaussian-window SSIM as :func:`fmc_ij.metrics.ssim` (sigma 1.5, valid filtering, mean over
the cropped map), written with autograd-friendly ops so ``1 - ssim`` can be minimised directly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fmc_ij.metrics.ssim import K1, K2, gaussian_weights


def _gauss(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian over the spatial axes of (N, C, *spatial) via grouped convolutions.

    Axes shorter than the window are left unfiltered (a thin patch is then compared plane by plane).
    """
    nd = x.dim() - 2
    conv = F.conv3d if nd == 3 else F.conv2d
    c = x.shape[1]
    for ax in range(nd):
        if x.shape[2 + ax] < w.numel():
            continue
        shape = [1, 1] + [1] * nd
        shape[2 + ax] = w.numel()
        x = conv(x, w.reshape(shape).expand(c, *shape[1:]), groups=c)
    return x


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, sigma: float = 1.5) -> torch.Tensor:
    """Per-sample mean SSIM of (N, C, *spatial) tensors, differentiable; shape (N,).

    Always float32, also inside bf16 autocast: the variances E[x^2] - E[x]^2 cancel, and with bf16's 8-bit mantissa
    that difference is noise far above ``c2`` (0.0009) for intensities near 1: SSIM values of 2 or NaN gradients.
    """
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)  # float64 stays
    with torch.autocast(pred.device.type, enabled=False):
        return _ssim(pred.to(dtype), target.to(dtype), data_range, sigma)


def _ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float, sigma: float) -> torch.Tensor:
    w = torch.tensor(gaussian_weights(sigma), dtype=pred.dtype, device=pred.device)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mx, my = _gauss(pred, w), _gauss(target, w)
    vx = _gauss(pred * pred, w) - mx * mx
    vy = _gauss(target * target, w) - my * my
    cxy = _gauss(pred * target, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """1 - SSIM, averaged over the batch."""
    return 1.0 - ssim(pred, target, data_range).mean()


def laplace_nll(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of a Laplace distribution; ``out`` holds (mean, log-scale) along channels."""
    c = out.shape[1] // 2
    mean, log_b = out[:, :c], out[:, c:].clamp(-10.0, 10.0)
    return (log_b + math.log(2.0) + (target - mean).abs() * torch.exp(-log_b)).mean()


def n_ssim_loss(pred: torch.Tensor, target: torch.Tensor, inp: torch.Tensor, floor: float = 0.05) -> torch.Tensor:
    """-N_SSIM per sample, averaged: rewards beating the input where the input is poor.

    The denominator 1 - SSIM(input, target) is detached and floored at ``floor`` so patches where the input is
    already near-perfect cannot dominate (the same outliers that dominate the challenge mean).
    """
    s_in = ssim(inp, target).detach()
    gain = (ssim(pred, target) - s_in) / (1.0 - s_in).clamp_min(floor)
    return -gain.mean()


def wang_generator_loss(
    d_fake: torch.Tensor,
    pred: torch.Tensor,
    target: torch.Tensor,
    mse_weight: float = 1.0,
    ssim_weight: float = 0.1,
    eps: float = 1e-7,
) -> torch.Tensor:
    """L(G) = -log D(G(x)) + lambda MSE(G(x), y) - nu log((1 + SSIM(G(x), y)) / 2).

    With images normalised to ~[0, 1] the defaults put each regulariser at a few percent of L(G).
    """
    adv = -torch.log(d_fake.clamp(eps, 1.0)).mean()
    s = ssim(pred, target).clamp(-1 + eps, 1.0)
    return adv + mse_weight * F.mse_loss(pred, target) - ssim_weight * torch.log((1 + s) / 2).mean()


def wang_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """L(D) = -log D(y) - log(1 - D(G(x)))."""
    return -(torch.log(d_real.clamp(eps, 1.0)) + torch.log((1 - d_fake).clamp(eps, 1.0))).mean()


LOSSES = {"mse": F.mse_loss, "mae": F.l1_loss, "ssim": ssim_loss, "laplace": laplace_nll}
