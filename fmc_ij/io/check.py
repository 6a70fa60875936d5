"""Preconditions of the pipeline's consumers (predict, train, register, SQUIRREL), checked in one lazy pass."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from fmc_ij.errors import FmcInputError


def iter_planes(data: Any) -> Iterator[np.ndarray]:
    """The 2D planes of a numpy, memory-mapped or zarr array, one at a time (lazy arrays never load whole)."""
    if len(data.shape) <= 2:
        yield np.asarray(data[...])
        return
    for i in range(int(np.prod(data.shape[:-2], dtype=np.int64))):
        yield np.asarray(data[np.unravel_index(i, data.shape[:-2])])


def value_range(data: Any) -> tuple[float, float]:
    """Min and max, read plane by plane."""
    lo, hi = np.inf, -np.inf
    for plane in iter_planes(data):
        lo, hi = min(lo, float(plane.min())), max(hi, float(plane.max()))
    return lo, hi


def check_image(data: Any, name: str, *, what: str, axes: str | None = None) -> tuple[float, float]:
    """Refuse what ``what`` (e.g. "prediction") cannot use; return the image's (min, max).

    Checks single-channel YX / ZYX ``axes`` (when given), a real numeric dtype, finite values and a non-constant
    image, reading ``data`` (numpy, memmap or zarr) one plane at a time.
    """
    if axes is not None and axes not in ("YX", "ZYX"):
        raise FmcInputError(f"{name}: axes {axes}; {what} takes single-channel YX or ZYX images (split C/T first)")
    dt = np.dtype(data.dtype)
    if dt == np.bool_ or not np.issubdtype(dt, np.number) or np.issubdtype(dt, np.complexfloating):
        raise FmcInputError(f"{name}: dtype {dt}; {what} needs real-valued intensities (uint8/16/32 or float)")
    lo, hi, finite = np.inf, -np.inf, True
    for plane in iter_planes(data):
        if np.issubdtype(dt, np.floating) and not np.isfinite(plane).all():
            finite = False
            break
        lo, hi = min(lo, float(plane.min())), max(hi, float(plane.max()))
    if not finite:
        raise FmcInputError(f"{name}: contains NaN or infinite values; fix or mask them before {what}")
    if not hi > lo:
        raise FmcInputError(f"{name}: the image is constant ({lo:g} everywhere); there is nothing for {what}")
    return lo, hi
