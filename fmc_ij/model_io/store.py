"""Stored models in and out: one writer, one reader for every form a trained model takes.

Forms read by :func:`read_model`: a run folder (``model.pt``), an ensemble run (``member_*/model.pt``), a
per-channel folder (``<channel>/model.pt``, one model per channel), one ``model.pt`` file, a training
checkpoint (``checkpoints/last.pt``) and a bioimage.io bundle exported by fmc-ij (:mod:`fmc_ij.model_io.bundle`).
Each yields the same :class:`StoredModel`: the contract and the weights. Files are read without running code
from them (``weights_only``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fmc_ij.errors import FmcInputError
from fmc_ij.io import atomic_path
from fmc_ij.model_io.bundle import is_bundle, read_bundle
from fmc_ij.model_io.contract import CONTRACT_FORMAT, ModelContract, TrainingData, contract_from_config
from fmc_ij.model_io.stored import MODEL_FILE, ChannelModels, StoredModel, safe_load


def write_model(
    path: str | os.PathLike,
    model: torch.nn.Module,
    contract: ModelContract,
    *,
    training: dict[str, Any] | None = None,
    **info: Any,
) -> Path:
    """Write ``model.pt``: the weights, the contract and the training config (atomically)."""
    path = Path(path)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state = {"format": CONTRACT_FORMAT, "contract": contract.dump(), "config": training or {}, "state_dict": sd,
             **info}  # fmt: skip
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
    return path


def contract_of(saved: dict[str, Any], source: str) -> ModelContract:
    """The contract stored in a model file or checkpoint (files from before contracts: from their config)."""
    if "contract" in saved:
        return ModelContract.parse(saved["contract"], source)
    if not isinstance(saved.get("config"), dict):
        raise FmcInputError(f"{source}: not an fmc-ij model file (no contract or config inside)")
    data = TrainingData(**saved["data"]) if isinstance(saved.get("data"), dict) else None
    try:
        return contract_from_config(saved["config"], data=data, step=saved.get("step"),
                                    metrics=saved.get("metrics") or {})  # fmt: skip
    except FmcInputError as err:
        raise FmcInputError(f"{source}: {err}") from None


def _read_file(path: Path) -> StoredModel:
    try:
        saved = safe_load(path)
    except Exception as err:  # a truncated, foreign or code-carrying file
        raise FmcInputError(f"{path}: not an fmc-ij model file, or damaged ({type(err).__name__})") from None
    if not isinstance(saved, dict) or not ({"state_dict", "model"} & set(saved)):
        raise FmcInputError(f"{path}: not an fmc-ij model file or checkpoint")
    contract = contract_of(saved, str(path))
    is_ckpt = "state_dict" not in saved
    weights = saved["model"] if is_ckpt else saved["state_dict"]
    extra = {k: saved[k] for k in ("step", "metrics") if k in saved}
    return StoredModel(contract, [weights], path, "checkpoint" if is_ckpt else "model-file", saved.get("config"), extra)


def _per_channel(path: Path) -> ChannelModels | None:
    """A folder of ``<channel>/model.pt`` runs, each trained on one channel; None when ``path`` is not one."""
    runs = sorted(d for d in path.iterdir() if (d / MODEL_FILE).is_file()) if path.is_dir() else []
    if not runs or (path / MODEL_FILE).is_file() or any(d.name.startswith("member_") for d in runs):
        return None
    out = {}
    for d in runs:
        m = read_model(d)
        assert isinstance(m, StoredModel)
        if len(m.contract.data.channels) != 1:
            return None
        out[m.contract.data.channels[0].lower()] = m
    return ChannelModels(out, path)


def read_model(path: str | os.PathLike) -> StoredModel | ChannelModels:
    """Read any stored fmc-ij model (see the module docstring); bundles from other tools are refused here
    (:func:`fmc_ij.model_io.bundle.is_fmc_bundle` tells them apart)."""
    path = Path(path)
    if not path.exists():
        raise FmcInputError(f"{path}: no such model; pass a training run folder (fmc-ij train --out) or a bundle")
    if is_bundle(path):
        return read_bundle(path)
    if path.is_file():
        return _read_file(path)
    channels = _per_channel(path)
    if channels is not None:
        return channels
    if (path / MODEL_FILE).is_file():
        m = _read_file(path / MODEL_FILE)
        m.source, m.kind = path, "run"
        return m
    members = sorted(path.glob(f"member_*/{MODEL_FILE}"))
    if not members:
        raise FmcInputError(f"{path}: no {MODEL_FILE} (nor member_*/{MODEL_FILE}); pass an fmc-ij training run folder")
    parts = [_read_file(f) for f in members]
    first = parts[0]
    if any(p.contract.network != first.contract.network for p in parts[1:]):
        raise FmcInputError(f"{path}: ensemble members differ in architecture; train them with one config")
    return StoredModel(first.contract, [p.weights[0] for p in parts], path, "ensemble", first.training, first.extra)


def read_one(path: str | os.PathLike, *, members: bool = True) -> StoredModel:
    """:func:`read_model` for steps that need one model (export, fine-tuning, one volume on a cluster);
    ``members=False`` also refuses an ensemble."""
    m = read_model(path)
    if isinstance(m, ChannelModels):
        first = next(iter(m.by_channel))
        raise FmcInputError(f"{path} holds one model per channel ({', '.join(m.by_channel)}); pass one, e.g. "
                            f"{Path(path) / first}")  # fmt: skip
    if not members and m.members > 1:
        raise FmcInputError(f"{path} is an ensemble of {m.members} models; pass one member (e.g. {path}/member_0)")
    return m
