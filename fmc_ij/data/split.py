"""Train / validation splits: by specimen, or by region when specimens are few.

Holding out whole specimens is the honest test of a new sample, but with the handful of pairs a user usually has
it costs the network a quarter of what it could learn from: on the light-sheet benchmark (4 training specimens,
240 s on 2 cores) held-out N_SSIM is 0.85 trained on 3 of them and 0.91 on all 4 (``benchmarks/bench_models.py``).
With fewer than :data:`REGION_SPLIT_BELOW` specimens the default therefore holds out a slab at the end of the
longest lateral axis of *every* specimen: no validation voxel is ever in a training patch, and training sees
every specimen. Z is never the split axis: a single view degrades with depth, so a Z slab would validate on a
depth the network never trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from fmc_ij.data.pairs import AnyPair, StackedPair, split_by_specimen
from fmc_ij.errors import FmcInputError

#: ``val_split: auto`` holds out whole specimens from this many specimens on, else a region of each.
REGION_SPLIT_BELOW = 10

SplitMode = Literal["auto", "specimen", "region"]


class Window:
    """``arr[start:stop]`` along ``axis``, lazily: slicing reads only what is asked for (lazy TIFF/Zarr arrays
    would read the whole region on a plain slice)."""

    def __init__(self, arr: Any, axis: int, start: int, stop: int):
        self.arr, self.axis, self.start = arr, axis, int(start)
        shape = list(arr.shape)
        shape[axis] = int(stop) - int(start)
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(arr.dtype), len(shape)

    def __getitem__(self, idx: Any) -> np.ndarray:
        idx = idx if isinstance(idx, tuple) else (idx,)
        if any(i is Ellipsis for i in idx):
            k = idx.index(Ellipsis)
            idx = idx[:k] + (slice(None),) * (self.ndim - len(idx) + 1) + idx[k + 1 :]
        idx = idx + (slice(None),) * (self.ndim - len(idx))
        sl = idx[self.axis]
        if not isinstance(sl, slice):
            raise TypeError("a Window is sliced, not indexed, along its split axis")
        lo, hi, step = sl.indices(self.shape[self.axis])
        full = list(idx)
        full[self.axis] = slice(self.start + lo, self.start + hi, step)
        return np.asarray(self.arr[tuple(full)])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        a = self[...]
        return a.astype(dtype) if dtype is not None else a

    def __len__(self) -> int:
        return self.shape[0]


def _crop(arr: Any, axis: int, start: int, stop: int) -> Any:
    if isinstance(arr, np.ndarray):  # numpy and memory maps: a view
        sl = [slice(None)] * arr.ndim
        sl[axis] = slice(start, stop)
        return arr[tuple(sl)]
    return Window(arr, axis, start, stop)


def window(pair: AnyPair, axis: int, start: int, stop: int, suffix: str) -> AnyPair:
    """The part ``[start, stop)`` of ``pair`` along ``axis`` (``start`` a multiple of the mask stride), with the
    whole pair's normalisation (the model's contract stores one per image)."""
    if isinstance(pair, StackedPair):
        return StackedPair([window(p, axis, start, stop, suffix) for p in pair.parts])  # type: ignore[misc]
    s = pair.stride
    fg = pair.foreground
    sl = [slice(None)] * fg.ndim
    sl[axis] = slice(start // s, -(-stop // s))
    return dataclasses.replace(pair, name=f"{pair.name}{suffix}", low=_crop(pair.low, axis, start, stop),
                               high=_crop(pair.high, axis, start, stop), foreground=fg[tuple(sl)])  # fmt: skip


def split_by_region(
    pairs: Sequence[AnyPair], *, val_fraction: float, patch: Sequence[int], multiple: int = 4
) -> tuple[list[AnyPair], list[AnyPair]]:
    """Every pair cut in two along its longest lateral axis: the first ``1 - val_fraction`` trains, the last part
    validates. The training part keeps at least a patch, the validation part at least ``multiple`` * 4 voxels."""
    train: list[AnyPair] = []
    val: list[AnyPair] = []
    for p in pairs:
        shape = p.shape
        lateral = list(range(max(0, len(shape) - 2), len(shape)))
        axis = max(lateral, key=lambda a: shape[a])
        n, s = shape[axis], p.stride
        n_val = max(multiple * 4, int(round(val_fraction * n)))
        cut = (n - n_val) // s * s  # the mask's stride divides the cut
        need = int(list(patch)[-len(shape) :][axis]) if len(patch) >= len(shape) else 0
        if cut < need or n - cut < multiple * 4:
            raise FmcInputError(
                f"{p.name}: {n} voxels along {'ZYX'[-len(shape) :][axis]} are too few to hold out {n_val} for "
                f"validation and keep a {need}-voxel patch; use data.val_split specimen, or val_fraction 0"
            )
        train.append(window(p, axis, 0, cut, ""))
        val.append(window(p, axis, cut, n, "@val"))
    return train, val


def split_pairs(
    pairs: Sequence[AnyPair], *, mode: SplitMode = "auto", val_fraction: float = 0.2,
    val_names: Sequence[str] | None = None, patch: Sequence[int] = (), seed: int = 0,
) -> tuple[list[AnyPair], list[AnyPair]]:  # fmt: skip
    """The training and validation pairs (see the module docstring). ``val_names`` or ``mode="specimen"`` hold out
    whole specimens (:func:`~fmc_ij.data.pairs.split_by_specimen`); ``val_fraction`` 0 validates on nothing.
    ``auto`` falls back to whole specimens where the images are too small to cut (a patch plus a slab)."""
    specimens = {p.specimen for p in pairs}
    if mode == "auto":
        mode = "specimen" if val_names or len(specimens) >= REGION_SPLIT_BELOW else "region"
        if mode == "region" and val_fraction > 0 and len(specimens) > 1:
            try:
                return split_by_region(pairs, val_fraction=val_fraction, patch=patch)
            except FmcInputError:  # images too small to cut: whole specimens, as before
                mode = "specimen"
    if mode == "specimen" or val_fraction <= 0:
        return split_by_specimen(pairs, val_fraction=val_fraction, val_names=val_names, seed=seed)
    return split_by_region(pairs, val_fraction=val_fraction, patch=patch)
