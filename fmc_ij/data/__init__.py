"""Training data: registered pairs opened lazily, stored normalisation, deterministic foreground-weighted
patches with anisotropy-aware augmentation, split by specimen or by region, and semi-synthetic isotropic pairs."""

from fmc_ij.data.pairs import (
    AnyPair,
    PatchBatches,
    StackedPair,
    TrainPair,
    load_pairs,
    open_pair,
    split_by_specimen,
    stack_channels,
)
from fmc_ij.data.patches import (
    ChannelNormalizer,
    Normalizer,
    augment,
    foreground_weights,
    sample_patches,
    subsample_slices,
)
from fmc_ij.data.semisynthetic import axial_degrade, isotropic_dataset, isotropic_pairs
from fmc_ij.data.split import split_by_region, split_pairs

__all__ = [
    "AnyPair",
    "ChannelNormalizer",
    "Normalizer",
    "PatchBatches",
    "StackedPair",
    "TrainPair",
    "augment",
    "axial_degrade",
    "foreground_weights",
    "isotropic_dataset",
    "isotropic_pairs",
    "load_pairs",
    "open_pair",
    "sample_patches",
    "split_by_region",
    "split_by_specimen",
    "split_pairs",
    "stack_channels",
    "subsample_slices",
]
