"""Evaluation metrics: SSIM (2D/3D, chunked, torch), the challenge's normalisation and N_SSIM."""

from fmc_ij.metrics.ssim import n_ssim, percentile_normalize, ssim

__all__ = ["n_ssim", "percentile_normalize", "ssim"]
