"""Networks from a typed config, so a saved run (``config.yaml``) rebuilds exactly the trained model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from fmc_ij.errors import FmcInputError
from fmc_ij.nn.gan import WangDiscriminator, WangGenerator
from fmc_ij.nn.unet import ProjectionUNet, UNet, pool_factors


class ModelConfig(BaseModel):
    """The generator / restoration network.

    ``arch="care"`` is the CARE U-Net (:class:`fmc_ij.nn.UNet`), ``"wang"`` the Wang et al. residual U-Net
    generator (:class:`fmc_ij.nn.WangGenerator`), ``"projection"`` CARE's ProjectionCARE (3D in, the 2D
    surface image out: :class:`fmc_ij.nn.unet.ProjectionUNet`; ``depth``, ``base`` and ``kernel`` are its 2D
    restoration network's, ``proj_depth`` and ``proj_base`` its 3D projection network's). ``pool`` is filled
    in from the data's voxel size when ``anisotropic`` (axial voxel >= 2x lateral: pool laterally first).
    """

    model_config = ConfigDict(extra="forbid")

    arch: Literal["care", "wang", "projection"] = "care"
    ndim: Literal[2, 3] = 3
    in_channels: int = Field(1, ge=1)
    out_channels: int = Field(1, ge=1)
    depth: int = Field(2, ge=1, le=6)
    base: int = Field(32, ge=1)
    kernel: int = Field(3, ge=1)
    residual: bool = True
    norm: bool = False
    probabilistic: bool = False
    anisotropic: bool = True
    pool: list[list[int]] | None = None
    #: Predictions are clipped below this, in target-normalised units (0 = the target's 2nd percentile, about
    #: the background). The challenge metric re-normalises each prediction by its own percentiles, so a few
    #: per cent of slightly negative voxels would lift the whole background and cost more SSIM than all the
    #: restoration gains. ``None`` keeps the raw output.
    output_floor: float | None = 0.0
    proj_depth: int = Field(2, ge=1, le=4)
    proj_base: int = Field(8, ge=1)
    #: CARE U-Net filters per level (depth + 1 entries, the bottom last); default ``base << level``.
    widths: list[int] | None = None
    #: CARE U-Net decoder: learned transposed convolutions, or nearest / linear interpolation.
    upsample: Literal["transposed", "nearest", "linear"] = "transposed"

    def resolve_pool(self, spacing: list[float] | tuple[float, ...] | None) -> ModelConfig:
        """A copy whose ``pool`` is fixed from the voxel size (CARE U-Net only)."""
        if self.arch != "care" or self.pool is not None:
            return self
        sp = spacing if (self.anisotropic and self.ndim == 3) else None
        return self.model_copy(update={"pool": pool_factors(self.depth, self.ndim, sp)})


class DiscriminatorConfig(BaseModel):
    """The Wang et al. discriminator (conv, 5 conv blocks with pooling, 2 FC layers, sigmoid)."""

    model_config = ConfigDict(extra="forbid")

    base: int = Field(16, ge=1)
    blocks: int = Field(5, ge=1)
    hidden: int = Field(64, ge=1)


#: The one map between config names and network classes; a class's module file is what bioimage.io bundles carry
#: as their architecture (each imports only torch).
ARCHITECTURES: dict[str, type[nn.Module]] = {"care": UNet, "wang": WangGenerator, "projection": ProjectionUNet}


def arch_name(class_name: str) -> str | None:
    """The config name (``care``, ``wang``, ``projection``) of a network class name, None for other classes."""
    return next((k for k, c in ARCHITECTURES.items() if c.__name__ == class_name), None)


def build_model(cfg: ModelConfig) -> nn.Module:
    """The network described by ``cfg`` (freshly initialised)."""
    if cfg.arch == "wang":
        return WangGenerator(cfg.ndim, cfg.in_channels, cfg.out_channels, base=cfg.base, depth=cfg.depth)
    if cfg.arch == "projection":
        if cfg.ndim != 3 or cfg.probabilistic:
            raise FmcInputError("a projection model takes volumes (model.ndim 3) and is not probabilistic")
        return ProjectionUNet(cfg.in_channels, cfg.out_channels, depth=cfg.depth, base=cfg.base, kernel=cfg.kernel,
                              proj_depth=cfg.proj_depth, proj_base=cfg.proj_base, residual=cfg.residual)  # fmt: skip
    return UNet(
        cfg.ndim, cfg.in_channels, cfg.out_channels, depth=cfg.depth, base=cfg.base, kernel=cfg.kernel,
        residual=cfg.residual, norm=cfg.norm, pool=cfg.pool, probabilistic=cfg.probabilistic, widths=cfg.widths,
        upsample=cfg.upsample,
    )  # fmt: skip


def build_discriminator(cfg: DiscriminatorConfig, ndim: int, in_channels: int = 1) -> nn.Module:
    return WangDiscriminator(ndim, in_channels, base=cfg.base, blocks=cfg.blocks, hidden=cfg.hidden)
