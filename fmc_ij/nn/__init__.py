"""Networks (CARE U-Net, Wang et al. GAN; 2D/3D, TorchScript-ready) and training losses."""

from fmc_ij.nn.gan import WangDiscriminator, WangGenerator
from fmc_ij.nn.losses import (
    laplace_nll,
    n_ssim_loss,
    ssim,
    ssim_loss,
    wang_discriminator_loss,
    wang_generator_loss,
)
from fmc_ij.nn.unet import UNet, pool_factors

__all__ = [
    "UNet",
    "WangDiscriminator",
    "WangGenerator",
    "laplace_nll",
    "n_ssim_loss",
    "pool_factors",
    "ssim",
    "ssim_loss",
    "wang_discriminator_loss",
    "wang_generator_loss",
]
