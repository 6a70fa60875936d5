"""Checkpoints with the full training state, written atomically, and the trained model file.

A checkpoint holds the model, optimizer, scheduler (and discriminator with its optimizer), the step, the
early-stopping state, the log rows so far, elapsed time and every RNG state; :func:`load_checkpoint` restores
all of it, so a resumed run continues exactly where the saved one was.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmc_ij.errors import FmcInputError
from fmc_ij.io import atomic_path

LAST, BEST, MODEL = "last.pt", "best.pt", "model.pt"


def rng_state() -> dict[str, Any]:
    # numpy's legacy global generator: third-party code may draw from it.
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}  # noqa: NPY002
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """``torch.save`` through a temporary file: a crash mid-write leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
    return path


def safe_load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` that runs no code from the file (``weights_only``): tensors, plain Python values and the numpy
    arrays of the saved RNG states only. Raises the loader's error for anything else."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    allowed = [np.dtype, np.ndarray, _reconstruct, type(np.dtype(np.uint32)), type(np.dtype(np.float64))]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise FmcInputError(f"{path}: no checkpoint to resume from; start the run again with --overwrite")
    try:
        return safe_load(path, map_location)
    except Exception as err:  # a truncated, foreign or code-carrying file
        raise FmcInputError(f"{path}: not a readable fmc-ij checkpoint ({type(err).__name__})") from None


def save_model(path: Path, model: torch.nn.Module, config: dict[str, Any], **info: Any) -> Path:
    """The trained network alone (weights + the run's config), for prediction and export."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(path, {"format": "fmc-ij-model/1", "config": config, "state_dict": sd, **info})
