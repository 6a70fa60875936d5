"""``center_crop`` for tensors, the one function careamics uses."""

from __future__ import annotations

import torch


def center_crop(img: torch.Tensor, output_size: int | list[int] | tuple[int, ...]) -> torch.Tensor:
    size = [output_size, output_size] if isinstance(output_size, int) else list(output_size)
    if len(size) == 1:
        size = size * 2
    h, w = img.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return img[..., top : top + size[0], left : left + size[1]]


def __getattr__(name: str):
    from torchvision._missing import missing

    return missing(__name__, name)
