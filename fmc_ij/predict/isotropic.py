"""Isotropic restoration at prediction time (CARE's IsotropicCARE / UpsamplingCARE, Weigert et al. 2018).

A model trained with ``data.mode: isotropic`` is a 2D network that learned to undo the axial degradation
(blur + subsampling by k = dz / dx, then linear re-interpolation) along one in-plane axis of lateral planes.
Here the volume is first interpolated linearly along Z onto the lateral grid (k times more planes; exactly
what the training degradation ends with), then every XZ plane and every YZ plane, in which Z is the degraded
axis, goes through the network, and the two passes are averaged. The result lies on an isotropic grid: its
Z voxel size is the lateral one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fmc_ij.data.semisynthetic import isotropic_factor
from fmc_ij.errors import FmcInputError
from fmc_ij.norm import Normalizer
from fmc_ij.predict.core import Prediction, predict_array
from fmc_ij.predict.model import Predictor


def upsample_z(volume: np.ndarray, factor: float) -> np.ndarray:
    """Linear interpolation along Z onto planes ``1 / factor`` apart: plane p sits at input plane p / factor."""
    vol = np.asarray(volume, np.float32)
    n = int(np.floor((vol.shape[0] - 1) * factor + 1e-6)) + 1
    z = np.arange(n, dtype=np.float64) / factor
    lo = np.minimum(np.floor(z).astype(int), vol.shape[0] - 1)
    hi = np.minimum(lo + 1, vol.shape[0] - 1)
    w = (z - lo).astype(np.float32)[:, None, None]
    return vol[lo] * (1 - w) + vol[hi] * w


def predict_isotropic(
    predictor: Predictor,
    volume: np.ndarray,
    spacing: Sequence[float],
    *,
    engine: Callable[..., Prediction] = predict_array,
    normalizer: Normalizer | None = None,
    **tiling: Any,
) -> tuple[Prediction, tuple[float, float, float]]:
    """Restore ``volume`` (ZYX) onto the isotropic grid; returns the prediction and its voxel size.

    Parameters
    ----------
    predictor : Predictor
        A 2D model trained in isotropic mode.
    volume : ndarray (Z, Y, X)
    spacing : (dz, dy, dx)
        The input's voxel size; k = dz / dx sets the upsampling.
    engine : callable
        The tile runner for the two passes (:func:`predict_array`, or a cluster's).
    normalizer : Normalizer, optional
        Input scaling; default the volume's own percentiles (one scaling for both passes).
    tiling
        ``tile``, ``halo``, ``batch``, ``progress`` for the engine.

    Returns
    -------
    (Prediction, (dx, dy, dx))
        The mean of the XZ and YZ passes (uncertainty: their spread combined with the model's own), on
        ``floor((Z - 1) k) + 1`` planes.
    """
    if predictor.ndim != 2:
        raise FmcInputError("isotropic prediction needs a 2D model trained with data.mode: isotropic")
    if np.ndim(volume) != 3:
        raise FmcInputError(f"isotropic prediction needs a ZYX volume, got {np.ndim(volume)} dimensions")
    k = isotropic_factor(spacing)
    up = upsample_z(volume, k)
    # One normaliser for both passes, from the input volume (the training pairs were lateral planes of it).
    norm = normalizer or Normalizer.fit(np.asarray(volume), predictor.pmin, predictor.pmax)
    xz = engine(predictor, np.ascontiguousarray(up.transpose(1, 0, 2)), normalizer=norm, **tiling)  # planes (Z', X)
    yz = engine(predictor, np.ascontiguousarray(up.transpose(2, 0, 1)), normalizer=norm, **tiling)  # planes (Z', Y)
    a, b = np.asarray(xz.image).transpose(1, 0, 2), np.asarray(yz.image).transpose(1, 2, 0)
    mean, unc = 0.5 * (a + b), 0.5 * np.abs(a - b)
    passes = ((xz, (1, 0, 2)), (yz, (1, 2, 0)))
    own = [np.asarray(p.uncertainty).transpose(o) for p, o in passes if p.uncertainty is not None]
    if own:  # the model's own uncertainty (ensemble, Laplace, flips), averaged over the passes, in quadrature
        unc = np.sqrt(unc**2 + sum(u**2 for u in own) / len(own))
    dx = float(spacing[2])
    return Prediction(mean.astype(np.float32), unc.astype(np.float32), norm), (dx, float(spacing[1]), dx)
