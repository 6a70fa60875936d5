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
from fmc_ij.model_io import MODEL_FILE, TrainingData, contract_from_config, safe_load, write_model

LAST, BEST, MODEL = "last.pt", "best.pt", MODEL_FILE


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


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise FmcInputError(f"{path}: no checkpoint to resume from; start the run again with --overwrite")
    try:
        return safe_load(path, map_location)
    except Exception as err:  # a truncated, foreign or code-carrying file
        raise FmcInputError(f"{path}: not a readable fmc-ij checkpoint ({type(err).__name__})") from None


def save_model(path: Path, model: torch.nn.Module, config: dict[str, Any], *, data: TrainingData | None = None,
               **info: Any) -> Path:  # fmt: skip
    """The trained network alone, with its contract (from the training ``config`` and ``data``) and the config
    itself, for prediction, fine-tuning and export (:func:`fmc_ij.model_io.write_model`)."""
    contract = contract_from_config(config, data=data, step=info.get("step"), metrics=info.get("metrics") or {})
    return write_model(path, model, contract, training=config, **info)
