"""Transfer learning: start a run from an existing model's weights (Wang et al. 2019 trained on beads, then
fine-tuned on cells), optionally with the encoder frozen so only the decoder adapts."""

from __future__ import annotations

import os
import types

import torch

from fmc_ij.errors import FmcInputError
from fmc_ij.model_io import ModelContract, read_one

#: Parameter name prefixes of the contracting path: the CARE U-Net's ``down`` blocks and ``bottom``, the Wang
#: generator's ``down`` blocks and ``bridge``.
ENCODER_PREFIXES = ("down.", "bottom.", "bridge.")


def load_init(path: str | os.PathLike) -> tuple[ModelContract, dict[str, torch.Tensor]]:
    """(contract, weights) of a training run folder, a ``model.pt``, a checkpoint or an fmc-ij bundle.

    Read by :func:`fmc_ij.model_io.read_one`, the reader prediction uses (no code from the file runs); an
    ensemble run is refused: pass one member's folder.
    """
    m = read_one(path, members=False)
    return m.contract, {k: v.detach().clone() for k, v in m.weights[0].items()}


def freeze_encoder(model: torch.nn.Module) -> int:
    """Stop gradients through the encoder; returns how many parameters were frozen (an error if none)."""
    frozen = 0
    for name, prm in model.named_parameters():
        if name.startswith(ENCODER_PREFIXES):
            prm.requires_grad_(False)
            frozen += prm.numel()
    if not frozen:
        raise FmcInputError(f"{type(model).__name__} has no encoder parameters to freeze")
    for name, mod in model.named_modules():
        if f"{name}.".startswith(ENCODER_PREFIXES) and isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            _freeze_batchnorm(mod)
    return frozen


def _frozen_train(self: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
    return torch.nn.Module.train(self, False)


def _freeze_batchnorm(bn: torch.nn.modules.batchnorm._BatchNorm) -> None:
    """Keep a frozen BatchNorm in eval mode for good: it normalises with its stored statistics while the rest of the
    network trains (in train mode it would use each batch's statistics, which prediction never sees), and its
    statistics and counter stay as trained (PreciseBN skips it too)."""
    bn.track_running_stats = False
    bn.train = types.MethodType(_frozen_train, bn)  # type: ignore[method-assign]
    bn.eval()
