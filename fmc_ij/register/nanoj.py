"""NanoJ-Core-compatible registration (2D): the cross-correlation map, MAX_FITTING peak, elastic mask.

Reproduces NanoJ-Core's ``CrossCorrelationMap`` / ``CrossCorrelationElastic`` as described in
``shared/specs/nanoj.md`` so numbers match what Fiji users get from *Register Channels* and
*Estimate Drift*:

- the map: central even square crop, circular cross-correlation (NanoJ uses a DHT; the FFT gives the
  same map), quadrants swapped, both axes flipped, values mapped linearly from [min, max] onto the
  Pearson correlations at the arg-min and arg-max lags, last row/column dropped;
- the peak: the maximum of the ImageJ bicubic (Catmull-Rom, a = 0.5) interpolation of the map, found by
  Nelder-Mead from the integer maximum within +-1 px; shift = (w/2 - x - 0.5, h/2 - y - 0.5) in ImageJ's
  ``translate`` convention (content moves by +shift), i.e. minus our displacement convention;
- the elastic mask: blocks per axis (default 5), vectors kept if the peak >= min similarity,
  inverse-distance weights ((D - d)/(D d))^2 with d = distance to the block centre + 1, then a Gaussian
  blur with sigma = max(block width, block height) // 2; applied with bilinear interpolation, clamped.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, optimize

from fmc_ij.errors import FmcInputError
from fmc_ij.register.ij_ops import cubic
from fmc_ij.register.shift import check_pair


def _pearson_at(ref: np.ndarray, mov: np.ndarray, dy: int, dx: int) -> float:
    """Pearson correlation of the overlap of ``ref`` and ``mov`` displaced by (dy, dx)."""
    h, w = ref.shape
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    a, b = ref[ys, xs].ravel(), mov[yd, xd].ravel()
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def cross_correlation_map(ref: np.ndarray, mov: np.ndarray, *, normalized: bool = True, radius: int | None = None):
    """NanoJ's cross-correlation map ((N-1) x (N-1), or (2r+1)^2 when ``radius`` is given)."""
    ref, mov = np.asarray(ref, np.float64), np.asarray(mov, np.float64)
    check_pair(ref, mov, "NanoJ cross-correlation")
    if ref.ndim != 2:
        raise FmcInputError("NanoJ mode is 2D (NanoJ-Core registers planes); use the native engine for volumes")
    n = min(ref.shape) // 2 * 2
    y0, x0 = (ref.shape[0] - n) // 2, (ref.shape[1] - n) // 2
    r, m = ref[y0 : y0 + n, x0 : x0 + n], mov[y0 : y0 + n, x0 : x0 + n]
    # Circular c[s] = sum_p r[p] m[p - s]; after fftshift index i <-> s = i - n/2; NanoJ then flips both axes.
    cc = np.fft.ifft2(np.fft.fft2(r) * np.conj(np.fft.fft2(m))).real
    cc = np.fft.fftshift(cc)[::-1, ::-1]
    if normalized:
        lo, hi = cc.min(), cc.max()
        ilo, ihi = np.unravel_index(np.argmin(cc), cc.shape), np.unravel_index(np.argmax(cc), cc.shape)
        # Flipped index j <-> lag s = n/2 - 1 - j of m relative to r (see above).
        plo = _pearson_at(r, m, n // 2 - 1 - ilo[0], n // 2 - 1 - ilo[1])
        phi = _pearson_at(r, m, n // 2 - 1 - ihi[0], n // 2 - 1 - ihi[1])
        cc = (cc - lo) / (hi - lo) * (phi - plo) + plo if hi > lo else np.zeros_like(cc)
    cc = cc[:-1, :-1]
    if radius is not None:
        c = cc.shape[0] // 2
        cc = cc[c - radius : c + radius + 1, c - radius : c + radius + 1]
    return cc


def bicubic(img: np.ndarray, y: float, x: float) -> float:
    """ImageJ ``getBicubicInterpolatedPixel`` (Catmull-Rom, a = 0.5; NaN within 1 px of the border)."""
    h, w = img.shape
    if x < 1 or y < 1 or x >= w - 2 or y >= h - 2:
        return math.nan
    u0, v0 = int(math.floor(x)), int(math.floor(y))
    us, vs = np.arange(u0 - 1, u0 + 3), np.arange(v0 - 1, v0 + 3)
    return float(cubic(vs - y) @ img[np.ix_(vs, us)] @ cubic(us - x))


def subpixel_peak(ccm: np.ndarray) -> tuple[float, float, float]:
    """MAX_FITTING: (shift_y, shift_x, peak value) from a NanoJ map, ImageJ ``translate`` convention."""
    iy, ix = np.unravel_index(int(np.nanargmax(ccm)), ccm.shape)

    def neg(p: np.ndarray) -> float:
        y, x = p
        if abs(y - iy) > 1 or abs(x - ix) > 1:
            return math.inf
        v = bicubic(ccm, y, x)
        return -v if math.isfinite(v) else math.inf

    def run(x0: np.ndarray):
        simplex = np.array([x0, x0 + [0.1, 0.0], x0 + [0.0, 0.1]])
        opts = {"xatol": 1e-7, "fatol": 1e-12, "initial_simplex": simplex}
        return optimize.minimize(neg, x0, method="Nelder-Mead", options=opts)

    best = run(np.array([iy, ix], float))
    for _ in range(2):  # ImageJ's Minimizer restarts twice
        best = run(best.x)
    y, x = best.x if math.isfinite(best.fun) else np.array([iy, ix], float)
    h, w = ccm.shape
    return h / 2 - y - 0.5, w / 2 - x - 0.5, float(-best.fun if math.isfinite(best.fun) else ccm[iy, ix])


def nanoj_shift(ref: np.ndarray, mov: np.ndarray) -> tuple[float, float]:
    """NanoJ's rigid estimate, ``(shift_x, shift_y)`` in its ``translate`` convention (x first, as NanoJ prints)."""
    sy, sx, _ = subpixel_peak(cross_correlation_map(ref, mov))
    return sx, sy


def nanoj_elastic_mask(
    ref: np.ndarray, mov: np.ndarray, *, blocks_per_axis: int = 5, min_similarity: float = 0.5, max_shift: int = 0
) -> np.ndarray:
    """NanoJ's translation mask as a (2, H, W) field (dy, dx): ``apply_nanoj_mask(mov, mask)`` registers ``mov``."""
    ref, mov = np.asarray(ref, np.float64), np.asarray(mov, np.float64)
    check_pair(ref, mov, "NanoJ elastic")
    h, w = ref.shape
    bh, bw = h // blocks_per_axis, w // blocks_per_axis
    if bh < 8 or bw < 8:
        raise FmcInputError(f"NanoJ elastic: {blocks_per_axis} blocks per axis leave blocks under 8 px on {ref.shape}")
    vecs = []
    for by in range(blocks_per_axis):
        for bx in range(blocks_per_axis):
            sl = (slice(by * bh, (by + 1) * bh), slice(bx * bw, (bx + 1) * bw))
            # The elastic routine correlates (moving, reference): its vectors are the sampling offsets that
            # the apply step adds (out(p) = mov(p + v)), i.e. minus the rigid ``translate`` shift.
            ccm = cross_correlation_map(mov[sl], ref[sl], radius=max_shift or None)
            sy, sx, peak = subpixel_peak(ccm)
            if peak >= min_similarity:
                vecs.append((by * bh + bh / 2, bx * bw + bw / 2, sy, sx))
    field = np.zeros((2, h, w))
    if not vecs:
        return field
    v = np.array(vecs)
    if len(v) == 1:
        field[0], field[1] = v[0, 2], v[0, 3]
    else:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        big_d = math.hypot(w, h)
        num_y, num_x, den = np.zeros((h, w)), np.zeros((h, w)), np.zeros((h, w))
        for cy, cx, sy, sx in v:
            d = np.hypot(yy - cy, xx - cx) + 1
            wgt = ((big_d - d) / (big_d * d)) ** 2
            num_y += wgt * sy
            num_x += wgt * sx
            den += wgt
        field[0], field[1] = num_y / den, num_x / den
    sigma = max(bw, bh) // 2
    return np.stack([ndimage.gaussian_filter(f, sigma, mode="nearest") for f in field])


def apply_nanoj_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """out(i, j) = bilinear(image, i + dy, j + dx) with clamped coordinates (NanoJ's apply step)."""
    h, w = image.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    coords = np.stack([np.clip(yy + mask[0], 0, h - 1), np.clip(xx + mask[1], 0, w - 1)])
    return ndimage.map_coordinates(np.asarray(image, np.float64), coords, order=1, mode="nearest")
