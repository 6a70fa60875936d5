"""Training patches from registered pairs: stored normalisation, foreground-weighted sampling, augmentation.

- Each image is scaled by its own percentiles (:class:`fmc_ij.norm.Normalizer`, 2 / 99.8 as the challenge), the
  rule a model's contract records and prediction and bundles repeat.
- :func:`sample_patches` draws patch corners with probability weighted towards foreground (a smoothed target
  above its Otsu level) and rejects patches whose target holds almost no foreground; the draw is reproducible
  from a seed.
- :func:`augment` applies flips and 90-degree rotations that respect anisotropy: volumes are only rotated in
  the lateral (Y, X) plane, and only when Y and X share a voxel size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from fmc_ij.errors import FmcInputError
from fmc_ij.norm import ChannelNormalizer, Normalizer, subsample_slices  # noqa: F401 (re-exported)


def foreground_weights(target: np.ndarray, smooth: float = 2.0) -> np.ndarray:
    """Boolean foreground: the smoothed target above its Otsu threshold."""
    from skimage.filters import threshold_otsu

    sm = ndimage.gaussian_filter(np.asarray(target, np.float32), smooth)
    if float(sm.max()) == float(sm.min()):
        return np.zeros(sm.shape, bool)
    return sm > threshold_otsu(sm)


def sample_patches(
    target: np.ndarray,
    patch: Sequence[int],
    n: int,
    *,
    rng: np.random.Generator,
    foreground: np.ndarray | None = None,
    fg_fraction: float = 0.8,
    min_fg: float = 0.02,
    max_tries: int = 50,
    stride: int = 1,
) -> np.ndarray:
    """Corners (n, ndim) of ``n`` patches of size ``patch`` inside ``target``.

    A fraction ``fg_fraction`` of the patches is centred on a random foreground voxel; any patch whose
    foreground share is below ``min_fg`` is redrawn (up to ``max_tries`` times), so background-only patches
    are rare but not impossible when a volume has little foreground. ``foreground`` may be given at a
    coarser ``stride`` (``target[::stride, ...]``), so large lazy volumes need only a small mask in memory.
    """
    shape = np.asarray(target.shape)
    size = np.asarray(patch)
    if len(size) != len(shape) or (size > shape).any():
        raise FmcInputError(f"patch {tuple(patch)} does not fit in an image of shape {tuple(target.shape)}")
    fg = foreground_weights(target) if foreground is None else foreground
    fg_idx = np.flatnonzero(fg)
    hi = shape - size
    corners = np.empty((n, len(shape)), int)
    for i in range(n):
        for _ in range(max_tries):
            if len(fg_idx) and rng.random() < fg_fraction:
                centre = np.array(np.unravel_index(fg_idx[rng.integers(len(fg_idx))], fg.shape)) * stride
                c = np.clip(centre + stride // 2 - size // 2, 0, hi)
            else:
                c = np.array([rng.integers(0, h + 1) for h in hi])
            sl = tuple(slice(a // stride, max(a // stride + 1, (a + b) // stride)) for a, b in zip(c, size))
            if not len(fg_idx) or fg[sl].mean() >= min_fg:
                break
        corners[i] = c
    return corners


def augment(
    arrays: Sequence[np.ndarray], rng: np.random.Generator, *, lateral_isotropic: bool = True, lead: int = 0,
    flip_axial: bool = True,
) -> list[np.ndarray]:  # fmt: skip
    """The same random flips (every spatial axis; Z only with ``flip_axial``) and lateral 90-degree rotation
    applied to every array of a pair; the first ``lead`` axes (channels) are left alone. A single light-sheet view
    degrades with depth along Z: flipping Z shows the network a physics that never happens."""
    nd = arrays[0].ndim
    first = lead if flip_axial or nd - lead < 3 else lead + 1
    flips = [ax for ax in range(lead, nd) if rng.random() < 0.5 and ax >= first]
    k = int(rng.integers(4)) if lateral_isotropic else 0
    out = []
    for a in arrays:
        b = np.flip(a, flips) if flips else a
        if k:
            b = np.rot90(b, k, axes=(nd - 2, nd - 1))
        out.append(np.ascontiguousarray(b))
    return out
