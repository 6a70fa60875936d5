"""A stored model in memory: its contract, its weights, and where it came from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from fmc_ij.errors import FmcInputError
from fmc_ij.model_io.contract import ModelContract
from fmc_ij.nn.factory import build_model

#: The trained model of a run folder.
MODEL_FILE = "model.pt"
Kind = Literal["run", "ensemble", "model-file", "checkpoint", "bundle"]


@dataclass
class StoredModel:
    """A model as stored: its contract, one state dict per ensemble member, and where it was read from."""

    contract: ModelContract
    weights: list[dict[str, torch.Tensor]]
    source: Path
    kind: Kind = "run"
    #: The training config the model was made with (the run's ``config.yaml``), when stored.
    training: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def members(self) -> int:
        return len(self.weights)

    def networks(self, device: str | torch.device = "cpu") -> list[torch.nn.Module]:
        """The networks with their weights, in eval mode on ``device``."""
        nets = []
        for sd in self.weights:
            net = build_model(self.contract.network)
            try:
                net.load_state_dict(sd)
            except RuntimeError as err:
                raise FmcInputError(f"{self.source}: its weights do not fit its network ({str(err).splitlines()[0]})"
                                    ) from None  # fmt: skip
            nets.append(net.to(device).eval())
        return nets


@dataclass
class ChannelModels:
    """One :class:`StoredModel` per channel (``fmc-ij train --per-channel``), keyed by lower-case channel name."""

    by_channel: dict[str, StoredModel]
    source: Path


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` that runs no code from the file (``weights_only``): tensors, plain Python values and the numpy
    arrays of saved RNG states only. Raises the loader's error for anything else."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    allowed = [np.dtype, np.ndarray, _reconstruct, type(np.dtype(np.uint32)), type(np.dtype(np.float64))]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location=map_location, weights_only=True)
