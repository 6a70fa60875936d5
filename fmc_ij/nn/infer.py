"""Whole-array inference with the padding a U-Net needs (sizes a multiple of its pooling)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from fmc_ij.errors import FmcInputError


def size_multiple(model: torch.nn.Module, ndim: int) -> list[int]:
    """Per-axis size multiple the network needs (1 when it has no pooling)."""
    fn = getattr(model, "size_multiple", None)
    return list(fn()) if callable(fn) else [1] * ndim


def forward_padded(
    model: torch.nn.Module, x: torch.Tensor, multiple: Sequence[int], halo: Sequence[int] | None = None
) -> torch.Tensor:
    """``model(x)`` for (N, C, *spatial) ``x`` of any size: reflect-pad, run, crop back.

    ``halo`` voxels of mirrored context on every side keep the network's own zero-padding artefacts (a dark
    rim one voxel wide) out of the result; further padding reaches a size ``multiple``, split between both
    sides so the border the network sees is symmetric.
    """
    spatial = x.shape[2:]
    halo = list(halo) if halo is not None else [0] * len(spatial)
    pads: list[int] = []
    for n, m, h in zip(reversed(spatial), reversed(list(multiple)), reversed(halo)):
        extra = (-(n + 2 * h)) % m
        pads += [h + extra // 2, h + extra - extra // 2]
    if any(pads):
        # reflect needs pad < size; replicate covers tiny axes.
        rev = list(reversed(spatial))
        mode = "reflect" if all(max(pads[2 * i : 2 * i + 2]) < n for i, n in enumerate(rev)) else "replicate"
        x = F.pad(x, pads, mode=mode)
    y = model(x)
    if any(pads):
        sl = [slice(None), slice(None)]
        for i, n in enumerate(spatial):
            lo = pads[2 * (len(spatial) - 1 - i)]
            sl.append(slice(lo, lo + n))
        y = y[tuple(sl)]
    return y


def bottleneck(model: torch.nn.Module) -> torch.nn.Module | None:
    """The network's deepest block (CARE U-Net ``bottom``, Wang ``bridge``, ProjectionCARE's 2D ``bottom``): its
    activations summarise what the network sees, for out-of-distribution scores. None for other networks."""
    for path in ("bottom", "bridge", "restore.bottom"):
        mod: torch.nn.Module | None = model
        for part in path.split("."):
            mod = getattr(mod, part, None)
        if isinstance(mod, torch.nn.Module):
            return mod
    return None


def channel_moments(activations: torch.Tensor) -> torch.Tensor:
    """(2C + 1,): per channel the sum and the sum of squares of (C, *spatial) activations, then their count.
    Moments add up over tiles, so an image's summary does not depend on how it was tiled."""
    flat = activations.double().flatten(1)
    return torch.cat([flat.sum(1), flat.pow(2).sum(1), flat.new_tensor([flat.shape[1]])])


def moments_summary(moments: Any) -> Any:
    """(2C,): per channel the mean and standard deviation from summed :func:`channel_moments`."""
    import numpy as np

    m = np.asarray(moments, np.float64)
    c = (m.size - 1) // 2
    n = max(m[-1], 1.0)
    mean = m[:c] / n
    return np.concatenate([mean, np.sqrt(np.maximum(m[c : 2 * c] / n - mean**2, 0.0))])


def ood_score(summary: Any, mean: Any, std: Any) -> float | None:
    """How far an image's activation summary (:func:`moments_summary`) lies from the in-domain ones (their
    ``mean`` and ``std`` per entry): the mean absolute z-score (None when either is unknown)."""
    import numpy as np

    if summary is None or mean is None or len(mean) == 0:
        return None
    mu, sd = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    f = np.asarray(summary, np.float64).ravel()
    if f.size != mu.size:
        return None
    return float(np.mean(np.abs(f - mu) / sd))


def receptive_radius(model: torch.nn.Module, ndim: int) -> list[int]:
    """The network's per-axis receptive radius (0 for a model that does not report one)."""
    fn = getattr(model, "receptive_radius", None)
    return list(fn()) if callable(fn) else [0] * ndim


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (this process's CUDA GPU when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise FmcInputError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FmcInputError("device cuda requested but no CUDA GPU is visible; use --device cpu")
    return dev


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 convolutions in hardware: CUDA GPUs, and CPUs with AVX512-BF16 or AMX
    (oneDNN's test). Elsewhere (AVX2-only CPUs) bf16 is emulated and slower than float32."""
    if device.type == "cuda":
        return True
    try:
        return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def trains_in_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether training on ``device`` at ``precision`` (``auto``, ``fp32`` or ``bf16``) runs under bf16 autocast."""
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """The training precision: ``bf16`` autocast (convolutions in bf16, weights, optimiser and losses in float32),
    ``fp32``, or ``auto``: bf16 where the hardware has it (:func:`native_bf16`). On this project's 2-core AVX512-BF16
    CPU a care3d step takes 0.69 s in bf16 against 1.3 s in float32, which at an equal time budget is twice the
    steps (see ``TrainConfig.optim.precision``)."""
    if not trains_in_bf16(device, precision):
        return contextlib.nullcontext()
    return torch.autocast("cuda" if device.type == "cuda" else "cpu", dtype=torch.bfloat16)


@contextlib.contextmanager
def inference_precision(device: torch.device):
    """Float32 inference; on GPUs with TF32 matmuls and convolutions (fp32 range, 10-bit mantissa products with fp32
    accumulation). bf16 autocast quantised outputs to about 2k levels (about -0.004 N_SSIM), so it is training-only."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


#: glibc's mallopt parameter and the size from which allocations are memory-mapped (returned to the system when
#: freed) instead of carved from the heap.
_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES = -3, 1 << 20


@functools.cache
def return_freed_memory() -> bool:
    """Have glibc memory-map every allocation from 1 MiB on, for the rest of the process (True where it did).

    glibc raises its mmap threshold to the size of each mapped block that is freed (up to 32 MiB), so after the
    first tile the next tiles' feature maps come from the heap, which fragments and never shrinks: prediction of
    64x256x256 with the 32-filter U-Net peaked at 1034 MiB, 779 MiB with the threshold fixed, at the same speed
    (`benchmarks/bench_predict.py`). Setting it also turns the dynamic adjustment off. No-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):  # musl and other C libraries
        return False


def channels_last(ndim: int) -> torch.memory_format:
    """The channels-last layout for 2D or 3D convolutions (faster with oneDNN on CPUs and cuDNN on GPUs)."""
    return torch.channels_last_3d if ndim == 3 else torch.channels_last


def to_channels_last(model: torch.nn.Module, ndim: int) -> torch.nn.Module:
    """``model`` with channels-last weights, unless it mixes 2D and 3D convolutions (ProjectionCARE), whose
    weights cannot share one layout."""
    if getattr(model, "mixed_dims", False):
        return model
    return model.to(memory_format=channels_last(ndim))


def fuse_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of an eval-mode ``model`` with every BatchNorm that follows a convolution folded into it (exact up to
    float rounding; BatchNorm then costs nothing at inference). The original keeps its layers (for export)."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    bn_types, conv_types = torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.conv._ConvNd
    fused = copy.deepcopy(model).eval()
    for seq in [m for m in fused.modules() if isinstance(m, torch.nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, conv_types) and isinstance(bn, bn_types):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(conv, bn), torch.nn.Identity()
    return fused


def _float32_forward(conv: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(x.device.type, enabled=False):
        return type(conv).forward(conv, x.float())


def guard_bf16_conv3d(model: torch.nn.Module, shape: Sequence[int], device: torch.device, precision: str) -> int:
    """Keep ``model``'s bf16 training clear of a oneDNN bug; returns how many convolutions now train in float32.

    On the CPU, the bf16 weight gradient of a 3D convolution whose input is deeper than one plane but shallower than
    its kernel (depth 2 for a 3x3x3 kernel, 2-4 for 5x5x5) reads memory it never wrote: relative errors of 1 to
    1e36, or NaN, that change from run to run, in either memory layout, and for 7x7x7 kernels heap corruption
    (PyTorch 2.13, oneDNN, AVX512-BF16; float32 is exact). A U-Net trained on 16-plane patches with 3 poolings
    reaches depth 2 (the ``gan3d`` preset), and one such gradient, through gradient clipping, turned every weight
    NaN within a few steps. Those convolutions, found by one forward pass of a training input of ``shape``
    (channels first, no batch axis), compute in float32; they sit where the feature maps are smallest, so the cost
    is small. Their parameters and state-dict keys are unchanged.
    """
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size[0] > 2]
    if device.type != "cpu" or not convs or not trains_in_bf16(device, precision):
        return 0
    depths: dict[torch.nn.Module, int] = {}

    def record(m: torch.nn.Module, args: tuple[Any, ...]) -> None:
        depths.setdefault(m, args[0].shape[2])

    hooks = [c.register_forward_pre_hook(record) for c in convs]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    bad = [c for c in convs if 1 < depths.get(c, 0) < c.kernel_size[0]]
    for c in bad:
        c.forward = functools.partial(_float32_forward, c)  # this instance only: the class stays scriptable
    return len(bad)
