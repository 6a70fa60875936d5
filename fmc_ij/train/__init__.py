"""Training: typed configs with presets (care2d, care3d, gan2d, gan3d), exact resume, DDP, ensembles.

>>> from fmc_ij.train import TrainConfig, train
>>> cfg = TrainConfig.from_preset("care3d", data={"root": "registered"})   # doctest: +SKIP
>>> train(cfg, "runs/care3d")                                          # doctest: +SKIP
"""

from fmc_ij.train.channels import dataset_channels, train_per_channel
from fmc_ij.train.config import PRESETS, DataConfig, GanConfig, OptimConfig, TrainConfig
from fmc_ij.train.loop import TrainResult, make_loss, recalibrate, train, validate

__all__ = [
    "PRESETS",
    "DataConfig",
    "GanConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainResult",
    "dataset_channels",
    "make_loss",
    "recalibrate",
    "train",
    "train_per_channel",
    "validate",
]
