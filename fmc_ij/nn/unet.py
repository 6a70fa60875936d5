"""CARE U-Net (Weigert et al. 2018) in 2D and 3D, TorchScript-friendly for deepImageJ (libtorch 2.0 ops only).

Plain conv / pool / transposed conv / cat: every model here passes ``torch.jit.script``. Volumes whose axial
voxel is at least twice the lateral one pool only laterally until the voxels are about isotropic
(``anisotropic_pool``), so a 64x256x256 patch at 1.0/0.4 um keeps its Z context.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def pool_factors(depth: int, ndim: int, spacing: Sequence[float] | None = None) -> list[list[int]]:
    """Pooling factor per level and axis: 2 everywhere, but not along an axis that is already >= 2x coarser.

    With spacing (1.0, 0.4, 0.4) the first level pools (1, 2, 2) (voxels become 1.0/0.8/0.8), the next (2, 2, 2).
    """
    if spacing is None or ndim == 2:
        return [[2] * ndim for _ in range(depth)]
    cur = [float(s) for s in spacing][-ndim:]
    out = []
    for _ in range(depth):
        finest = min(cur)
        f = [1 if c >= 2 * finest else 2 for c in cur]
        out.append(f)
        cur = [c * k for c, k in zip(cur, f)]
    return out


class ConvBlock(nn.Module):
    """``n_conv`` x (conv -> [norm] -> activation), same padding."""

    def __init__(self, c_in: int, c_out: int, ndim: int, kernel: int, n_conv: int, norm: bool, slope: float = 0.0):
        super().__init__()
        conv = nn.Conv3d if ndim == 3 else nn.Conv2d
        bn = nn.BatchNorm3d if ndim == 3 else nn.BatchNorm2d
        layers = []
        for i in range(n_conv):
            # A bias before BatchNorm is cancelled by it (zero gradient, which Adam would turn into noise).
            layers.append(conv(c_in if i == 0 else c_out, c_out, kernel, padding=kernel // 2, bias=not norm))
            if norm:
                layers.append(bn(c_out))
            # In place: one feature map fewer alive per convolution (inference memory, see Predictor.memory_mb)
            layers.append(nn.LeakyReLU(slope, inplace=True) if slope > 0 else nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Weights saved when convolutions before BatchNorm still had a bias: in eval mode that bias only shifts
        # what the running mean subtracts, so fold it in there (exact).
        for i, layer in enumerate(self.body):
            key = f"{prefix}body.{i}.bias"
            if isinstance(layer, nn.modules.conv._ConvNd) and layer.bias is None and key in state_dict:
                rm = f"{prefix}body.{i + 1}.running_mean"
                bias = state_dict.pop(key)
                if rm in state_dict:
                    state_dict[rm] = state_dict[rm] - bias
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class UNet(nn.Module):
    """CARE U-Net.

    Parameters
    ----------
    ndim : {2, 3}
    in_channels, out_channels : int
    depth : int
        Number of poolings (CARE default 2).
    base : int
        Filters at the first level (CARE default 32), doubled per level.
    kernel : int
        Convolution size (CARE: 5 in 2D, 3 in 3D).
    residual : bool
        Predict input + correction (CARE's default when in == out channels).
    norm : bool
        BatchNorm after every convolution (CAREamics' default; CARE's is off).
    pool : list of list of int, optional
        Per-level pooling factors (see :func:`pool_factors`); 2 on every axis by default.
    probabilistic : bool
        Add a Laplace scale head: the output has ``2 * out_channels`` channels (mean, log-scale).
    mean_floor : float, optional
        Clamp the mean channels from below (the background level). Off in training; exported probabilistic
        bundles set it, since a postprocessing clip would also clip the log-scale channels.
    widths : list of int, optional
        Filters per level (``depth + 1`` entries, the last the bottom); default ``base << level``. CAREamics-like
        cheap layouts keep the full-resolution level narrow (e.g. 16, 64, 128).
    upsample : {"transposed", "nearest", "linear"}
        Learned transposed convolutions (CARE), or weight-free interpolation before each decoder block.
    planes : bool
        A 2D network that also takes volumes (N, C, Z, Y, X) and restores each plane on its own: the bundle of a
        2D model trained on volumes takes the whole volume, so its percentile scaling spans the volume as in
        training.
    """

    def __init__(
        self,
        ndim: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 2,
        base: int = 32,
        kernel: int = 3,
        residual: bool = True,
        norm: bool = False,
        pool: list[list[int]] | None = None,
        probabilistic: bool = False,
        n_conv: int = 2,
        mean_floor: float | None = None,
        planes: bool = False,
        widths: list[int] | None = None,
        upsample: str = "transposed",
    ):
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        if upsample not in ("transposed", "nearest", "linear"):
            raise ValueError(f"upsample must be transposed, nearest or linear, got {upsample}")
        w = list(widths) if widths else [base << level for level in range(depth + 1)]
        if len(w) != depth + 1:
            raise ValueError(f"widths needs depth + 1 = {depth + 1} entries, got {len(w)}")
        self.upsample = upsample
        self.interp = "nearest" if upsample == "nearest" else ("trilinear" if ndim == 3 else "bilinear")
        self.ndim = ndim
        self.planes = planes and ndim == 2
        self.residual = residual and in_channels == out_channels
        self.probabilistic = probabilistic
        self.set_mean_floor(mean_floor)
        self.out_channels = out_channels
        pool = pool or [[2] * ndim for _ in range(depth)]
        self.pool_sizes = [list(p) for p in pool]
        conv = nn.Conv3d if ndim == 3 else nn.Conv2d
        up = nn.ConvTranspose3d if ndim == 3 else nn.ConvTranspose2d
        self.down = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        c = in_channels
        for level in range(depth):
            self.down.append(ConvBlock(c, w[level], ndim, kernel, n_conv, norm))
            c = w[level]
        self.bottom = ConvBlock(c, w[depth], ndim, kernel, n_conv, norm)
        c = w[depth]
        for level in reversed(range(depth)):
            if upsample == "transposed":
                self.ups.append(up(c, w[level], self.pool_sizes[level], stride=self.pool_sizes[level]))
                self.up_blocks.append(ConvBlock(2 * w[level], w[level], ndim, kernel, n_conv, norm))
            else:  # interpolation keeps the deeper channels; the block mixes them with the skip
                self.ups.append(nn.Identity())
                self.up_blocks.append(ConvBlock(c + w[level], w[level], ndim, kernel, n_conv, norm))
            c = w[level]
        self.head = conv(c, out_channels * (2 if probabilistic else 1), 1)
        self.kernel, self.n_conv = kernel, n_conv

    def _pool(self, x: torch.Tensor, k: list[int]) -> torch.Tensor:
        if self.ndim == 3:
            return F.max_pool3d(x, k, k)
        return F.max_pool2d(x, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.planes and x.dim() == 5:
            n, z = x.shape[0], x.shape[2]
            out = self.restore_planes(x.transpose(1, 2).reshape(n * z, x.shape[1], x.shape[3], x.shape[4]))
            return out.reshape(n, z, out.shape[1], out.shape[2], out.shape[3]).transpose(1, 2)
        return self.restore_planes(x)

    def restore_planes(self, x: torch.Tensor) -> torch.Tensor:
        """The network on (N, C, *spatial) input of its own dimensionality."""
        h, skips = self.encode(x)
        # Each skip is popped and each upsampled map is a temporary: both are freed once concatenated
        # (inference memory; :class:`fmc_ij.nn.lean.LeanUNet` goes further for prediction).
        for upconv, block in zip(self.ups, self.up_blocks):
            skip = skips.pop()
            if self.upsample == "transposed":
                cat = torch.cat([upconv(h), skip], 1)
            else:
                cat = torch.cat([F.interpolate(h, size=skip.shape[2:], mode=self.interp), skip], 1)
            del skip
            h = block(cat)
            del cat
        return self.finish(self.head(h), x)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The bottom block's output and the skips, finest first."""
        skips: list[torch.Tensor] = []
        h = x
        for i, block in enumerate(self.down):
            h = block(h)
            skips.append(h)
            h = self._pool(h, self.pool_sizes[i])
        return self.bottom(h), skips

    def finish(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The head's output with the residual input, the mean floor and the scale channels."""
        if not self.probabilistic:
            return out + x if self.residual else out
        mean = out[:, : self.out_channels]
        if self.residual:
            mean = mean + x
        if self.clamp_mean:
            mean = mean.clamp_min(self.mean_floor)
        return torch.cat([mean, out[:, self.out_channels :]], 1)

    @torch.jit.unused
    def set_mean_floor(self, value: float | None) -> None:
        """Clamp the mean channels at ``value`` from now on (None: no clamp)."""
        self.clamp_mean = value is not None
        self.mean_floor = float(value or 0.0)

    def size_multiple(self) -> list[int]:
        """Input sizes must be multiples of these (product of the pooling factors per axis)."""
        m = [1] * self.ndim
        for p in self.pool_sizes:
            m = [a * b for a, b in zip(m, p)]
        return m

    def receptive_radius(self) -> list[int]:
        """Per-axis radius (voxels) of the region that influences one output voxel.

        Every convolution at a level of scale ``s`` adds ``(kernel // 2) * s``; a pooling and its transposed
        convolution add ``(p - 1) * s`` each. Tiles with this much context on each side reproduce whole-array
        inference.
        """
        r = [0] * self.ndim
        scale = [1] * self.ndim
        extra = 1 if self.upsample == "linear" else 0  # linear interpolation reaches one coarse voxel further
        for p in self.pool_sizes:
            r = [ri + 2 * self.n_conv * (self.kernel // 2) * si + (2 * (pi - 1) + extra * pi) * si
                 for ri, si, pi in zip(r, scale, p)]  # fmt: skip
            scale = [si * pi for si, pi in zip(scale, p)]
        return [ri + self.n_conv * (self.kernel // 2) * si for ri, si in zip(r, scale)]


class ProjectionUNet(nn.Module):
    """CARE's ProjectionCARE: a 3D input restored as the 2D image of the surface it contains.

    A small 3D U-Net scores every voxel; a softmax along Z turns the scores into per-pixel weights, so the
    projection ``sum_z w(z, y, x) * x(z, y, x)`` follows the (curved) surface instead of taking the brightest
    voxel; a 2D CARE U-Net then restores the projected image. Both are trained together from (volume, 2D
    ground truth) pairs.

    With ``keep_z`` (training and fmc-ij's tiled prediction) the 2D result is returned repeated along Z, so
    input and output shapes match; without it (the exported bundle) the output is (N, C, Y, X).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 2,
        base: int = 32,
        kernel: int = 3,
        proj_depth: int = 2,
        proj_base: int = 8,
        residual: bool = True,
        keep_z: bool = True,
    ):
        super().__init__()
        self.ndim = 3
        self.keep_z = keep_z
        self.mixed_dims = True  # 2D and 3D convolutions: no single channels-last layout for the weights
        self.whole_z = True  # the softmax spans Z: a tile must hold every plane
        self.proj = UNet(3, in_channels, 1, depth=proj_depth, base=proj_base, kernel=3, residual=False,
                         pool=[[1, 2, 2] for _ in range(proj_depth)])  # fmt: skip
        self.restore = UNet(2, in_channels, out_channels, depth=depth, base=base, kernel=kernel, residual=residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.proj(x), dim=2)  # (N, 1, Z, Y, X), sums to 1 along Z
        out = self.restore((w * x).sum(2))
        if self.keep_z:
            return out.unsqueeze(2).expand(-1, -1, x.shape[2], -1, -1)
        return out

    def size_multiple(self) -> list[int]:
        a, b = self.proj.size_multiple(), self.restore.size_multiple()
        return [1] + [max(p, q) for p, q in zip(a[1:], b)]

    def receptive_radius(self) -> list[int]:
        """Z: none to report (the softmax sees every plane; tiles must span Z); Y, X: both networks' radii."""
        a, b = self.proj.receptive_radius(), self.restore.receptive_radius()
        return [0] + [p + q for p, q in zip(a[1:], b)]
