"""Transfer learning: start a run from an existing model's weights (Wang et al. 2019 trained on beads, then
fine-tuned on cells), optionally with the encoder frozen so only the decoder adapts."""

from __future__ import annotations

import os

import torch

from fmc_ij.errors import FmcInputError
from fmc_ij.nn.factory import ModelConfig

#: Parameter name prefixes of the contracting path: the CARE U-Net's ``down`` blocks and ``bottom``, the Wang
#: generator's ``down`` blocks and ``bridge``.
ENCODER_PREFIXES = ("down.", "bottom.", "bridge.")


def load_init(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(architecture, weights) of a training run folder, a ``model.pt``, a checkpoint or an fmc-ij bundle.

    Files are read the way prediction reads them (no code from the file runs); an ensemble run is refused:
    pass one member's folder.
    """
    from fmc_ij.predict.model import load_one  # the one reader of every model format

    p = load_one(path, "cpu")
    if len(p.nets) > 1:
        raise FmcInputError(f"{path} is an ensemble of {len(p.nets)} models; pass one member (e.g. {path}/member_0)")
    return p.model, {k: v.detach().clone() for k, v in p.nets[0].state_dict().items()}


def freeze_encoder(model: torch.nn.Module) -> int:
    """Stop gradients through the encoder; returns how many parameters were frozen (an error if none)."""
    frozen = 0
    for name, prm in model.named_parameters():
        if name.startswith(ENCODER_PREFIXES):
            prm.requires_grad_(False)
            frozen += prm.numel()
    if not frozen:
        raise FmcInputError(f"{type(model).__name__} has no encoder parameters to freeze")
    for name, mod in model.named_modules():  # BatchNorm statistics (and their counter) stay as trained
        if f"{name}.".startswith(ENCODER_PREFIXES) and isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.track_running_stats = False
    return frozen
