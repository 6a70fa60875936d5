"""Resolution: bead FWHM by Gaussian fitting, the radially averaged power spectrum, and FRC.

- :func:`bead_fwhm` finds isolated spots and fits each with a pixel-integrated Gaussian (error
  functions, so sub-pixel-sized PSFs are not biased by sampling) plus a constant background; the
  FWHM distribution is what Wang et al. 2019 (Fig. 4) compare between input, output and ground truth.
- :func:`radial_power_spectrum` averages |F|^2 over rings (2D) or lateral rings of every plane (3D).
- :func:`frc` correlates two images ring by ring; :func:`frc_resolution` reads the 1/7 crossing.
  :func:`frc_single` needs one image only: it splits the pixel lattice into its two diagonal
  sub-lattices (independent noise, same signal), undoes their half-pixel shift in Fourier space and
  correlates them (one-image FRC as in Koho et al. 2019).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage, optimize
from scipy.special import erf

from fmc_ij.errors import FmcInputError

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def find_spots(
    image: np.ndarray,
    *,
    sigma: float = 1.0,
    min_distance: int = 4,
    threshold: float | None = None,
    border: int | Sequence[int] | None = None,
) -> np.ndarray:
    """Local maxima of the smoothed image above ``threshold`` (default: median + 5 robust SDs).

    ``border`` (per axis) excludes peaks that close to the edge; default ``min_distance``.
    """
    from skimage.feature import peak_local_max

    sm = ndimage.gaussian_filter(np.asarray(image, np.float32), sigma)
    if threshold is None:
        med = float(np.median(sm))
        mad = float(np.median(np.abs(sm - med))) * 1.4826
        threshold = med + 5.0 * max(mad, 1e-12)
    return peak_local_max(
        sm,
        min_distance=min_distance,
        threshold_abs=threshold,
        exclude_border=tuple(np.broadcast_to(min_distance if border is None else border, (sm.ndim,)).tolist()),
    )


def _integrated_gauss(n: int, c: float, s: float) -> np.ndarray:
    edges = np.arange(n + 1, dtype=np.float64) - 0.5
    return 0.5 * np.diff(erf((edges - c) / (math.sqrt(2.0) * s)))


def fit_gaussian(crop: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Least-squares fit of a pixel-integrated, axis-aligned Gaussian + background to a 2D/3D crop.

    Returns centre (pixels, crop coordinates), sigmas (pixels), amplitude (integrated), background.
    """
    crop = np.asarray(crop, np.float64)
    nd = crop.ndim
    bg0 = float(np.percentile(crop, 10))
    amp0 = float(max(crop.sum() - bg0 * crop.size, 1e-9))
    c0 = np.array(crop.shape, float) / 2 - 0.5
    p0 = np.concatenate([c0, np.full(nd, 1.5), [amp0, bg0]])

    def model(p: np.ndarray) -> np.ndarray:
        prof = [_integrated_gauss(n, p[i], abs(p[nd + i]) + 1e-6) for i, n in enumerate(crop.shape)]
        out = prof[0]
        for q in prof[1:]:
            out = np.multiply.outer(out, q)
        return p[2 * nd] * out + p[2 * nd + 1]

    res = optimize.least_squares(lambda p: (model(p) - crop).ravel(), p0, method="lm", max_nfev=400)
    p = res.x
    return p[:nd], np.abs(p[nd : 2 * nd]), float(p[2 * nd]), float(p[2 * nd + 1])


def bead_fwhm(
    image: np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    half_width: int | Sequence[int] = 7,
    min_distance: int | None = None,
    threshold: float | None = None,
    max_beads: int = 500,
) -> dict[str, np.ndarray]:
    """FWHM of every isolated bead in a 2D or 3D image, per axis, in physical units.

    Parameters
    ----------
    image : ndarray
        2D (YX) or 3D (ZYX) image of sub-resolution beads.
    spacing : sequence of float, optional
        Pixel size per axis (e.g. nm); the FWHM is returned in the same unit (pixels if omitted).
    half_width : int or sequence of int
        Fit window half-size per axis, in pixels (about 2 FWHM works well).
    min_distance : int, optional
        Beads closer than this (pixels) to a brighter one are skipped; default ``2 * half_width``.
    threshold, max_beads
        Detection threshold (see :func:`find_spots`) and the cap on fits.

    Returns
    -------
    dict
        ``fwhm``: (n, ndim) per-axis FWHM; ``centres``: (n, ndim) in pixels; ``amplitude``: (n,).
        Fits that did not converge inside the window are dropped.
    """
    img = np.asarray(image, np.float64)
    nd = img.ndim
    if nd not in (2, 3):
        raise FmcInputError(f"bead FWHM needs a 2D or 3D image, got {nd} dimensions")
    hw = np.broadcast_to(np.asarray(half_width, int), (nd,))
    spacing_arr = np.ones(nd) if spacing is None else np.asarray(spacing, float)[-nd:]
    md = int(min_distance or 2 * hw[-1])
    peaks = find_spots(img, min_distance=md, threshold=threshold, border=tuple(hw.tolist()))
    fwhm, centres, amps = [], [], []
    for pk in peaks[:max_beads]:
        lo, hi = pk - hw, pk + hw + 1
        if (lo < 0).any() or (hi > np.array(img.shape)).any():
            continue
        crop = img[tuple(slice(a, b) for a, b in zip(lo, hi))]
        try:
            c, s, amp, _ = fit_gaussian(crop)
        except (ValueError, RuntimeError):
            continue
        if amp <= 0 or (s > hw).any() or (s < 0.2).any() or (np.abs(c - hw) > 2).any():
            continue
        fwhm.append(s * FWHM_PER_SIGMA * spacing_arr)
        centres.append(c + lo)
        amps.append(amp)
    return {
        "fwhm": np.array(fwhm).reshape(-1, nd),
        "centres": np.array(centres).reshape(-1, nd),
        "amplitude": np.array(amps),
    }


def _radial_bins(shape: tuple[int, int], spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Integer ring index of every 2D frequency (ring width = the coarser axis' frequency step) and ring centres."""
    fy = np.fft.fftfreq(shape[0], spacing[0])
    fx = np.fft.rfftfreq(shape[1], spacing[1])
    r = np.hypot(fy[:, None], fx[None, :])
    df = max(1.0 / (shape[0] * spacing[0]), 1.0 / (shape[1] * spacing[1]))
    idx = np.rint(r / df).astype(np.int64)
    nyq = min(0.5 / spacing[0], 0.5 / spacing[1])
    n_bins = int(nyq / df) + 1
    return idx, np.arange(n_bins) * df


def radial_power_spectrum(image: np.ndarray, spacing: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum up to the Nyquist frequency.

    2D images are transformed whole; for 3D, the lateral spectrum of every plane is averaged (the axial
    sampling of light-sheet data is usually much coarser). The mean is removed and a Hann window
    applied so edges do not leak a cross into the spectrum.

    Returns
    -------
    freq, power : ndarray
        Ring centres in cycles per unit of ``spacing`` (cycles/pixel if omitted) and mean power.
    """
    img = np.asarray(image, np.float64)
    if img.ndim not in (2, 3):
        raise FmcInputError(f"power spectrum needs a 2D or 3D image, got {img.ndim} dimensions")
    planes = img if img.ndim == 3 else img[None]
    sp = (1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)[-2:]
    win = np.outer(np.hanning(planes.shape[1]), np.hanning(planes.shape[2]))
    idx, freq = _radial_bins(planes.shape[1:], sp)
    power = np.zeros(idx.max() + 1)
    for p in planes:
        f = np.fft.rfft2((p - p.mean()) * win)
        power += np.bincount(idx.ravel(), (np.abs(f) ** 2).ravel(), minlength=power.size)
    counts = np.bincount(idx.ravel(), minlength=power.size)
    n = len(freq)
    return freq, power[:n] / np.maximum(counts[:n], 1) / len(planes)


def frc(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of two 2D images (for 3D, the lateral rings of all planes pooled)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim not in (2, 3):
        raise FmcInputError(f"FRC needs two 2D or 3D images of one shape, got {a.shape} and {b.shape}")
    pa, pb = (v if v.ndim == 3 else v[None] for v in (a, b))
    sp = (1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)[-2:]
    win = np.outer(np.hanning(pa.shape[1]), np.hanning(pa.shape[2]))
    idx, freq = _radial_bins(pa.shape[1:], sp)
    n = idx.max() + 1
    num, da, db = np.zeros(n), np.zeros(n), np.zeros(n)
    for x, y in zip(pa, pb):
        fa, fb = np.fft.rfft2((x - x.mean()) * win), np.fft.rfft2((y - y.mean()) * win)
        num += np.bincount(idx.ravel(), (fa * np.conj(fb)).real.ravel(), minlength=n)
        da += np.bincount(idx.ravel(), (np.abs(fa) ** 2).ravel(), minlength=n)
        db += np.bincount(idx.ravel(), (np.abs(fb) ** 2).ravel(), minlength=n)
    k = len(freq)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = num[:k] / np.sqrt(da[:k] * db[:k])
    return freq, np.nan_to_num(curve)


def frc_single(image: np.ndarray, spacing: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One-image FRC: the two diagonal sub-lattices, realigned by a half-pixel Fourier shift, correlated.

    Frequencies are in the original image's units (sub-lattices have twice the pixel size).
    """
    img = np.asarray(image, np.float64)
    planes = img if img.ndim == 3 else img[None]
    ny, nx = (planes.shape[1] // 2) * 2, (planes.shape[2] // 2) * 2
    a = planes[:, 0:ny:2, 0:nx:2]
    b = planes[:, 1:ny:2, 1:nx:2]
    # b sits (+1/2, +1/2) sub-lattice pixels from a: shift it back so both sample the same points.
    ky = np.fft.fftfreq(b.shape[1])[:, None]
    kx = np.fft.fftfreq(b.shape[2])[None, :]
    phase = np.exp(2j * np.pi * (0.5 * ky + 0.5 * kx))
    b = np.fft.ifft2(np.fft.fft2(b) * phase).real
    sp = (1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)[-2:]
    return frc(a if img.ndim == 3 else a[0], b if img.ndim == 3 else b[0], (2 * sp[0], 2 * sp[1]))


def frc_resolution(freq: np.ndarray, curve: np.ndarray, threshold: float = 1.0 / 7.0) -> float:
    """Resolution = 1 / the first frequency where the (lightly smoothed) FRC drops below ``threshold``.

    Returns the Nyquist-limited value (1 / the last frequency) if it never drops, nan if it starts below.
    """
    sm = ndimage.uniform_filter1d(curve, 3, mode="nearest")
    below = np.nonzero(sm[1:] < threshold)[0]
    if len(below) == 0:
        return float(1.0 / freq[-1])
    i = below[0] + 1
    if i <= 1:
        return math.nan
    # Linear interpolation of the crossing between rings i-1 and i.
    f0, f1, c0, c1 = freq[i - 1], freq[i], sm[i - 1], sm[i]
    f = f0 + (c0 - threshold) * (f1 - f0) / (c0 - c1) if c0 != c1 else f1
    return float(1.0 / f)
