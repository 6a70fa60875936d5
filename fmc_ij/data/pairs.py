"""Training volumes: lazily opened pairs, train/validation split by specimen, deterministic patch batches.

A batch is a pure function of ``(seed, step, item)``: which pair, where the patch lies and how it is flipped are
drawn from ``numpy.random.default_rng([seed, step, item])``. Resuming at step ``s`` therefore replays exactly
the batches an uninterrupted run would have seen, and ``W`` distributed processes that each take their share of
the items of a global batch see together what one process sees alone.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fmc_ij.data.patches import augment, foreground_weights, sample_patches
from fmc_ij.errors import FmcInputError
from fmc_ij.io import Pair, check_image, discover, open_lazy
from fmc_ij.norm import PMAX, PMIN, Normalizer, subsample_slices

#: Foreground masks are computed on a strided copy of at most this many voxels (memory stays small).
MASK_VOXELS = 2**22


@dataclasses.dataclass
class TrainPair:
    """One registered pair, opened lazily, with its normalisers and a (possibly strided) foreground mask.

    ``low`` and ``high`` are arrays of the same shape (YX or ZYX), possibly memory-mapped; patches read only
    what they touch.
    """

    name: str
    low: np.ndarray
    high: np.ndarray
    axes: str
    spacing: tuple[float, ...]
    norm_low: Normalizer
    norm_high: Normalizer
    foreground: np.ndarray
    stride: int
    channel: str | None = None
    specimen: str = ""
    #: Length unit of ``spacing`` (``pixel`` when uncalibrated).
    unit: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.low.shape)

    @property
    def channels(self) -> list[str]:
        return [self.channel or "all"]

    def patch(self, corner: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (low, high) float32 patches at ``corner``."""
        sl = tuple(slice(int(c), int(c) + int(s)) for c, s in zip(corner, size))
        return self.norm_low(self.low[sl]), self.norm_high(self.high[sl])

    def arrays(self, sl: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (low, high) float32 arrays of region ``sl``, channel first (one channel here)."""
        return self.norm_low(self.low[sl])[None], self.norm_high(self.high[sl])[None]


@dataclasses.dataclass
class StackedPair:
    """The channels of one specimen as one multi-channel pair (``data.multichannel``): same grid, each channel
    normalised on its own; patches and arrays come channel first in ``channels`` order."""

    parts: list[TrainPair]

    def __post_init__(self) -> None:
        shapes = {p.shape for p in self.parts}
        if len(shapes) > 1:
            raise FmcInputError(
                f"{self.specimen}: its channels {', '.join(self.channels)} differ in shape {sorted(shapes)}; a "
                "multi-channel model needs them on one grid (fmc-ij register --dataset crops a specimen's channels "
                "to one box)"
            )
        first = self.parts[0]
        self.axes, self.spacing, self.stride = first.axes, first.spacing, first.stride
        self.foreground = np.logical_or.reduce([p.foreground for p in self.parts])

    @property
    def name(self) -> str:
        return self.specimen

    @property
    def specimen(self) -> str:
        return self.parts[0].specimen

    @property
    def channel(self) -> str:
        return "+".join(self.channels)

    @property
    def channels(self) -> list[str]:
        return [p.channel or "all" for p in self.parts]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.parts[0].shape

    @property
    def high(self) -> np.ndarray:  # what patch sampling reads for the shape
        return self.parts[0].high

    def patch(self, corner: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(p.patch(corner, size) for p in self.parts))
        return np.stack(xs), np.stack(ys)

    def arrays(self, sl: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(p.arrays(sl) for p in self.parts))
        return np.concatenate(xs), np.concatenate(ys)


AnyPair = TrainPair | StackedPair


def stack_channels(pairs: Sequence[TrainPair], channels: Sequence[str] | None = None) -> list[StackedPair]:
    """Group one-channel pairs by specimen into :class:`StackedPair` (channel order ``channels``, default the
    sorted names); a specimen missing a channel is an error."""
    names = [c.lower() for c in channels] if channels else sorted({(p.channel or "").lower() for p in pairs})
    if len(names) < 2 or "" in names:
        raise FmcInputError(
            "a multi-channel model needs two or more named channels per specimen (image_N_<channel>_... names or "
            f"a manifest's channel); found {', '.join(n or '(unnamed)' for n in names)}"
        )
    by: dict[str, dict[str, TrainPair]] = {}
    for p in pairs:
        by.setdefault(p.specimen, {})[(p.channel or "").lower()] = p
    out = []
    for spec, chans in sorted(by.items()):
        missing = [c for c in names if c not in chans]
        if missing:
            raise FmcInputError(f"{spec}: no {', '.join(missing)} pair; every specimen needs all of {', '.join(names)}")
        out.append(StackedPair([chans[c] for c in names]))
    return out


def open_pair(
    low: np.ndarray,
    high: np.ndarray,
    *,
    name: str,
    axes: str,
    spacing: Sequence[float],
    channel: str | None = None,
    specimen: str | None = None,
    pmin: float = PMIN,
    pmax: float = PMAX,
    unit: str | None = None,
) -> TrainPair:
    """A :class:`TrainPair` from two arrays (numpy or lazy) of the same YX / ZYX shape."""
    if tuple(low.shape) != tuple(high.shape):
        raise FmcInputError(
            f"{name}: input {tuple(low.shape)} and target {tuple(high.shape)} differ in shape; "
            "register the pair first (fmc-ij register --dataset)"
        )
    check_image(low, f"{name} (input)", what="training", axes=axes)
    check_image(high, f"{name} (target)", what="training", axes=axes)
    sl = subsample_slices(high.shape, MASK_VOXELS)
    stride = sl[0].step or 1
    fg = foreground_weights(np.asarray(high[sl], np.float32), smooth=max(0.5, 2.0 / stride))
    return TrainPair(
        name=name,
        low=low,
        high=high,
        axes=axes,
        spacing=tuple(float(s) for s in spacing),
        norm_low=Normalizer.fit(low, pmin, pmax),
        norm_high=Normalizer.fit(high, pmin, pmax),
        foreground=fg,
        stride=stride,
        channel=channel,
        specimen=specimen or name,
        unit=unit,
    )


def _specimen(pair: Pair) -> str:
    # Both channels of one challenge specimen (image_N_nucleus / image_N_membrane) share index N.
    return f"image_{pair.index}" if pair.index is not None else pair.name


def load_pairs(
    root: str | os.PathLike,
    *,
    channels: Sequence[str] | None = None,
    low: str | None = None,
    high: str | None = None,
    pmin: float = PMIN,
    pmax: float = PMAX,
    projection: bool = False,
) -> list[TrainPair]:
    """Open every registered pair of a dataset folder lazily (see :func:`fmc_ij.io.discover`).

    With ``projection`` the inputs are ZYX volumes and the targets YX images of the same lateral size (CARE's
    surface projection); each target is seen as a read-only view repeated along Z (no copy), so patches,
    masks and normalisation work as for same-shape pairs.
    """
    pairs = discover(root, low=low, high=high)
    if channels:
        pairs = [p for p in pairs if p.channel in channels]
        if not pairs:
            raise FmcInputError(f"no pairs of channel(s) {', '.join(channels)} in {root}")
    out = []
    for p in pairs:
        lo, hi = open_lazy(p.low), open_lazy(Path(p.high))  # type: ignore[arg-type]
        hi_data = hi.data
        if projection:
            if lo.axes != "ZYX" or hi.axes != "YX" or tuple(lo.shape[1:]) != tuple(hi.shape):
                raise FmcInputError(
                    f"{p.name}: projection training needs a ZYX input and a YX target of the same Y, X size; got "
                    f"{lo.axes} {tuple(lo.shape)} and {hi.axes} {tuple(hi.shape)}"
                )
            hi_data = np.broadcast_to(np.asarray(hi.data)[None], lo.shape)
            hi = lo  # same grid from here on (the target has no Z)
        if lo.axes != hi.axes:
            raise FmcInputError(f"{p.name}: input axes {lo.axes} differ from target axes {hi.axes}")
        spacing = lo.meta.voxel_size(lo.axes)
        sp_hi = hi.meta.voxel_size(hi.axes)
        calibrated = lo.meta.unit not in ("pixel", "") and hi.meta.unit not in ("pixel", "")
        if calibrated and not np.allclose(spacing, sp_hi, rtol=1e-3):
            # Same shape, different grids: the pair would teach the network a rescaling that is not there.
            raise FmcInputError(
                f"{p.name}: input voxel size {tuple(spacing)} differs from the target's {tuple(sp_hi)} "
                f"{hi.meta.unit}; register the pair first (fmc-ij register --dataset resamples onto the target grid)"
            )
        out.append(
            open_pair(
                lo.data,
                hi_data,
                name=p.name,
                axes=lo.axes,
                spacing=spacing,
                channel=p.channel,
                specimen=_specimen(p),
                pmin=pmin,
                pmax=pmax,
                unit=lo.meta.unit,
            )  # fmt: skip
        )
    return out


def split_by_specimen(
    pairs: Sequence[AnyPair], *, val_fraction: float = 0.2, val_names: Sequence[str] | None = None, seed: int = 0
) -> tuple[list[AnyPair], list[AnyPair]]:
    """Train / validation split by specimen, so no specimen is in both (both channels go together).

    ``val_names`` (specimen or pair names) overrides the random draw. With a single specimen there is nothing to
    hold out: an error asks for more data or ``val_fraction=0``.
    """
    specimens = sorted({p.specimen for p in pairs})
    if val_names:
        val = {s for s in specimens if s in val_names} | {p.specimen for p in pairs if p.name in val_names}
        missing = set(val_names) - val - {p.name for p in pairs}
        if missing:
            raise FmcInputError(f"validation names not in the dataset: {', '.join(sorted(missing))}")
    elif val_fraction <= 0:
        val = set()
    else:
        if len(specimens) < 2:
            raise FmcInputError(
                f"only one specimen ({specimens[0]}); a validation split needs two: add data or set val_fraction 0"
            )
        n_val = min(len(specimens) - 1, max(1, round(val_fraction * len(specimens))))
        order = np.random.default_rng([seed, 17]).permutation(len(specimens))
        val = {specimens[i] for i in order[:n_val]}
    train = [p for p in pairs if p.specimen not in val]
    if not train:
        raise FmcInputError("every specimen is in the validation set; leave some for training")
    return train, [p for p in pairs if p.specimen in val]


class PatchBatches:
    """Deterministic batches of augmented patch pairs from a list of :class:`TrainPair`.

    Parameters
    ----------
    pairs : list of TrainPair
    patch : sequence of int
        Patch size over the pairs' axes. For a 2D model on volumes give ``(1, Y, X)``: the Z axis is dropped.
    seed : int
    fg_fraction, min_fg : float
        See :func:`fmc_ij.data.sample_patches`.
    augment : bool
        Random flips, and lateral 90-degree rotations when Y and X share a voxel size.
    """

    def __init__(
        self,
        pairs: Sequence[AnyPair],
        patch: Sequence[int],
        *,
        seed: int = 0,
        fg_fraction: float = 0.8,
        min_fg: float = 0.02,
        augment: bool = True,
        flip_axial: bool = True,
    ):
        if not pairs:
            raise FmcInputError("no training pairs")
        self.pairs = list(pairs)
        self.patch = tuple(int(p) for p in patch)
        for p in self.pairs:
            if len(self.patch) != len(p.shape) or any(a > b for a, b in zip(self.patch, p.shape)):
                raise FmcInputError(
                    f"patch {self.patch} does not fit {p.name} of shape {p.shape}; choose a smaller patch"
                )
        self.seed, self.fg_fraction, self.min_fg, self.augment = seed, fg_fraction, min_fg, augment
        self.flip_axial = flip_axial
        # Larger volumes are drawn more often, so every voxel has about the same chance.
        sizes = np.array([np.prod(p.shape, dtype=float) for p in self.pairs])
        self.weights = sizes / sizes.sum()

    def item(self, step: int, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``i``-th (input, target) patch of the global batch at ``step``, float32, channel first."""
        rng = np.random.default_rng([self.seed, step, i])
        pair = self.pairs[int(rng.choice(len(self.pairs), p=self.weights))]
        corner = sample_patches(
            pair.high, self.patch, 1, rng=rng, foreground=pair.foreground, fg_fraction=self.fg_fraction,
            min_fg=self.min_fg, stride=pair.stride,
        )[0]  # fmt: skip
        x, y = pair.arrays(tuple(slice(int(c), int(c) + s) for c, s in zip(corner, self.patch)))
        if self.patch[0] == 1 and x.ndim == 4:
            x, y = x[:, 0], y[:, 0]
        if self.augment:
            lateral_iso = len(pair.spacing) < 2 or abs(pair.spacing[-1] - pair.spacing[-2]) < 1e-6 * pair.spacing[-1]
            x, y = augment([x, y], rng, lateral_isotropic=lateral_iso and x.shape[-1] == x.shape[-2], lead=1,
                           flip_axial=self.flip_axial)  # fmt: skip
        return x, y

    def batch(self, step: int, items: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Stacked (N, C, *patch) input and target arrays of the given items of the batch at ``step``."""
        xs, ys = zip(*(self.item(step, i) for i in items))
        return np.stack(xs), np.stack(ys)
