"""The one percentile normalisation of fmc-ij: training, prediction, bundles and metrics all scale with it.

``(x - lo) / (hi - lo + eps)`` with ``lo``, ``hi`` the image's ``pmin`` / ``pmax`` percentiles is exactly
bioimage.io's ``scale_range`` (``eps = 1e-6``), so a bundle's pre-processing repeats what training did.
The degenerate case ``hi == lo`` (a flat image, or one with almost every voxel at one value) follows one rule:
the scale is 1 (the image is shifted, never blown up by ``1 / eps``). The challenge's metric code leaves such an
image unchanged instead (:func:`percentile_normalize` with ``flat="identity"``), which only the metrics use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fmc_ij.errors import FmcInputError

#: The Fuse My Cells percentiles, the defaults everywhere (training data, models, metrics).
PMIN, PMAX = 2.0, 99.8
#: bioimage.io ``scale_range``'s epsilon: part of the rule, so bundles reproduce it.
EPS = 1e-6
#: Percentiles of larger images come from a regular subsample of this many voxels (same answer to ~1e-4); up to
#: it every voxel counts, exactly as bioimage.io's ``scale_range`` (a 256 x 256 x 256 volume; 0.3 s).
MAX_SAMPLES = 2**24


def subsample_slices(shape: Sequence[int], max_voxels: int) -> tuple[slice, ...]:
    """Strides (the same along every axis) that keep at most ``max_voxels`` of an array of ``shape``."""
    n = int(np.prod(shape))
    step = max(1, int(np.ceil((n / max_voxels) ** (1.0 / len(shape))))) if n > max_voxels else 1
    return tuple(slice(None, None, step) for _ in shape)


def percentile_range(
    x: np.ndarray, pmin: float = PMIN, pmax: float = PMAX, max_samples: int | None = MAX_SAMPLES
) -> tuple[float, float]:
    """``(lo, hi)`` percentiles of ``x`` (numpy or lazy); a strided subsample above ``max_samples`` voxels
    (``None``: every voxel, as the challenge's metric)."""
    if max_samples is not None:
        x = x[subsample_slices(x.shape, max_samples)]
    lo, hi = np.percentile(np.asarray(x).reshape(-1), (pmin, pmax))
    if not np.isfinite([lo, hi]).all():
        raise FmcInputError("image contains NaN or infinite values; cannot normalise it")
    return float(lo), float(hi)


@dataclass(frozen=True)
class Normalizer:
    """``(x - lo) / (hi - lo + eps)`` (bioimage.io's ``scale_range``); stored so prediction repeats training."""

    lo: float
    hi: float
    eps: float = EPS

    @classmethod
    def fit(
        cls, image: np.ndarray, pmin: float = PMIN, pmax: float = PMAX, max_samples: int = MAX_SAMPLES
    ) -> Normalizer:
        """The image's own percentiles (only a subsample is read from a lazy array)."""
        lo, hi = percentile_range(image, pmin, pmax, max_samples)
        return cls(lo, hi)

    @property
    def span(self) -> float:
        """The divisor: ``hi - lo + eps``, or 1 for a flat image (``hi <= lo``)."""
        return self.hi - self.lo + self.eps if self.hi > self.lo else 1.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float32) - np.float32(self.lo)) / np.float32(self.span)).astype(np.float32)

    def invert(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, np.float32) * np.float32(self.span) + np.float32(self.lo)

    def scale(self, d: np.ndarray) -> np.ndarray:
        """A difference or standard deviation in normalised units, back in the image's units."""
        return (np.asarray(d, np.float32) * np.float32(self.span)).astype(np.float32)


@dataclass(frozen=True)
class ChannelNormalizer:
    """One :class:`Normalizer` per channel of a channel-first array (``CYX``, ``CZYX``), as ``scale_range`` over
    the spatial axes does for each channel."""

    parts: tuple[Normalizer, ...]

    @classmethod
    def fit(cls, image: np.ndarray, pmin: float = PMIN, pmax: float = PMAX) -> ChannelNormalizer:
        return cls(tuple(Normalizer.fit(image[c], pmin, pmax) for c in range(image.shape[0])))

    def _each(self, x: np.ndarray, fn: str) -> np.ndarray:
        if len(x) != len(self.parts):
            raise FmcInputError(f"expected {len(self.parts)} channels first, got an array of shape {x.shape}")
        return np.stack([getattr(n, fn)(x[c]) for c, n in enumerate(self.parts)])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._each(x, "__call__")

    def invert(self, y: np.ndarray) -> np.ndarray:
        return self._each(y, "invert")

    def scale(self, d: np.ndarray) -> np.ndarray:
        return self._each(d, "scale")


def percentile_normalize(
    x: np.ndarray,
    pmin: float = PMIN,
    pmax: float = PMAX,
    *,
    clip: bool = False,
    flat: Literal["shift", "identity"] = "shift",
) -> np.ndarray:
    """``x`` scaled by its own percentiles over the whole image (every voxel counted), unclipped by default.

    ``flat="identity"`` returns a flat image (equal percentiles) unchanged, as the Fuse My Cells organisers'
    metric code does; the default shifts it like :class:`Normalizer`.
    """
    x = np.asarray(x)
    lo, hi = percentile_range(x, pmin, pmax, max_samples=None)
    if hi <= lo and flat == "identity":
        return x.astype(np.float32)
    out = Normalizer(lo, hi)(x)
    return np.clip(out, 0.0, 1.0) if clip else out


#: A voxel of a normalised image (2nd percentile at 0, 99.8th at 1) above this level counts as structure.
FG_LEVEL = 0.1


def structure_count(xn: np.ndarray) -> int:
    """Voxels of the normalised ``xn`` above :data:`FG_LEVEL`; divided by the size: the image's structure density,
    which the prediction gate compares with the training volumes' (a model's prior for how much is structure)."""
    return int(np.count_nonzero(np.asarray(xn) > FG_LEVEL))


def light_sums(xn: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The light above the normalised background in the output ``y`` and in the input ``xn`` (sums, so slabs add
    up; their ratio is the share of the input's light a network kept, which the prediction gate compares with the
    training volumes')."""
    return float(np.clip(y, 0.0, None).sum(dtype=np.float64)), float(np.clip(xn, 0.0, None).sum(dtype=np.float64))


def kept_share(out_light: float, in_light: float) -> float:
    """The share of the input's light the output kept, from :func:`light_sums`."""
    return out_light / max(in_light, 1e-12)
