"""Training data from registered pairs: stored normalisation, foreground-weighted patches, augmentation."""

from fmc_ij.data.patches import Normalizer, augment, foreground_weights, sample_patches

__all__ = ["Normalizer", "augment", "foreground_weights", "sample_patches"]
