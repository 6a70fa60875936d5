"""A CARE U-Net rearranged for prediction: the same function with half the memory and fewer operations.

Peak memory of U-Net inference is the first decoder block at full resolution: the upsampled deeper features
(2 C channels after interpolation), the skip (C) and their concatenation (3 C) are alive together, 6 C feature
maps per voxel. :class:`LeanUNet` never builds the concatenation: the block's first convolution is split along its
input channels, ``conv(cat(up, skip)) = conv_up(up) + conv_skip(skip)``, the skip's half runs first and the skip is
freed. With nearest-neighbour upsampling the up half never builds the upsampled map either: a k-tap convolution
on a map upsampled 2x by repetition is, for each of the 2 (per axis) output phases, a (k // 2 + 1)-tap
convolution on the coarse map (the taps that land on the same coarse voxel are summed), computed for all phases
in one convolution at coarse resolution and interleaved. About 3 C maps per voxel instead of 6, and the costliest
full-resolution convolution (2 C inputs, 27 taps in 3D) takes 8 taps per output voxel instead of 27.

Exact up to float rounding (``tests/test_lean.py``); used only for prediction (:class:`fmc_ij.predict.Predictor`).
Exported bundles and training keep :class:`~fmc_ij.nn.unet.UNet` itself.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from fmc_ij.nn.unet import UNet


def _phase_taps(k: int, f: int) -> tuple[list[int], int, torch.Tensor]:
    """For one axis: the start offset (in coarse voxels) of each output phase, the taps per phase, and the
    (phases, taps, k) matrix mapping the fine kernel's taps onto coarse taps."""
    r = k // 2
    if f == 1:
        return [-r], k, torch.eye(k)[None]
    starts = [(p - r) // 2 for p in range(f)]
    taps = r + 1  # the same for both phases of an odd kernel
    m = torch.zeros(f, taps, k)
    for p in range(f):
        for t in range(-r, r + 1):
            m[p, (p + t) // 2 - starts[p], t + r] = 1.0
    return starts, taps, m


class _FoldedNearestConv(nn.Module):
    """``conv(nearest_upsample(h, factors), weight)`` (same padding, no bias) computed on ``h`` directly."""

    def __init__(self, weight: torch.Tensor, factors: list[int]):
        super().__init__()
        nd = weight.dim() - 2
        k = weight.shape[2:]
        self.nd, self.factors, self.out_channels = nd, list(factors), weight.shape[0]
        per_axis = [_phase_taps(int(k[a]), int(factors[a])) for a in range(nd)]
        self.starts = [pa[0] for pa in per_axis]
        self.taps = [pa[1] for pa in per_axis]
        self.pad_lo = [-min(s) for s in self.starts]
        self.pad_hi = [max(s) + t - 1 for s, t in zip(self.starts, self.taps)]
        self.phases = list(itertools.product(*[range(f) for f in factors]))
        kernels = []
        for ph in self.phases:
            w = weight.detach().double()
            for a in range(nd):  # fine taps along axis a -> this phase's coarse taps
                w = torch.movedim(torch.tensordot(w, per_axis[a][2][ph[a]].double(), dims=([2 + a], [1])), -1, 2 + a)
            kernels.append(w)
        self.weight = nn.Parameter(torch.cat(kernels, 0).to(weight.dtype), requires_grad=False)

    def forward(self, h: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
        pad: list[int] = []
        for a in reversed(range(self.nd)):  # F.pad takes the last axis first
            pad += [self.pad_lo[a], self.pad_hi[a]]
        conv = F.conv3d if self.nd == 3 else F.conv2d
        y = conv(F.pad(h, pad), self.weight)
        n = h.shape[2:]
        co = self.out_channels
        fine = [int(n[a]) * self.factors[a] for a in range(self.nd)]
        out = torch.empty((h.shape[0], co, *fine), dtype=y.dtype, device=y.device, memory_format=layout)
        for i, ph in enumerate(self.phases):
            src = [slice(None), slice(i * co, (i + 1) * co)]
            dst = [slice(None), slice(None)]
            for a in range(self.nd):
                lo = self.starts[a][ph[a]] + self.pad_lo[a]
                src.append(slice(lo, lo + int(n[a])))
                dst.append(slice(ph[a], None, self.factors[a]))
            out[tuple(dst)] = y[tuple(src)]
        return out


class LeanUNet(nn.Module):
    """Prediction-only view of a :class:`~fmc_ij.nn.unet.UNet` (in eval mode, BatchNorm folded or not): the same
    outputs, about half the peak memory; see the module docstring. Shares the U-Net's modules."""

    def __init__(self, unet: UNet):
        super().__init__()
        self.unet = unet
        self.bottom = unet.bottom  # the gate's out-of-distribution hook looks for it
        self.planes = unet.planes
        self.nd = unet.ndim
        self.pads: list[int] = []
        self.folded = nn.ModuleList()
        rests = []
        levels = list(reversed(range(len(unet.down))))
        for i, (level, block) in enumerate(zip(levels, unet.up_blocks)):
            conv = block.body[0]
            c_up = conv.in_channels - unet.down[level].body[0].out_channels  # the skip is the level's output
            w = conv.weight.detach()
            # buffers: they follow the module to a device
            self.register_buffer(f"w_up{i}", w[:, :c_up].contiguous(), persistent=False)
            self.register_buffer(f"w_skip{i}", w[:, c_up:].contiguous(), persistent=False)
            self.register_buffer(f"bias{i}", None if conv.bias is None else conv.bias.detach(), persistent=False)
            self.pads.append(int(conv.padding[0]))
            factors = unet.pool_sizes[level]
            foldable = unet.upsample == "nearest" and all(f in (1, 2) for f in factors)
            self.folded.append(_FoldedNearestConv(w[:, :c_up], factors) if foldable else nn.Identity())
            rests.append(block.body[1:])
        self.rests = nn.ModuleList(rests)

    # UNet's forward (a 2D model on volumes runs plane by plane), calling this class's restore_planes
    forward = UNet.forward

    def restore_planes(self, x: torch.Tensor) -> torch.Tensor:
        u = self.unet
        conv = F.conv3d if self.nd == 3 else F.conv2d
        layout = torch.channels_last_3d if self.nd == 3 else torch.channels_last
        if not x.is_contiguous(memory_format=layout):
            layout = torch.contiguous_format
        h, skips = u.encode(x)
        for i, upconv in enumerate(u.ups):
            w_up, w_skip, bias, pad = (
                getattr(self, f"w_up{i}"),
                getattr(self, f"w_skip{i}"),
                getattr(self, f"bias{i}"),
                self.pads[i],
            )
            skip = skips.pop()
            acc = conv(skip, w_skip, bias, padding=pad)
            size = skip.shape[2:]
            del skip
            folded = self.folded[i]
            if isinstance(folded, _FoldedNearestConv) and list(size) == [
                int(h.shape[2 + a]) * folded.factors[a] for a in range(self.nd)
            ]:
                acc += folded(h, layout)
            else:
                up = upconv(h) if u.upsample == "transposed" else F.interpolate(h, size=size, mode=u.interp)
                acc += conv(up, w_up, padding=pad)
                del up
            h = self.rests[i](acc)
            del acc
        return u.finish(u.head(h), x)


def lean(model: nn.Module) -> nn.Module:
    """The prediction-only :class:`LeanUNet` of a CARE U-Net; any other network unchanged."""
    if isinstance(model, UNet) and not model.training:
        return LeanUNet(model)
    return model
