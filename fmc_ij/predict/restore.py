"""The one place that runs a model's task on an image: every prediction path (in memory, streamed, tiled, Dask by
file or by tile, test-time flips, ensembles, multi-channel) goes through :func:`restore`, so none can skip a task.

Tasks (the model's contract, :attr:`fmc_ij.model_io.ModelContract.task`):

- ``restore``: same grid in and out (tiled, seam-free).
- ``isotropic``: a 2D model on the axial planes of the volume interpolated along Z to the lateral pixel size
  (:mod:`fmc_ij.predict.isotropic`); the result has the new Z voxel size.
- ``projection``: a ZYX volume in, the YX surface image out.

The tile runner is pluggable (``engine``): :func:`fmc_ij.predict.predict_array` in this process, or
:class:`fmc_ij.predict.distributed.DaskTiles` spreading tile groups over a Dask cluster; the task logic is the same.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmc_ij.errors import FmcInputError
from fmc_ij.norm import ChannelNormalizer, Normalizer
from fmc_ij.predict import gate as G
from fmc_ij.predict import resample as rs
from fmc_ij.predict.core import Prediction, predict_array
from fmc_ij.predict.isotropic import predict_isotropic
from fmc_ij.predict.model import Predictor

_log = logging.getLogger("fmc_ij.predict")
#: A tile runner with :func:`fmc_ij.predict.predict_array`'s signature.
Engine = Callable[..., Prediction]


@dataclass
class Restored:
    """A model's result on one image: the restored image on its own grid (``axes``, ``spacing``), the uncertainty
    (a standard deviation) when the model has one, and the input's normaliser (to map back to its scale)."""

    image: Any
    uncertainty: Any | None
    normalizer: Normalizer | ChannelNormalizer
    axes: str
    spacing: dict[str, float]
    #: Whether the result lies on the input's grid (fallbacks and gates blend with the input only then).
    same_grid: bool = True
    features: np.ndarray | None = None
    #: The safety gate's map and verdict, when it ran (the image is then the gated blend).
    gate: G.GateResult | None = None

    @property
    def prediction(self) -> Prediction:
        return Prediction(self.image, self.uncertainty, self.normalizer, self.features)


def _spatial(axes: str) -> str:
    return axes.replace("C", "")


def restore(
    predictor: Predictor,
    image: Any,
    *,
    axes: str,
    spacing: dict[str, float] | None = None,
    engine: Engine | None = None,
    out: Any | None = None,
    uncertainty_out: Any | None = None,
    unit: str | None = None,
    resample: bool = True,
    strict: bool = False,
    gate: bool = True,
    gate_out: Any | None = None,
    **tiling: Any,
) -> Restored:
    """Run ``predictor``'s task on ``image`` (numpy or lazy; ``axes`` e.g. ``ZYX``, ``CZYX`` for a multi-channel
    model) and return the result with its grid.

    Parameters
    ----------
    spacing : dict, optional
        The input's voxel size per axis letter (needed by the isotropic task; carried into the result).
    engine : callable, optional
        The tile runner (default :func:`predict_array`).
    out, uncertainty_out : array-like, optional
        On-disk destinations for a same-grid result (streaming); other tasks change the grid and stay in memory.
    unit : str, optional
        The length unit of ``spacing``; with ``resample`` the image is brought to the model's training voxel size
        and the result back (:mod:`fmc_ij.predict.resample`); ``strict`` makes a far-off scale an error.
    gate : bool
        Keep the input where the model is out of its depth or contradicts the input (:mod:`fmc_ij.predict.gate`);
        same-grid results only (``gate_out``: an on-disk destination for the map when streaming).
    tiling
        ``tile``, ``halo``, ``border``, ``batch``, ``progress``, ``normalizer`` as in :func:`predict_array`.
    """
    engine = engine or predict_array
    spacing = dict(spacing or {})
    space = _spatial(axes)
    task = predictor.task
    if predictor.channels > 1 and task != "restore":
        raise FmcInputError(f"a multi-channel model restores on the same grid, not {task}")
    if task == "isotropic":
        if space != "ZYX":
            raise FmcInputError(f"isotropic restoration needs a ZYX volume, got axes {axes}")
        vox = [float(spacing.get(a, 1.0)) for a in "ZYX"]
        pred, iso = predict_isotropic(predictor, np.asarray(image), vox, engine=engine, **tiling)
        return Restored(pred.image, pred.uncertainty, pred.normalizer, axes, dict(zip("ZYX", iso)), same_grid=False)
    if task == "projection":
        if space != "ZYX":
            raise FmcInputError(f"a projection model takes ZYX volumes, got axes {axes}")
        pred = engine(predictor, image, **tiling)
        unc = None if pred.uncertainty is None else np.asarray(pred.uncertainty)[0]
        lateral = {k: v for k, v in spacing.items() if k != "Z"}
        return Restored(np.asarray(pred.image)[0], unc, pred.normalizer, "YX", lateral, same_grid=False)
    scale = rs.plan(predictor.contract, axes, spacing, unit) if resample else None  # type: ignore[arg-type]
    if scale is not None and scale.needed:
        rs.check_scale(scale, strict)
        return _restore_resampled(predictor, image, scale, engine, axes, spacing, tiling, gate)
    else:
        pred = engine(predictor, image, out=out, uncertainty_out=uncertainty_out, **tiling)
        res = Restored(pred.image, pred.uncertainty, pred.normalizer, axes, spacing, features=pred.features)
    return _gated(predictor, image, res, gate_out) if gate else res


class _Normalized:
    """The input as the network saw it (normalised), read lazily slab by slab (a channel's own normaliser)."""

    def __init__(self, image: Any, norm: Normalizer | ChannelNormalizer):
        self.image, self.norm, self.shape = image, norm, tuple(image.shape)

    def __getitem__(self, idx: Any) -> np.ndarray:
        idx = idx if isinstance(idx, tuple) else (idx,)
        if isinstance(self.norm, ChannelNormalizer) and idx and isinstance(idx[0], int):
            return self.norm.parts[idx[0]](np.asarray(self.image[idx]))
        return self.norm(np.asarray(self.image[idx]))


def _gated(predictor: Predictor, image: Any, res: Restored, gate_out: Any | None) -> Restored:
    """The same-grid result blended with the input through the gate map (in slabs: the same in memory or on disk)."""
    cal = predictor.contract.calibration.gate  # type: ignore[union-attr]
    channels = predictor.channels > 1
    xn = _Normalized(image, res.normalizer)
    verdict = G.gate(xn, res.image, res.features, cal, channels=channels, out=gate_out)
    y, w = res.image, verdict.weight
    if isinstance(y, np.ndarray):
        y = G.blend(xn[...], y, np.asarray(w))
    else:  # on disk: blended slab by slab, in place
        for sl in _slabs(tuple(y.shape), channels):
            y[sl] = G.blend(xn[sl], np.asarray(y[sl]), np.asarray(w[sl]))
    _log.info(verdict.describe())
    return dataclasses.replace(res, image=y, gate=verdict)


def _slabs(shape: tuple[int, ...], channels: bool) -> list[tuple]:
    lead = [(c,) for c in range(shape[0])] if channels else [()]
    n = shape[1] if channels else shape[0]
    return [c + (slice(z, min(n, z + G.SLAB)),) for c in lead for z in range(0, n, G.SLAB)]


def _restore_resampled(
    predictor: Predictor, image: Any, scale: rs.ScalePlan, engine: Engine, axes: str, spacing: dict[str, float],
    tiling: dict[str, Any], gate: bool,
) -> Restored:  # fmt: skip
    """The same-grid task on the image brought to the model's voxel size, the result brought back (in memory).
    The gate judges the network where it ran, on the model's grid (a downsampled input costs the gate no more than
    the network), and its map is brought back like the result."""
    _log.info(scale.describe())
    x = np.asarray(image, np.float32)
    fit = ChannelNormalizer.fit if predictor.channels > 1 else Normalizer.fit
    norm = tiling.pop("normalizer", None) or fit(x, predictor.pmin, predictor.pmax)  # the input's own scaling
    xz = rs.zoom_to(x, scale.zoom)
    pred = engine(predictor, xz, normalizer=norm, **tiling)
    verdict = None
    if gate:
        cal = predictor.contract.calibration.gate  # type: ignore[union-attr]
        verdict = G.gate(norm(xz), pred.image, pred.features, cal, channels=predictor.channels > 1)
    back = [rs.zoom_to(np.asarray(a), (), shape=x.shape) if a is not None else None
            for a in (pred.image, pred.uncertainty)]  # fmt: skip
    res = Restored(back[0], back[1], norm, axes, spacing, features=pred.features)
    if verdict is None:
        return res
    w = np.clip(rs.zoom_to(np.asarray(verdict.weight), (), shape=x.shape), 0.0, 1.0)
    verdict = dataclasses.replace(verdict, weight=w, trusted=float(w.mean()))
    _log.info(verdict.describe())
    return dataclasses.replace(res, image=G.blend(norm(x), res.image, w), gate=verdict)
