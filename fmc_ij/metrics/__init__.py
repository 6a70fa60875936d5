"""Evaluation metrics: SSIM / N_SSIM (chunked torch), PSNR / NRMSE / MAE / Pearson, N_IOU, resolution."""

from fmc_ij.metrics.pixel import check_images, mae, nrmse, pearson, pixel_metrics, psnr
from fmc_ij.metrics.resolution import bead_fwhm, frc, frc_resolution, frc_single, radial_power_spectrum
from fmc_ij.metrics.segment import get_segmenter, iou, n_iou, segment_membranes, segment_nuclei
from fmc_ij.metrics.ssim import n_ssim, n_ssim_from, percentile_normalize, percentiles, ssim

__all__ = [
    "bead_fwhm",
    "check_images",
    "frc",
    "frc_resolution",
    "frc_single",
    "get_segmenter",
    "iou",
    "mae",
    "n_iou",
    "n_ssim",
    "n_ssim_from",
    "nrmse",
    "pearson",
    "percentile_normalize",
    "percentiles",
    "pixel_metrics",
    "psnr",
    "radial_power_spectrum",
    "segment_membranes",
    "segment_nuclei",
    "ssim",
]
