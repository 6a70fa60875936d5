"""Physical units at prediction: an input is brought to the voxel size the model was trained at and the result back
to the input's grid, so a model sees structures at the size it learned them (a cell 10 um across stays 25 voxels
for a model trained at 0.4 um, whatever the microscope's pixel).

The scale check compares the input's voxel size with the training voxel size in the model's contract (units
converted); a resampling of more than :data:`MAX_SCALE` along any axis is far outside what the model saw: a warning,
or an error with ``strict``. Only the axes the network works on are resampled (Y and X for a 2D model run plane by
plane; Z, Y and X for a 3D one); differences below :data:`TOLERANCE` are left alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fmc_ij.errors import FmcInputError
from fmc_ij.model_io import ModelContract

_log = logging.getLogger("fmc_ij.predict")

#: Voxel sizes within this relative difference are the same grid (no resampling).
TOLERANCE = 0.1
#: Resampling beyond this factor along an axis is far outside the training scale.
MAX_SCALE = 2.5
#: Micrometres per unit of the lengths a file may carry.
UM_PER_UNIT = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "m": 1e6, "cm": 1e4, "Å": 1e-4}


def to_um(values: Sequence[float], unit: str | None) -> list[float] | None:
    """``values`` in micrometres, or None for an unknown or missing unit (``pixel``)."""
    f = UM_PER_UNIT.get(str(unit or "").strip().replace("\u03bc", "µ"))
    return None if f is None else [float(v) * f for v in values]


@dataclass(frozen=True)
class ScalePlan:
    """How an input is brought to the model's grid: the zoom per axis of the array (1 = untouched)."""

    zoom: tuple[float, ...]
    input_um: tuple[float, ...] | None
    model_um: tuple[float, ...] | None

    @property
    def needed(self) -> bool:
        return any(abs(z - 1.0) > TOLERANCE for z in self.zoom)

    @property
    def far(self) -> bool:
        return any(max(z, 1 / z) > MAX_SCALE for z in self.zoom)

    def describe(self) -> str:
        fmt = " x ".join
        return (f"input voxels {fmt(f'{v:.3g}' for v in self.input_um or ())} um resampled by "
                f"{fmt(f'{z:.2f}' for z in self.zoom)} to the model's training grid "
                f"{fmt(f'{v:.3g}' for v in self.model_um or ())} um")  # fmt: skip


def plan(contract: ModelContract, axes: str, spacing: dict[str, float] | None, unit: str | None) -> ScalePlan:
    """The zoom that takes an image (``axes``, ``spacing`` in ``unit``) to the model's training voxel size;
    1 along axes without a known size on either side (uncalibrated inputs are taken as they are)."""
    ones = tuple(1.0 for _ in axes)
    d = contract.data
    if not d.voxel_size or not d.axes or not spacing or contract.task != "restore":
        return ScalePlan(ones, None, None)
    model_um = to_um(d.voxel_size, d.unit)
    space = [a for a in axes if a != "C"]
    input_um = to_um([float(spacing.get(a, 1.0)) for a in space], unit)
    if model_um is None or input_um is None:
        return ScalePlan(ones, None, None)
    net_axes = d.axes[-contract.ndim :]  # the axes the network works on (YX for a 2D model on volumes)
    have = dict(zip(space, input_um))
    train = dict(zip(d.axes, model_um))
    if d.voxel_range:  # trained on many voxel sizes: only an input outside their range is brought to its edge
        lo, hi = (to_um(r, d.unit) or r for r in d.voxel_range)
        train = {a: float(np.clip(have.get(a, m), lo_a, hi_a)) for a, m, lo_a, hi_a in zip(d.axes, model_um, lo, hi)}
    zoom = tuple(have[a] / train[a] if a in net_axes and a in train and a in have else 1.0 for a in axes)
    return ScalePlan(zoom, tuple(input_um), tuple(train[a] for a in d.axes))


def check_scale(p: ScalePlan, strict: bool = False) -> None:
    if not p.far:
        return
    msg = (f"{p.describe()}: more than {MAX_SCALE:g}x from the scale the model was trained at; its output there "
           "is an extrapolation")  # fmt: skip
    if strict:
        raise FmcInputError(msg + " (--strict); use a model trained near this voxel size")
    _log.warning(msg)


def zoom_to(image: np.ndarray, zoom: Sequence[float], shape: Sequence[int] | None = None) -> np.ndarray:
    """``image`` resampled by ``zoom`` per axis (linear; a Gaussian anti-alias filter first when shrinking), or
    to exactly ``shape``."""
    x = np.asarray(image, np.float32)
    target = (
        [int(s) for s in shape] if shape is not None else [max(1, int(round(n * z))) for n, z in zip(x.shape, zoom)]
    )
    factors = [t / n for t, n in zip(target, x.shape)]
    sigma = [0.5 * math.sqrt(max(1 / f**2 - 1, 0.0)) if f < 1 else 0.0 for f in factors]
    if any(sigma):
        x = ndimage.gaussian_filter(x, sigma, mode="nearest")
    if all(abs(f - 1.0) < 1e-9 for f in factors):
        return x
    return ndimage.zoom(x, factors, order=1, mode="nearest", grid_mode=True)
