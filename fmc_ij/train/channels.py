"""One model per channel (Wang et al. 2019 trained one network per channel and merged the results): a folder of
``<channel>/`` runs that :func:`fmc_ij.predict.load_predictor` opens as one model routing by channel."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fmc_ij.errors import FmcInputError
from fmc_ij.io import discover
from fmc_ij.train.config import TrainConfig
from fmc_ij.train.loop import TrainResult, train


def dataset_channels(cfg: TrainConfig) -> list[str]:
    """The channels of ``cfg.data`` (Fuse My Cells names or the dataset manifest's), restricted to
    ``data.channels`` when set."""
    d = cfg.data
    if not d.root:
        raise FmcInputError("no training data: set data.root (fmc-ij train --data DIR)")
    found = sorted({p.channel.lower() for p in discover(d.root, low=d.low, high=d.high) if p.channel})
    if d.channels:
        found = [c for c in found if c in {x.lower() for x in d.channels}]
    if not found:
        raise FmcInputError(f"{d.root}: no channel names (image_N_<channel>_angle.tif or a manifest's channel); "
                            "per-channel training needs them")  # fmt: skip
    return found


def train_per_channel(cfg: TrainConfig, out: str | os.PathLike, **kwargs: Any) -> list[TrainResult]:
    """Train ``cfg`` once per channel into ``out/<channel>`` (same settings, that channel's pairs only)."""
    out = Path(out)
    results = []
    for ch in dataset_channels(cfg):
        sub = cfg.model_copy(update={"data": cfg.data.model_copy(update={"channels": [ch]})})
        results += train(sub, out / ch, **kwargs)
    return results
