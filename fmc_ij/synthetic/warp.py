"""Known misregistration: a sub-pixel global shift plus a smooth elastic warp, with the truth kept.

Convention: ``warped[p] = original[p + displacement[:, p]]`` (displacement in voxels, one component
per axis in the array's axis order). A registration that recovers ``displacement`` undoes the warp.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def random_displacement(
    shape: Sequence[int],
    rng: np.random.Generator,
    *,
    shift_px: Sequence[float] | float = 2.0,
    elastic_px: float = 1.5,
    smoothness_px: float | Sequence[float] = 32.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A random global shift and a smooth elastic field.

    Parameters
    ----------
    shape : sequence of int
        Image shape (2D or 3D).
    shift_px : float or sequence
        Largest absolute global shift per axis (voxels); drawn uniformly, sub-pixel.
    elastic_px : float
        Largest displacement magnitude of the elastic part (voxels).
    smoothness_px : float or sequence
        Correlation length of the elastic part (voxels): large compared with NanoJ's 64 px blocks.

    Returns
    -------
    shift : ndarray, shape (ndim,)
    displacement : ndarray, shape (ndim, *shape), float32
        Total displacement (shift + elastic).
    """
    ndim = len(shape)
    shift = rng.uniform(-1, 1, ndim) * np.broadcast_to(np.asarray(shift_px, float), (ndim,))
    # Elastic part on a coarse grid then upsampled: cheap, and smooth by construction.
    smooth = np.broadcast_to(np.asarray(smoothness_px, float), (ndim,))
    coarse = tuple(max(2, int(np.ceil(n / max(c, 1.0))) + 1) for n, c in zip(shape, smooth))
    field = np.empty((ndim, *shape), np.float32)
    for ax in range(ndim):
        c = ndimage.gaussian_filter(rng.standard_normal(coarse), 0.7, mode="nearest")
        zoom = [s / c_ for s, c_ in zip(shape, coarse)]
        up = ndimage.zoom(c, zoom, order=3, mode="nearest", grid_mode=True)[tuple(slice(0, s) for s in shape)]
        field[ax] = up
    mag = np.sqrt(np.sum(field**2, axis=0)).max()
    if mag > 0:
        field *= elastic_px / mag
    field += shift.reshape((ndim,) + (1,) * ndim).astype(np.float32)
    return shift, field


def apply_displacement(image: np.ndarray, displacement: np.ndarray, *, order: int = 3) -> np.ndarray:
    """``out[p] = image[p + displacement[:, p]]`` with cubic spline interpolation, edges clamped."""
    grid = np.indices(image.shape, dtype=np.float32)
    coords = grid + displacement
    out = ndimage.map_coordinates(image.astype(np.float32), coords, order=order, mode="nearest", prefilter=True)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.round(out), info.min, info.max)
    return out.astype(image.dtype)


def fluorescence_2d(shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A fluorescence-like plane to register: nuclei (Gaussian blobs of varied brightness), a membrane network
    (Voronoi edges) and a background (about one nucleus per 900 pixels)."""
    n = int(np.prod(shape) / 900)
    seeds = np.zeros(tuple(shape), np.float32)
    pts = (rng.random((n, 2)) * shape).astype(int)
    seeds[pts[:, 0], pts[:, 1]] = rng.uniform(0.5, 1.5, n)
    nuclei = ndimage.gaussian_filter(seeds, 3.0) * 60
    nearest = ndimage.distance_transform_edt(seeds == 0, return_indices=True)[1]
    cell = nearest[0] * shape[1] + nearest[1]
    edge = (np.diff(cell, axis=0, prepend=cell[:1]) != 0) | (np.diff(cell, axis=1, prepend=cell[:, :1]) != 0)
    return 0.2 + nuclei + ndimage.gaussian_filter(edge.astype(np.float32), 1.2) * 2
