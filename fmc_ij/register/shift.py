"""Global sub-pixel translation by cross-correlation (2D and 3D, torch, batched).

Convention (shared with :mod:`fmc_ij.synthetic.warp` and the elastic step): a displacement ``d``
means ``registered[p] = moving[p + d]``. ``skimage.registration.phase_cross_correlation`` returns
``-d``.

Method: both images are mean-subtracted and multiplied by a separable Tukey window (edges do not
correlate), the cross-power spectrum ``P = conj(F_ref) F_mov`` gives the integer peak, and the peak is
then refined on the *continuous* DFT interpolation of the correlation,
``c(s) = Re sum_k P_k exp(2 pi i k.s)``, by Newton steps with the analytic gradient and Hessian. The sum
is separable, so each step is a few matrix-vector products: exact to floating point instead of the
1/upsample grid of an upsampled DFT, and cheap even for 3D volumes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fmc_ij.errors import FmcInputError

BIN_ABOVE_VOXELS = 2**19  # the integer search runs on 2x-binned copies until below this
# Binned refinement is trusted below this outer-band power fraction; measured, the binned estimate is then
# within ~2e-4 voxel of the full-resolution one (0.1-0.2 x the fraction, in binned voxels).
MAX_OUTER_POWER = 1e-3
MIN_PEAK_Z = 6.0  # independent images reach z ~ 3-4.5; real pairs, even at SNR 0.5, exceed 15


@dataclass
class ShiftResult:
    """Displacement(s) and peak normalised cross-correlation, one row per batch item."""

    shift: np.ndarray  # (..., ndim) voxels, registered[p] = moving[p + shift]
    ncc: np.ndarray  # (...,) normalised cross-correlation at the integer peak, in [-1, 1]
    z: np.ndarray  # (...,) peak height over the correlation map's robust spread (>= 6: a real match)


def tukey(
    n: int, alpha: float = 0.25, device: torch.device | None = None, dtype=torch.float32, offset: float = 0.0
) -> torch.Tensor:
    """Tukey (tapered cosine) window: flat middle, cosine edges over ``alpha * n / 2`` samples each side.

    ``offset``: the window moved by that many (fractional) samples, zero where it leaves ``[0, n - 1]``.
    """
    if n < 3 or alpha <= 0:
        return torch.ones(n, device=device, dtype=dtype)
    x = (torch.arange(n, device=device, dtype=torch.float64) - offset) / (n - 1)
    w = torch.ones(n, dtype=torch.float64, device=device)
    edge = alpha / 2
    lo, hi = x < edge, x > 1 - edge
    w[lo] = 0.5 * (1 + torch.cos(math.pi * (x[lo] / edge - 1)))
    w[hi] = 0.5 * (1 + torch.cos(math.pi * ((x[hi] - 1) / edge + 1)))
    w[(x < 0) | (x > 1)] = 0.0
    return w.to(dtype)


def _window(shape: tuple[int, ...], alpha: float, device, dtype, offset: Sequence[float] | None = None) -> torch.Tensor:
    w = None
    for ax, n in enumerate(shape):
        o = 0.0 if offset is None else float(offset[ax])
        v = tukey(n, alpha, device, dtype, o).reshape([n if i == ax else 1 for i in range(len(shape))])
        w = v if w is None else w * v
    return w


def check_pair(ref: np.ndarray | torch.Tensor, mov: np.ndarray | torch.Tensor, what: str = "registration") -> None:
    """Same shape, 2D/3D, finite, not constant: one-line errors otherwise (no silently wrong answer)."""
    if tuple(ref.shape) != tuple(mov.shape):
        raise FmcInputError(f"{what}: images differ in shape {tuple(ref.shape)} vs {tuple(mov.shape)}; resample first")
    if len(ref.shape) not in (2, 3):
        raise FmcInputError(f"{what}: 2D or 3D images only, got shape {tuple(ref.shape)}")
    for name, im in (("reference", ref), ("moving", mov)):
        t = torch.as_tensor(im)
        if t.numel() == 0:
            raise FmcInputError(f"{what}: the {name} image is empty")
        # A sum is finite if every value is (one fast pass); only a non-finite sum needs the elementwise check,
        # since a float32 sum of huge finite values can overflow.
        if t.is_floating_point() and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
            raise FmcInputError(f"{what}: the {name} image contains NaN or infinite values")
        lo, hi = torch.aminmax(t)
        if float(lo) == float(hi):
            raise FmcInputError(f"{what}: the {name} image is constant; there is nothing to align")


def bin2(x: torch.Tensor, nd: int, axes: Sequence[int] | None = None) -> torch.Tensor:
    """2x binning (mean) of the last ``nd`` axes (or of ``axes`` among them), an odd last row dropped:
    pairwise sums axis by axis, a few times faster than ``avg_pool`` on CPU."""
    first = x.dim() - nd
    axes = range(nd) if axes is None else axes
    for a in axes:
        ax = first + a
        n = x.shape[ax] // 2 * 2
        x = x.narrow(ax, 0, n)
        idx = [slice(None)] * x.dim()
        idx[ax] = slice(0, n, 2)
        even = x[tuple(idx)]
        idx[ax] = slice(1, n, 2)
        x = even + x[tuple(idx)]
    return x * (0.5 ** len(axes))


def _prepare(x: torch.Tensor, nd: int, alpha: float, offset: Sequence[float] | None = None) -> torch.Tensor:
    dims = tuple(range(-nd, 0))
    x = x - x.mean(dim=dims, keepdim=True)
    return x * _window(tuple(x.shape[-nd:]), alpha, x.device, x.dtype, offset)


def _freqs(shape: tuple[int, ...], device, dtype) -> list[torch.Tensor]:
    return [torch.fft.fftfreq(n, device=device, dtype=dtype) for n in shape]


def _half_weights(n_cols: int, half_n: int, device, dtype=torch.float32) -> torch.Tensor:
    """Column weights of an ``rfft`` half spectrum of full length ``half_n``: 2 for the columns that stand for
    their mirrored twins, so sums over it equal sums over the full spectrum of a real signal."""
    kx = torch.arange(n_cols, device=device)
    return torch.where((kx == 0) | (2 * kx == half_n), 1.0, 2.0).to(dtype)


@dataclass
class _Band:
    """A low-pass band of a cross-spectrum: kept indices and frequencies per axis, half-spectrum weights."""

    idx: list[torch.Tensor]
    ks: list[torch.Tensor]
    w: torch.Tensor | None

    def apply(self, P: torch.Tensor) -> torch.Tensor:
        P = P * self.w if self.w is not None else P
        nd = len(self.idx)
        for ax, i in enumerate(self.idx):
            P = P.index_select(P.dim() - nd + ax, i)
        return P


def _lowpass(P: torch.Tensor, nd: int, keep: float = 0.9995, min_keep: int = 16, half_n: int | None = None) -> _Band:
    """The frequency band holding ``keep`` of |P| per axis (plus everything below ``min_keep``).

    Dropping the same high frequencies from both images is a symmetric filter: the peak position does not
    move, and Newton steps get cheaper by the square (2D) or cube (3D) of the crop factor.
    ``half_n``: the last axis is an ``rfft`` half spectrum of that full length (see :func:`_half_weights`).
    """
    w = _half_weights(P.shape[-1], half_n, P.device, P.real.dtype) if half_n is not None else None
    mag = (P * w if w is not None else P).abs().sum(0)
    ks, kept = [], []
    for ax in range(nd):
        n = P.shape[-nd + ax]
        half = half_n is not None and ax == nd - 1
        k = (
            torch.arange(n, device=P.device).to(torch.float32)
            if half
            else torch.fft.fftfreq(n, 1.0 / n, device=P.device).abs()
        )
        prof = mag.sum(tuple(a for a in range(nd) if a != ax))
        order = torch.argsort(k)
        cum = torch.cumsum(prof[order], 0) / prof.sum().clamp_min(1e-30)
        cut = int(torch.searchsorted(cum, torch.tensor(keep, device=P.device, dtype=cum.dtype)))
        kc = max(float(k[order[min(cut, n - 1)]]), float(min(min_keep, (half_n if half else n) // 2)))
        idx = torch.nonzero(k <= kc).flatten()
        kept.append(idx)
        freqs = (
            torch.arange(n, device=P.device, dtype=torch.float64) / half_n
            if half
            else torch.fft.fftfreq(n, device=P.device, dtype=torch.float64)
        )
        ks.append(freqs[idx])
    return _Band(kept, ks, w)


def _refine(
    P: torch.Tensor, s0: torch.Tensor, iters: int = 8, half_n: int | None = None, band: _Band | None = None
) -> torch.Tensor:
    """Newton ascent of c(s) = Re sum_k P_k e^{2 pi i k.s} from the integer peak ``s0`` (batch, nd).

    ``band``: the low-pass band to use (default: :func:`_lowpass` of ``P``).
    """
    nd = s0.shape[-1]
    band = band or _lowpass(P, nd, half_n=half_n)
    P, ks = band.apply(P), band.ks
    s = s0.clone().to(torch.float64)
    P = P.to(torch.complex128)
    iters = iters if P.shape[0] == 1 else min(iters, 5)
    for _ in range(iters):
        # e_a[b, n] = exp(2 pi i k_a s_a); derivative factors (2 pi i k_a)^m
        e = [torch.exp(2j * math.pi * k[None, :] * s[:, a : a + 1]) for a, k in enumerate(ks)]
        d = [2j * math.pi * k[None, :].to(torch.complex128) for k in ks]

        # Contract P with [e_a, d_a e_a, d_a^2 e_a] along each axis in turn (one pass over P): c[:, m0, m1(, m2)]
        # holds every derivative of c(s) up to second order, m_a being the order along axis a.
        vs = [torch.stack([e[a] * d[a] ** m for m in range(3)], -1) for a in range(nd)]  # (b, n_a, 3)
        if nd == 2:
            c = torch.einsum("biq,bij,bjp->bqp", vs[0], P, vs[1]).real
        else:
            t = torch.einsum("bijk,bkr->bijr", P, vs[2])
            t = torch.einsum("bijr,bjq->biqr", t, vs[1])
            c = torch.einsum("biqr,bip->bpqr", t, vs[0]).real
        grad = torch.empty(s.shape[0], nd, dtype=torch.float64, device=s.device)
        hess = torch.empty(s.shape[0], nd, nd, dtype=torch.float64, device=s.device)
        for i in range(nd):
            grad[:, i] = c[(slice(None), *[int(a == i) for a in range(nd)])]
            for j in range(i, nd):
                hess[:, i, j] = hess[:, j, i] = c[(slice(None), *[int(a == i) + int(a == j) for a in range(nd)])]
        # Newton step on a concave peak; fall back to a tiny gradient step where the Hessian is not negative.
        step = -torch.linalg.solve(hess, grad.unsqueeze(-1)).squeeze(-1)
        bad = (torch.linalg.eigvalsh(hess).max(-1).values >= 0) | ~torch.isfinite(step).all(-1)
        step = torch.where(bad[:, None], torch.zeros_like(step), step).clamp(-0.5, 0.5)
        s = s + step
        if float(step.abs().max()) < 1e-6:
            break
    # Stay within one voxel of the integer peak: beyond it the Newton model was wrong.
    return torch.maximum(torch.minimum(s, s0 + 1.0), s0 - 1.0)


def fft_size(n: int) -> int:
    """The largest length <= ``n`` with no prime factor above 7 (FFTs of such lengths are fast)."""
    for m in range(n, 0, -1):
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
    return n


def _outer_power(spec: torch.Tensor, shape: Sequence[int]) -> list[float]:
    """Per axis, the fraction of the correlated power (real part of an aligned cross-spectrum) beyond 0.375
    cycles per voxel along that axis: where a binned image's aliased content lands.

    ``spec`` is an ``rfftn`` half spectrum of ``shape``. Noise does not correlate, so it adds nothing on average.
    """
    nd = len(shape)
    re = spec.real.reshape(spec.shape[-nd:]) * _half_weights(spec.shape[-1], shape[-1], spec.device)
    total = float(re.sum())
    out = []
    for ax in range(nd):
        n = shape[ax]
        k = (torch.fft.rfftfreq if ax == nd - 1 else torch.fft.fftfreq)(n, device=spec.device).abs()
        outer = float(re.index_select(ax, torch.nonzero(k > 0.375).flatten()).sum())
        out.append(max(outer, 0.0) / total if total > 0 else 1.0)
    return out


def _refine_on_overlap(
    r: torch.Tensor,
    m: torch.Tensor,
    s0: torch.Tensor,
    window: float,
    *,
    max_iter: int = 6,
    tol: float = 1e-4,
    outer: bool = True,
) -> tuple[torch.Tensor, list[float] | None]:
    """Sub-pixel shift on the whole overlap of ``r`` and ``m`` at the starting estimate ``s0``.

    Both images are cropped to their overlap at the integer part of ``s0``, and the shift is measured on the
    continuous correlation. The moving crop's window is moved by the current estimate: with both windows on
    the same content the windowed images are exact shifted copies and the peak is unbiased, while equal
    windows pull it towards zero in proportion to the offset. A moved window needs no resampling of the
    image (one FFT per step); the steps are iterated to convergence (Aitken extrapolation after two).
    The whole overlap is used: a sub-region would weight the images' own position-dependent differences
    (blur, attenuation) differently and give another answer (it is only trimmed, centred, to a length whose
    FFT is fast).

    Returns the shift and (if ``outer``) the aligned correlated power's outer-band fractions per axis (see
    :func:`_outer_power`).
    """
    nd = r.dim()
    ints = [int(v) for v in torch.floor(s0 + 0.5).tolist()]
    sl_r, sl_m = [], []
    for n, k in zip(r.shape, ints):
        size = n - abs(k)
        if size < 8:
            raise FmcInputError(f"registration: shift {k} leaves no usable overlap on an axis of {n} voxels")
        a0 = max(0, -k) + (size - fft_size(size)) // 2
        size = fft_size(size)
        sl_r.append(slice(a0, a0 + size))
        sl_m.append(slice(a0 + k, a0 + k + size))
    rc, mc = r[tuple(sl_r)], m[tuple(sl_m)]
    dims = tuple(range(-nd, 0))
    fr = torch.conj(torch.fft.rfftn(_prepare(rc[None], nd, window), dim=dims))
    base = torch.tensor(ints, dtype=torch.float64, device=r.device)
    frac = (s0.to(torch.float64) - base)[None]
    prev: torch.Tensor | None = None
    band: _Band | None = None
    for it in range(max_iter):
        spec = fr * torch.fft.rfftn(_prepare(mc[None], nd, window, frac[0].tolist()), dim=dims)
        band = band or _lowpass(spec, nd, half_n=rc.shape[-1])  # the first step's band serves them all
        est = _refine(spec, frac, band=band)
        step = est - frac
        if it == 1 and prev is not None:
            # Each estimate moves (1 - beta) of the way to the fixed point: two steps give beta (Aitken), per axis.
            denom = prev - step
            ok = denom.abs() > 1e-9
            jump = torch.where(ok, prev * step / torch.where(ok, denom, torch.ones_like(denom)), step)
            frac = frac + jump.clamp(-1.0, 1.0)
        else:
            frac = est
        prev = step
        if float(step.abs().max()) < tol:
            break
    return frac[0] + base, (_outer_power(spec, rc.shape) if outer else None)


def _refine_multires(
    full: tuple[torch.Tensor, torch.Tensor],
    binned: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]],
    factors: tuple[int, ...],
    s0: torch.Tensor,
    window: float,
    max_outer: float,
) -> torch.Tensor:
    """Coarse-to-fine sub-pixel refinement on 2x-binned copies, axis by axis.

    The integer peak ``s0`` (in voxels of the copy binned by ``factors``) is refined there; then every axis whose
    aligned cross-spectrum holds more than ``max_outer`` of its correlated power in the outer band is un-binned
    (once per decade above ``max_outer``) and the estimate refined again, until no axis asks for it. Binning is a
    shift-invariant filter, so a binned pair gives the exact shift (scaled) unless content above the binned grid's
    Nyquist frequency aliases into it, and such content shows up at the top of the binned band first. Microscopy
    images are mostly oversampled laterally, so the full-resolution FFTs (4x the cost in 2D, 8x in 3D) are rarely
    needed; anisotropic volumes keep their coarse axis at full resolution only. ``binned`` caches copies by per-axis
    factor (full resolution is ``full``).
    """
    nd = len(factors)
    f = tuple(factors)
    s = s0
    while True:
        r, m = _binned(full, binned, f)
        s, outer = _refine_on_overlap(r, m, s, window, outer=any(k > 1 for k in f))
        # Aliased power drops ~10x or more per halving of the bin: skip the levels that cannot be enough.
        finer = tuple(
            max(1, k >> math.ceil(math.log10(o / max_outer))) if k > 1 and o > max_outer else k
            for k, o in zip(f, outer or [0.0] * nd)
        )
        if finer == f:
            return s * torch.tensor(f, dtype=s.dtype, device=s.device)
        s = s * torch.tensor([a / b for a, b in zip(f, finer)], dtype=s.dtype, device=s.device)
        f = finer


def _binned(full, cache, f: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair binned by per-axis factors ``f``, from the coarsest cached copy that is finer on every axis."""
    if all(k == 1 for k in f):
        return full
    if f not in cache:
        ok = [g for g in cache if all(a <= b and b % a == 0 for a, b in zip(g, f))]
        g = max(ok, key=lambda t: int(np.prod(t))) if ok else (1,) * len(f)
        r, m = cache[g] if ok else full
        g = list(g)
        while g != list(f):
            axes = [a for a in range(len(f)) if g[a] < f[a]]
            r, m = bin2(r, len(f), axes), bin2(m, len(f), axes)
            g = [k * 2 if a in axes else k for a, k in enumerate(g)]
        cache[f] = (r, m)
    return cache[f]


def estimate_shift(
    ref: np.ndarray | torch.Tensor,
    mov: np.ndarray | torch.Tensor,
    *,
    ndim: int | None = None,
    max_shift: float | None = None,
    window: float = 0.25,
    subpixel: bool = True,
    max_outer_power: float = MAX_OUTER_POWER,
    device: str | torch.device | None = None,
) -> ShiftResult:
    """Sub-pixel translation between two images (or two batches of blocks).

    Parameters
    ----------
    ref, mov : array or tensor
        ``(*spatial)`` or ``(batch, *spatial)``; 2D or 3D spatial.
    ndim : int, optional
        Number of spatial axes (default: all axes, i.e. no batch).
    max_shift : float, optional
        Only peaks within this many voxels of zero are considered.
    window : float
        Tukey taper fraction (0 disables; edges then correlate and bias the peak towards 0).
    subpixel : bool
        Refine the integer peak on the continuous correlation.
    max_outer_power : float
        Large images are refined coarse to fine on 2x-binned copies; an axis stays binned once its aligned
        cross-spectrum holds less than this fraction in its outer band (no aliasing to speak of).
        0: always refine at full resolution.
    device : str or torch.device, optional
        Default: where ``ref`` lives (CPU for numpy input).

    Returns
    -------
    ShiftResult
        ``shift`` with ``registered[p] = mov[p + shift]`` and the peak NCC.
    """
    r = torch.as_tensor(np.asarray(ref) if not torch.is_tensor(ref) else ref)
    m = torch.as_tensor(np.asarray(mov) if not torch.is_tensor(mov) else mov)
    nd = ndim or r.dim()
    if r.dim() == nd:
        check_pair(r, m)
    dev = torch.device(device) if device is not None else r.device
    batched = r.dim() > nd
    r = r.to(dev, torch.float32).reshape(-1, *r.shape[-nd:])
    m = m.to(dev, torch.float32).reshape(-1, *m.shape[-nd:])
    full = (r[0], m[0])
    binned: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
    factor = 1
    if not batched:
        # The integer peak does not need full resolution: bin large images (refinement climbs back up).
        while int(np.prod(r.shape[-nd:])) > BIN_ABOVE_VOXELS and min(r.shape[-nd:]) >= 64:
            # Lateral axes first, the copy kept: the refinement of an axially under-sampled volume wants it.
            r, m = bin2(r, nd, range(nd - 2, nd)), bin2(m, nd, range(nd - 2, nd))
            binned[(factor,) * (nd - 2) + (factor * 2,) * 2] = (r[0], m[0])
            if nd == 3:
                r, m = bin2(r, nd, [0]), bin2(m, nd, [0])
            factor *= 2
            binned[(factor,) * nd] = (r[0], m[0])
    shape = tuple(r.shape[-nd:])
    rw, mw = _prepare(r, nd, window), _prepare(m, nd, window)
    dims = tuple(range(-nd, 0))
    fr, fm = torch.fft.rfftn(rw, dim=dims), torch.fft.rfftn(mw, dim=dims)
    P = torch.conj(fr) * fm
    cc = torch.fft.irfftn(P, s=shape, dim=dims)
    norm = torch.sqrt((rw * rw).sum(dims) * (mw * mw).sum(dims)).clamp_min(1e-30)
    # Peak significance over the whole map (mean and spread of all lags).
    flat_all = cc.reshape(cc.shape[0], -1)
    mean, spread = flat_all.mean(-1), flat_all.std(-1, correction=0)
    lags = [torch.fft.fftfreq(n, 1.0 / n, device=dev) for n in shape]
    if max_shift is not None:
        # Only lags within max_shift take part in the integer search: cut them out (a small copy).
        keep = [torch.nonzero(lg.abs() <= max_shift / factor).flatten() for lg in lags]
        for ax, k in enumerate(keep):
            cc = cc.index_select(cc.dim() - nd + ax, k)
        lags = [lg[k] for lg, k in zip(lags, keep)]
    flat = cc.reshape(cc.shape[0], -1)
    peak_val, idx = flat.max(-1)
    z = ((peak_val - mean) / spread.clamp_min(1e-30)).cpu().numpy()
    if not batched and z[0] < MIN_PEAK_Z:
        raise FmcInputError(
            f"registration: no significant cross-correlation peak (z = {z[0]:.1f} < {MIN_PEAK_Z}); the images share "
            "no structure in their overlap (wrong pair, no overlap, or pure noise)"
        )
    pos = torch.unravel_index(idx, tuple(cc.shape[-nd:]))
    s0 = torch.stack([lg[p] for lg, p in zip(lags, pos)], -1).to(torch.float64)
    if subpixel and not batched:
        s = _refine_multires(full, binned, (factor,) * nd, s0[0], window, max_outer_power).unsqueeze(0)
    elif subpixel:
        s = _refine(P, s0, half_n=shape[-1])
    else:
        s = s0
    out_shape = (-1, nd) if batched else (nd,)
    ncc = (peak_val / norm).cpu().numpy()
    return ShiftResult(
        s.cpu().numpy().reshape(out_shape), ncc if batched else ncc.reshape(()), z if batched else z.reshape(())
    )
