"""The Wang et al. 2019 GAN (Nature Methods 16:103): residual U-Net generator and a CNN discriminator, 2D/3D.

Generator: 4 down blocks (3 convs with LeakyReLU and a residual shortcut, then average pooling), a bridge, 4 up
blocks (upsample by transposed conv, concatenate the skip, 3 convs with LeakyReLU), a 1x1 output conv.
Discriminator: a conv layer, 5 conv blocks (conv, LeakyReLU, average pooling), global average pooling, two fully
connected layers and a sigmoid. Only conv / pool / cat / linear ops: scriptable for deepImageJ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """3 x (conv, LeakyReLU) with a 1x1 shortcut: out = convs(x) + proj(x)."""

    def __init__(self, c_in: int, c_out: int, ndim: int, slope: float = 0.1):
        super().__init__()
        conv = nn.Conv3d if ndim == 3 else nn.Conv2d
        self.body = nn.Sequential(
            conv(c_in, c_out, 3, padding=1),
            nn.LeakyReLU(slope),
            conv(c_out, c_out, 3, padding=1),
            nn.LeakyReLU(slope),
            conv(c_out, c_out, 3, padding=1),
            nn.LeakyReLU(slope),
        )
        self.proj = conv(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.proj(x)


class WangGenerator(nn.Module):
    """Residual U-Net generator with ``depth`` (4 in the paper) down and up blocks; a 2D one with ``planes`` also
    takes volumes (N, C, Z, Y, X), restoring each plane (as :class:`fmc_ij.nn.UNet`)."""

    def __init__(self, ndim: int = 3, in_channels: int = 1, out_channels: int = 1, base: int = 16, depth: int = 4,
                 planes: bool = False):  # fmt: skip
        super().__init__()
        self.ndim = ndim
        self.planes = planes and ndim == 2
        conv = nn.Conv3d if ndim == 3 else nn.Conv2d
        up = nn.ConvTranspose3d if ndim == 3 else nn.ConvTranspose2d
        self.down = nn.ModuleList()
        c = in_channels
        for level in range(depth):
            self.down.append(ResBlock(c, base << level, ndim))
            c = base << level
        self.bridge = ResBlock(c, base << depth, ndim)
        c = base << depth
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for level in reversed(range(depth)):
            self.ups.append(up(c, base << level, 2, stride=2))
            self.up_blocks.append(ResBlock(2 * (base << level), base << level, ndim))
            c = base << level
        self.head = conv(c, out_channels, 1)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.planes and x.dim() == 5:
            n, z = x.shape[0], x.shape[2]
            out = self.restore_planes(x.transpose(1, 2).reshape(n * z, x.shape[1], x.shape[3], x.shape[4]))
            return out.reshape(n, z, out.shape[1], out.shape[2], out.shape[3]).transpose(1, 2)
        return self.restore_planes(x)

    def restore_planes(self, x: torch.Tensor) -> torch.Tensor:
        """The network on (N, C, *spatial) input of its own dimensionality."""
        skips: list[torch.Tensor] = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = F.avg_pool3d(h, 2) if self.ndim == 3 else F.avg_pool2d(h, 2)
        h = self.bridge(h)
        j = len(skips) - 1
        for upconv, block in zip(self.ups, self.up_blocks):
            h = block(torch.cat([upconv(h), skips[j]], 1))
            j -= 1
        return self.head(h)

    def size_multiple(self) -> list[int]:
        return [1 << self.depth] * self.ndim

    def receptive_radius(self) -> list[int]:
        """Per-axis radius of influence: 3 convs per block at each scale, plus pooling / upsampling."""
        r = sum(2 * 3 * (1 << level) + 2 * (1 << level) for level in range(self.depth)) + 3 * (1 << self.depth)
        return [r] * self.ndim


class WangDiscriminator(nn.Module):
    """Conv layer, 5 conv blocks (conv, LeakyReLU, 2x average pooling), global pooling, 2 FC layers, sigmoid."""

    def __init__(self, ndim: int = 3, in_channels: int = 1, base: int = 16, blocks: int = 5, hidden: int = 64):
        super().__init__()
        self.ndim = ndim
        conv = nn.Conv3d if ndim == 3 else nn.Conv2d
        self.stem = nn.Sequential(conv(in_channels, base, 3, padding=1), nn.LeakyReLU(0.1))
        self.blocks = nn.ModuleList()
        c = base
        for b in range(blocks):
            c_out = base << min(b + 1, 4)
            self.blocks.append(nn.Sequential(conv(c, c_out, 3, padding=1), nn.LeakyReLU(0.1)))
            c = c_out
        self.fc1 = nn.Linear(c, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
            # Pool only while the patch is large enough: small patches keep their last voxels.
            if min(h.shape[2:]) >= 2:
                h = F.avg_pool3d(h, 2) if self.ndim == 3 else F.avg_pool2d(h, 2)
        h = h.flatten(2).mean(-1)
        return torch.sigmoid(self.fc2(F.leaky_relu(self.fc1(h), 0.1)))
