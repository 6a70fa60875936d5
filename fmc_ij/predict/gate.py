"""The safety gate: decide, without ground truth, how much of the network's output to trust, and keep the input
elsewhere, so a restoration is not worse than its input where the model is out of its depth.

Two signals, combined into one gate map ``w`` in [0, 1]; the output is ``input + w * (prediction - input)``
(normalised units), written next to the prediction as ``*_gate.tif``:

1. **Competence** (one number per image): how far the network's deepest activations on this image lie from
   those it had on its training and validation volumes (per channel mean and spread over the whole image, summed
   from the tiles' cores so any tiling gives the same; z-scored with the in-domain statistics stored in the
   model's contract). A model is trusted fully up to the scores its training
   and validation volumes reached, and not at all from :data:`OOD_ZERO` times that on. Out of its competence a
   network's guess for what the input cannot show (the blur's null space) is unchecked, so the input is kept.
2. **Consistency** (a map): the prediction, degraded by a forward model fitted to the input (a Gaussian blur and a
   gain and offset per plane, smooth along Z), must explain the input: a local SSIM between the two at the
   metric's scale, its constants set by the input's noise. Where the network removed structure the input shows,
   or invented structure the input does not support, it falls; there the input is kept.

Both are local or per image and cost a few Gaussian filters: a small fraction of the network's time. Models
without calibration (written before it existed) get the consistency map alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from fmc_ij.model_io import GateCalibration
from fmc_ij.nn.infer import moments_summary, ood_score

#: Trust ramps from full at this multiple of the highest in-domain score ... (measured in
#: ``benchmarks/generalisation.py``: models helped on studies scored up to about 1.2 x, real volumes of other
#: structures scored 3-5 x and were made worse)
OOD_FULL = 1.25
#: ... to none at this multiple.
OOD_ZERO = 2.0
#: Consistency ramp (local SSIM between input and forward-modelled prediction): no trust below, full above. Low:
#: only clear contradictions (removed or invented structure) fall back; a forward model of a few parameters
#: cannot explain every valid restoration.
CONSISTENCY = (0.3, 0.6)
#: Gaussian windows (voxels): smoothing of both images before comparing, the comparison window, the gate map.
SMOOTH, WINDOW, MAP_SMOOTH = 1.0, 2.0, 2.0
#: Forward-model blur candidates (sigma in voxels: axial, lateral).
_BLURS = [(a, b) for a in (0.0, 1.0, 2.0) for b in (0.0, 1.0, 2.0, 3.0)]


@dataclass
class GateResult:
    """The gate map and why: ``trusted`` is its mean, ``competence`` the per-image factor (1 when uncalibrated),
    ``ood`` the image's out-of-distribution score (None when uncalibrated)."""

    weight: Any
    competence: float
    ood: float | None
    trusted: float

    def describe(self) -> str:
        why = (
            "" if self.ood is None else f" (out-of-distribution score {self.ood:.2f}; competence {self.competence:.2f})"
        )
        return f"gate: {100 * self.trusted:.0f}% of the volume from the network, the rest from the input{why}"


def image_ood(moments: np.ndarray | None, cal: GateCalibration | None) -> float | None:
    """The image's out-of-distribution score: its deepest activations' summary (from their summed channel moments)
    against the in-domain summaries in ``cal``."""
    if cal is None or moments is None:
        return None
    return ood_score(moments_summary(moments), cal.feature_mean, cal.feature_std)


def competence(score: float | None, cal: GateCalibration | None) -> float:
    """1 up to :data:`OOD_FULL` x the highest in-domain score, 0 from :data:`OOD_ZERO` x on, linear between."""
    if score is None or cal is None or not cal.in_domain:
        return 1.0
    ref = max(cal.in_domain)
    if ref <= 0:
        return 1.0
    lo, hi = OOD_FULL * ref, OOD_ZERO * ref
    return float(np.clip((hi - score) / (hi - lo), 0.0, 1.0))


def noise_sigma(x: np.ndarray) -> float:
    """The noise standard deviation of ``x`` from the median absolute Laplacian (robust to structure)."""
    sub = x[tuple(slice(None, None, max(1, n // 96)) if n > 192 else slice(None) for n in x.shape)]
    lap = ndimage.laplace(np.asarray(sub, np.float32))
    k = 6.0 if x.ndim == 3 else 4.0  # the Laplacian's centre weight: its noise gain is sqrt(k^2 + k)
    return float(np.median(np.abs(lap - np.median(lap))) / 0.6745 / np.sqrt(k * k + k))


def forward_model(xn: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y`` blurred and scaled plane by plane to explain ``xn`` best (least squares on a lateral subsample; the
    blur from a small grid, gain and offset smoothed along Z)."""
    sub = (slice(None), slice(None, None, 2), slice(None, None, 2)) if y.ndim == 3 else (slice(None, None, 2),) * 2
    target = xn[sub].reshape(len(xn) if y.ndim == 3 else 1, -1)
    best = None
    for sa, sl in _BLURS if y.ndim == 3 else [(0.0, b) for b in (0.0, 1.0, 2.0, 3.0)]:
        sig = (sa, sl, sl) if y.ndim == 3 else (sl, sl)
        fy = ndimage.gaussian_filter(y, sig) if sa or sl else y
        m = fy[sub].reshape(target.shape)
        mm, mt = m.mean(1, keepdims=True), target.mean(1, keepdims=True)
        gain = ((m - mm) * (target - mt)).sum(1) / np.maximum(((m - mm) ** 2).sum(1), 1e-12)
        off = mt[:, 0] - gain * mm[:, 0]
        if y.ndim == 3 and len(gain) > 4:  # attenuation and gain vary smoothly with depth
            gain, off = ndimage.gaussian_filter1d(gain, 2.0), ndimage.gaussian_filter1d(off, 2.0)
        err = float(np.mean((target - (gain[:, None] * m + off[:, None])) ** 2))
        if best is None or err < best[0]:
            best = (err, fy, gain, off)
    assert best is not None
    _, fy, gain, off = best
    shape = (-1,) + (1,) * (y.ndim - 1)
    return (gain.reshape(shape) * fy + off.reshape(shape)).astype(np.float32)


def consistency(xn: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Local SSIM between the input and the forward-modelled prediction (both smoothed), with constants from the
    input's noise: 1 where the prediction explains the input, low where it removed or invented structure."""
    xn = np.asarray(xn, np.float32)
    fy = forward_model(xn, np.asarray(y, np.float32))
    noise = noise_sigma(xn)
    xs, fs = ndimage.gaussian_filter(xn, SMOOTH), ndimage.gaussian_filter(fy, SMOOTH)

    def g(v: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(v, WINDOW)

    mx, mf = g(xs), g(fs)
    vx, vf, cxf = g(xs * xs) - mx * mx, g(fs * fs) - mf * mf, g(xs * fs) - mx * mf
    n2 = noise**2 / (2.0 * np.sqrt(np.pi) * SMOOTH) ** xn.ndim  # the noise variance left after smoothing
    c1, c2 = 0.01**2, 4.0 * n2 + 1e-6
    s = (2 * mx * mf + c1) / (mx * mx + mf * mf + c1) * (2 * cxf + c2) / (vx + vf + c2)
    return np.clip(s, 0.0, 1.0).astype(np.float32)


#: The gate works on slabs of this many planes (plus a halo for its filters), in memory or streamed alike.
SLAB = 64
_HALO = int(np.ceil(3.5 * (SMOOTH + WINDOW + MAP_SMOOTH)))


def weight_map(xn: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The consistency part of the gate map (before the competence factor), one YX or ZYX channel."""
    lo, hi = CONSISTENCY
    cons = consistency(xn, y)
    return ndimage.gaussian_filter(np.clip((cons - lo) / (hi - lo), 0.0, 1.0), MAP_SMOOTH).astype(np.float32)


def gate(
    xn, y, features: np.ndarray | None = None, cal: GateCalibration | None = None, *, channels: bool = False,
    out=None,
) -> GateResult:  # fmt: skip
    """The gate map for prediction ``y`` of the normalised input ``xn`` (same grid; ``channels``: channel first,
    each channel on its own). Arrays may be lazy (memmap, zarr): volumes are processed in slabs of :data:`SLAB`
    planes with a halo, the same way whatever holds them; ``out`` receives the map (default a new array)."""
    score = image_ood(features, cal)
    comp = competence(score, cal)
    shape = tuple(xn.shape)
    w = out if out is not None else np.zeros(shape, np.float32)
    for c in range(shape[0]) if channels else [None]:
        lead = () if c is None else (c,)
        space = shape[1:] if channels else shape
        if len(space) == 2:
            w[lead] = weight_map(np.asarray(xn[lead], np.float32), np.asarray(y[lead], np.float32)) * comp
            continue
        for z0 in range(0, space[0], SLAB):
            z1 = min(space[0], z0 + SLAB)
            a, b = max(0, z0 - _HALO), min(space[0], z1 + _HALO)
            sl = lead + (slice(a, b),)
            part = weight_map(np.asarray(xn[sl], np.float32), np.asarray(y[sl], np.float32))
            w[lead + (slice(z0, z1),)] = part[z0 - a : z1 - a] * comp
    trusted = float(np.mean(w)) if isinstance(w, np.ndarray) else float(np.mean(np.asarray(w[...])))
    return GateResult(w, comp, score, trusted)


def blend(xn: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``xn + w * (y - xn)``: the input where the gate is 0, the prediction where it is 1."""
    return (np.asarray(xn, np.float32) + w * (np.asarray(y, np.float32) - np.asarray(xn, np.float32))).astype(
        np.float32
    )
