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
   A second factor checks the image's **structure density** (the fraction of the normalised input above
   :data:`fmc_ij.norm.FG_LEVEL`) against the range of the training volumes: a network that learned dense
   organoids meets a sparse neuron (or a tightly cropped tissue) outside its prior, and its model of background
   and structure no longer holds (measured: sparse real volumes made much worse with every voxel "consistent").
   Trust falls from :data:`DENSITY_FULL` x beyond that range to none at :data:`DENSITY_ZERO` x.
   A third factor checks the **light the network kept**: the output's light above the normalised background
   (``sum(max(y, 0)) / sum(max(x, 0))``) against the training volumes' range, with the same ramp. Removing haze
   and out-of-focus blur takes a share of the input's light that the training physics bounds; a network that
   calls most of the input background (the widefield glow around a sparse neuron: a quarter kept, against half
   or more on every training volume) has met light it does not know, and its "restoration" is a guess.
2. **Consistency** (a map): the prediction, degraded by a forward model fitted to the input (a Gaussian blur and a
   gain and offset per plane, smooth along Z), must explain the input: a local SSIM between the two at the
   metric's scale, its constants set by the input's noise. Where the network removed structure the input shows,
   or invented structure the input does not support, it falls; there the input is kept.

Both are local or per image and cost a few Gaussian filters: a small fraction of the network's time. Models
without calibration (written before it existed) get the consistency map alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from fmc_ij.model_io import GateCalibration
from fmc_ij.nn.infer import moments_summary, ood_score
from fmc_ij.norm import kept_share, light_sums, structure_count

#: Trust ramps from full at this multiple of the highest in-domain score ... (measured in
#: ``benchmarks/generalisation.py``: models helped on studies scored up to about 1.2 x, real volumes of other
#: structures scored 3-5 x and were made worse)
OOD_FULL = 1.25
#: ... to none at this multiple.
OOD_ZERO = 2.0
#: Trust is full up to this factor beyond the training volumes' range of structure density (and of kept light),
#: none from the second on.
DENSITY_FULL, DENSITY_ZERO = 1.25, 2.0
#: Consistency ramp (local SSIM between input and forward-modelled prediction): no trust below, full above. Low:
#: only clear contradictions (removed or invented structure) fall back; a forward model of a few parameters
#: cannot explain every valid restoration.
CONSISTENCY = (0.3, 0.6)
#: Gaussian windows (voxels): smoothing of both images before comparing, the comparison window, the gate map.
SMOOTH, WINDOW, MAP_SMOOTH = 1.0, 2.0, 2.0
#: Forward-model blur candidates (Gaussian sigma in voxels), lateral and axial: up to a deep single view's PSF.
_LATERAL, _AXIAL = (0.0, 1.0, 2.0, 3.0, 4.5, 6.0), (0.0, 1.0, 2.0)
#: The haze's blur (sigma in voxels: axial, lateral, lateral): light scattered over several cells.
HAZE_SIGMA = (3.0, 12.0, 12.0)


@dataclass
class GateResult:
    """The gate map and why: ``trusted`` is its mean, ``competence`` the per-image factor (1 when uncalibrated),
    ``ood`` the image's out-of-distribution score (None when uncalibrated), ``density`` its structure density and
    ``kept`` the share of its light the network kept (None when the calibration has no range for them)."""

    weight: Any
    competence: float
    ood: float | None
    trusted: float
    density: float | None = None
    kept: float | None = None
    #: Each per-image factor of ``competence`` by name (``ood``, ``density``, ``light``): which one cut the trust.
    factors: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        def part(key: str, text: str) -> list[str]:
            f = self.factors.get(key, 1.0)
            return [text + (f", beyond its training range: trust x{f:.2f}" if f < 1.0 else "")]

        parts = [] if self.ood is None else part("ood", f"out-of-distribution score {self.ood:.2f}")
        parts += [] if self.density is None else part("density", f"structure density {self.density:.3f}")
        parts += [] if self.kept is None else part("light", f"light kept {self.kept:.2f}")
        why = f" ({'; '.join(parts)}; competence {self.competence:.2f})" if parts else ""
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


def range_competence(value: float | None, reference: list[float] | None) -> float:
    """1 within :data:`DENSITY_FULL` x the range of ``reference`` (the training volumes' values), 0 beyond
    :data:`DENSITY_ZERO` x (either way: below or above), linear between; 1 without a reference."""
    if value is None or not reference:
        return 1.0
    lo, hi = min(reference), max(reference)
    fold = max(lo / max(value, 1e-9), value / max(hi, 1e-9), 1.0)
    return float(np.clip((DENSITY_ZERO - fold) / (DENSITY_ZERO - DENSITY_FULL), 0.0, 1.0))


def density_competence(fraction: float | None, cal: GateCalibration | None) -> float:
    """:func:`range_competence` of the image's structure density against the training volumes'."""
    return range_competence(fraction, cal.foreground if cal is not None else None)


def light_competence(kept: float | None, cal: GateCalibration | None) -> float:
    """:func:`range_competence` of the share of light the network kept against its training volumes'."""
    return range_competence(kept, cal.kept_light if cal is not None else None)


def noise_sigma(x: np.ndarray) -> float:
    """The noise standard deviation of ``x`` from the median absolute Laplacian (robust to structure)."""
    sub = x[tuple(slice(None, None, max(1, n // 96)) if n > 192 else slice(None) for n in x.shape)]
    lap = ndimage.laplace(np.asarray(sub, np.float32))
    k = 6.0 if x.ndim == 3 else 4.0  # the Laplacian's centre weight: its noise gain is sqrt(k^2 + k)
    return float(np.median(np.abs(lap - np.median(lap))) / 0.6745 / np.sqrt(k * k + k))


def _haze(y: np.ndarray) -> np.ndarray:
    """Scattered light: ``y`` under a broad blur (two box filters, about :data:`HAZE_SIGMA` voxels: a Gaussian's
    shape at a cost independent of its width)."""
    sizes = [max(1, int(round(np.sqrt(6.0 * s * s + 1.0)))) for s in HAZE_SIGMA[-y.ndim :]]
    return ndimage.uniform_filter(ndimage.uniform_filter(y, sizes), sizes)


def _fit(target: np.ndarray, m: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per row: ``target ~ a * m + b * h + c`` by least squares with ``b >= 0`` (haze adds light; where the
    two-term fit wants negative haze the one-term fit is taken)."""
    t, mc, hc = (v - v.mean(1, keepdims=True) for v in (target, m, h))
    smm, shh, smh = (mc * mc).sum(1), (hc * hc).sum(1), (mc * hc).sum(1)
    smt, sht = (mc * t).sum(1), (hc * t).sum(1)
    det = np.maximum(smm * shh - smh * smh, 1e-12)
    a, b = (shh * smt - smh * sht) / det, (smm * sht - smh * smt) / det
    one = b < 0
    a[one], b[one] = smt[one] / np.maximum(smm[one], 1e-12), 0.0
    c = target.mean(1) - a * m.mean(1) - b * h.mean(1)
    return a, b, c


def forward_model(xn: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y`` as the single view would show it, fitted to explain ``xn``: blurred, plus a haze of scattered light,
    scaled plane by plane (least squares on a lateral subsample). The blur comes from a small grid, chosen per
    plane in a volume: a single view's PSF widens with depth, so one blur for the whole volume would call the
    network's (correct) sharpening of deep planes inconsistent; without the haze, its (correct) removal of
    scattered light between structures would be. Gains and offset are smoothed along Z (attenuation varies
    smoothly with depth)."""
    vol = y.ndim == 3
    y3 = y if vol else y[None]
    x3 = xn if vol else xn[None]
    sub = (slice(None), slice(None, None, 2), slice(None, None, 2))
    target = x3[sub].reshape(len(x3), -1)
    haze = _haze(y3) if vol else _haze(y)[None]
    h = haze[sub].reshape(target.shape)
    best_err = np.full(target.shape[0], np.inf)
    out = np.empty(y3.shape, np.float32)
    for sl in _LATERAL:
        lat = ndimage.gaussian_filter(y3, (0.0, sl, sl)) if sl else y3
        for sa in _AXIAL if vol else (0.0,):
            fy = ndimage.gaussian_filter1d(lat, sa, axis=0) if sa else lat
            m = fy[sub].reshape(target.shape)
            a, b, c = _fit(target, m, h)
            if vol and len(a) > 4:
                a, b, c = (ndimage.gaussian_filter1d(v, 2.0) for v in (a, b, c))
            err = np.mean((target - (a[:, None] * m + b[:, None] * h + c[:, None])) ** 2, axis=1)
            if vol and len(err) > 4:  # neighbouring planes see nearly the same PSF: a stable choice along Z
                err = ndimage.gaussian_filter1d(err, 2.0)
            better = err < best_err
            if better.any():  # only the planes this blur explains best are written (not the whole volume)
                best_err[better] = err[better]
                col = (-1, 1, 1)
                a, b, c = (v[better].reshape(col) for v in (a, b, c))
                out[better] = a * fy[better] + b * haze[better] + c
    return out if vol else out[0]


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


def _channel_map(xn, y, w, lead: tuple, space: tuple[int, ...]) -> tuple[int, int, float, float]:
    """Write one channel's consistency map into ``w`` (a volume slab by slab, with a halo for the filters) and
    return its structure count, voxel count and light sums (output, input) over the slabs' cores."""
    if len(space) == 2:
        x2, y2 = np.asarray(xn[lead], np.float32), np.asarray(y[lead], np.float32)
        w[lead] = weight_map(x2, y2)
        return structure_count(x2), x2.size, *light_sums(x2, y2)
    fg, count, out_light, in_light = 0, 0, 0.0, 0.0
    for z0 in range(0, space[0], SLAB):
        z1 = min(space[0], z0 + SLAB)
        a, b = max(0, z0 - _HALO), min(space[0], z1 + _HALO)
        sl = lead + (slice(a, b),)
        x3, y3 = np.asarray(xn[sl], np.float32), np.asarray(y[sl], np.float32)
        w[lead + (slice(z0, z1),)] = weight_map(x3, y3)[z0 - a : z1 - a]
        core, core_y = x3[z0 - a : z1 - a], y3[z0 - a : z1 - a]
        o, i = light_sums(core, core_y)
        fg, count, out_light, in_light = fg + structure_count(core), count + core.size, out_light + o, in_light + i
    return fg, count, out_light, in_light


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
    density, fraction, light, kept = 1.0, None, 1.0, None
    for c in range(shape[0]) if channels else [None]:
        lead = () if c is None else (c,)
        fg, count, out_light, in_light = _channel_map(xn, y, w, lead, shape[1:] if channels else shape)
        d = density_competence(fg / max(count, 1), cal)
        if fraction is None or d < density:  # the channel furthest from the training range speaks
            density, fraction = min(density, d), fg / max(count, 1)
        share = kept_share(out_light, in_light)
        k = light_competence(share, cal)
        if kept is None or k < light:
            light, kept = min(light, k), share
    factor = comp * density * light
    if factor < 1.0:  # one factor for the image: applied after the maps, slab by slab (the map may be on disk)
        for c in range(shape[0]) if channels else [None]:
            lead = () if c is None else (c,)
            n = shape[1] if channels else shape[0]
            for z0 in range(0, n, SLAB):
                sl = lead + (slice(z0, min(n, z0 + SLAB)),)
                w[sl] = np.asarray(w[sl]) * np.float32(factor)
    trusted = float(np.mean(w)) if isinstance(w, np.ndarray) else float(np.mean(np.asarray(w[...])))
    fraction = fraction if cal is not None and cal.foreground else None
    kept = kept if cal is not None and cal.kept_light else None
    return GateResult(w, factor, score, trusted, fraction, kept, {"ood": comp, "density": density, "light": light})


def blend(xn: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``xn + w * (y - xn)``: the input where the gate is 0, the prediction where it is 1."""
    return (np.asarray(xn, np.float32) + w * (np.asarray(y, np.float32) - np.asarray(xn, np.float32))).astype(
        np.float32
    )
