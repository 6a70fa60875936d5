"""Training data: registered pairs opened lazily, stored normalisation, deterministic foreground-weighted
patches with anisotropy-aware augmentation, split by specimen, and semi-synthetic isotropic pairs."""

from fmc_ij.data.pairs import PatchBatches, TrainPair, load_pairs, open_pair, split_by_specimen
from fmc_ij.data.patches import Normalizer, augment, foreground_weights, sample_patches, subsample_slices
from fmc_ij.data.semisynthetic import axial_degrade, isotropic_dataset, isotropic_pairs

__all__ = [
    "Normalizer",
    "PatchBatches",
    "TrainPair",
    "augment",
    "axial_degrade",
    "foreground_weights",
    "isotropic_dataset",
    "isotropic_pairs",
    "load_pairs",
    "open_pair",
    "sample_patches",
    "split_by_specimen",
    "subsample_slices",
]
