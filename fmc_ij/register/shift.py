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
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fmc_ij.errors import FmcInputError

BIN_ABOVE_VOXELS = 2**19  # the integer search runs on 2x-binned copies until below this
MIN_PEAK_Z = 6.0  # independent images reach z ~ 3-4.5; real pairs, even at SNR 0.5, exceed 15


@dataclass
class ShiftResult:
    """Displacement(s) and peak normalised cross-correlation, one row per batch item."""

    shift: np.ndarray  # (..., ndim) voxels, registered[p] = moving[p + shift]
    ncc: np.ndarray  # (...,) normalised cross-correlation at the integer peak, in [-1, 1]
    z: np.ndarray  # (...,) peak height over the correlation map's robust spread (>= 6: a real match)


def tukey(n: int, alpha: float = 0.25, device: torch.device | None = None, dtype=torch.float32) -> torch.Tensor:
    """Tukey (tapered cosine) window: flat middle, cosine edges over ``alpha * n / 2`` samples each side."""
    if n < 3 or alpha <= 0:
        return torch.ones(n, device=device, dtype=dtype)
    x = torch.arange(n, device=device, dtype=torch.float64) / (n - 1)
    w = torch.ones(n, dtype=torch.float64, device=device)
    edge = alpha / 2
    lo, hi = x < edge, x > 1 - edge
    w[lo] = 0.5 * (1 + torch.cos(math.pi * (x[lo] / edge - 1)))
    w[hi] = 0.5 * (1 + torch.cos(math.pi * ((x[hi] - 1) / edge + 1)))
    return w.to(dtype)


def _window(shape: tuple[int, ...], alpha: float, device, dtype) -> torch.Tensor:
    w = None
    for ax, n in enumerate(shape):
        v = tukey(n, alpha, device, dtype).reshape([n if i == ax else 1 for i in range(len(shape))])
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
        # One float64 sum is finite iff every value is (and is far cheaper than an elementwise check).
        if t.is_floating_point() and not bool(torch.isfinite(t.sum(dtype=torch.float64))):
            raise FmcInputError(f"{what}: the {name} image contains NaN or infinite values")
        if float(t.max()) == float(t.min()):
            raise FmcInputError(f"{what}: the {name} image is constant; there is nothing to align")


def _prepare(x: torch.Tensor, nd: int, alpha: float) -> torch.Tensor:
    dims = tuple(range(-nd, 0))
    x = x - x.mean(dim=dims, keepdim=True)
    return x * _window(tuple(x.shape[-nd:]), alpha, x.device, x.dtype)


def _freqs(shape: tuple[int, ...], device, dtype) -> list[torch.Tensor]:
    return [torch.fft.fftfreq(n, device=device, dtype=dtype) for n in shape]


def _lowpass(P: torch.Tensor, nd: int, keep: float = 0.9995, min_keep: int = 16, half_n: int | None = None):
    """Keep the frequency band holding ``keep`` of |P| per axis (plus everything below ``min_keep``).

    Dropping the same high frequencies from both images is a symmetric filter: the peak position does not
    move, and Newton steps get cheaper by the square (2D) or cube (3D) of the crop factor.
    ``half_n``: the last axis is an ``rfft`` half spectrum of that full length; its columns are weighted
    (2 for the mirrored ones) so sums over it equal sums over the full spectrum of a real signal.
    """
    if half_n is not None:
        kx = torch.arange(P.shape[-1], device=P.device)
        w = torch.where((kx == 0) | (2 * kx == half_n), 1.0, 2.0).to(P.real.dtype)
        P = P * w
    mag = P.abs().sum(0)
    ks = []
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
        P = P.index_select(P.dim() - nd + ax, idx)
        freqs = (
            torch.arange(n, device=P.device, dtype=torch.float64) / half_n
            if half
            else torch.fft.fftfreq(n, device=P.device, dtype=torch.float64)
        )
        ks.append(freqs[idx])
    return P, ks


def _refine(P: torch.Tensor, s0: torch.Tensor, iters: int = 8, half_n: int | None = None) -> torch.Tensor:
    """Newton ascent of c(s) = Re sum_k P_k e^{2 pi i k.s} from the integer peak ``s0`` (batch, nd)."""
    nd = s0.shape[-1]
    P, ks = _lowpass(P, nd, half_n=half_n)
    s = s0.clone().to(torch.float64)
    P = P.to(torch.complex128)
    iters = iters if P.shape[0] == 1 else min(iters, 5)
    for _ in range(iters):
        # e_a[b, n] = exp(2 pi i k_a s_a); derivative factors (2 pi i k_a)^m
        e = [torch.exp(2j * math.pi * k[None, :] * s[:, a : a + 1]) for a, k in enumerate(ks)]
        d = [2j * math.pi * k[None, :].to(torch.complex128) for k in ks]

        def contract(mults: list[int], e=e, d=d) -> torch.Tensor:
            vecs = [e[a] * d[a] ** m for a, m in enumerate(mults)]
            return torch.einsum("bijk,bi,bj,bk->b", P, *vecs).real

        if nd == 2:
            # One batched mat-mat product gives every needed contraction: Q = P [e_x, d e_x, d^2 e_x].
            vx = torch.stack([e[1] * d[1] ** m for m in range(3)], -1)  # (b, nx, 3)
            vy = torch.stack([e[0] * d[0] ** m for m in range(3)], -1)  # (b, ny, 3)
            c = torch.einsum("biq,bij,bjp->bqp", vy, P, vx).real  # c[:, my, mx]
            grad = torch.stack([c[:, 1, 0], c[:, 0, 1]], -1)
            hess = torch.stack([c[:, 2, 0], c[:, 1, 1], c[:, 1, 1], c[:, 0, 2]], -1).reshape(-1, 2, 2)
        else:
            grad = torch.stack([contract([int(a == i) for a in range(nd)]) for i in range(nd)], -1)
            hess = torch.empty(s.shape[0], nd, nd, dtype=torch.float64, device=s.device)
            for i in range(nd):
                for j in range(i, nd):
                    m = [int(a == i) + int(a == j) for a in range(nd)]
                    hess[:, i, j] = hess[:, j, i] = contract(m)
        # Newton step on a concave peak; fall back to a tiny gradient step where the Hessian is not negative.
        step = -torch.linalg.solve(hess, grad.unsqueeze(-1)).squeeze(-1)
        bad = (torch.linalg.eigvalsh(hess).max(-1).values >= 0) | ~torch.isfinite(step).all(-1)
        step = torch.where(bad[:, None], torch.zeros_like(step), step).clamp(-0.5, 0.5)
        s = s + step
        if float(step.abs().max()) < 1e-6:
            break
    # Stay within one voxel of the integer peak: beyond it the Newton model was wrong.
    return torch.maximum(torch.minimum(s, s0 + 1.0), s0 - 1.0)


def _refine_on_overlap(
    r: torch.Tensor,
    m: torch.Tensor,
    s0: torch.Tensor,
    window: float,
    *,
    search: int = 0,
    max_voxels: int = 2**18,
    max_iter: int = 6,
    tol: float = 1e-4,
) -> torch.Tensor:
    """Second stage: crop both images to their overlap at the integer shift, refine the sub-pixel rest.

    The overlap is cut to its central ``max_voxels`` (plenty for 1e-3 px), the integer peak is re-searched
    within ``search`` voxels (after a binned first stage), and the bias of windowed correlation, which is
    proportional to the residual, is removed by resampling the moving crop and Aitken extrapolation.
    """
    nd = r.dim()
    ints = [int(v) for v in s0.round().tolist()]
    sl_r, sl_m = [], []
    side = max(8, int(round(max_voxels ** (1.0 / nd))))
    for n, k in zip(r.shape, ints):
        size = n - abs(k)
        if size < 8 + 2 * search:
            raise FmcInputError(f"registration: shift {k} leaves no usable overlap on an axis of {n} voxels")
        # Central part of the overlap, at most ``side`` long, with ``search`` voxels of slack on the moving side.
        use = min(size - 2 * search, side)
        a0 = max(0, -k) + (size - use) // 2
        sl_r.append(slice(a0, a0 + use))
        sl_m.append(slice(a0 + k - search, a0 + k + use + search))
    rc, mc_full = r[tuple(sl_r)], m[tuple(sl_m)]
    dims = tuple(range(-nd, 0))
    inner = tuple(slice(search, search + n) for n in rc.shape)
    fr = torch.conj(torch.fft.rfftn(_prepare(rc[None], nd, window), dim=dims))
    base = torch.zeros(1, nd, dtype=torch.float64, device=r.device)
    if search:
        # Integer re-search at full resolution: correlate the reference crop inside the larger moving crop.
        pad = [0] * (2 * nd)
        for ax in range(nd):
            pad[2 * (nd - 1 - ax) + 1] = 2 * search
        rp = F.pad(_prepare(rc[None], nd, window), pad)
        cc = torch.fft.irfftn(
            torch.conj(torch.fft.rfftn(rp, dim=dims)) * torch.fft.rfftn(mc_full[None] - mc_full.mean(), dim=dims),
            s=tuple(rp.shape[-nd:]),
            dim=dims,
        )[0]
        cc = cc[tuple(slice(0, 2 * search + 1) for _ in range(nd))]
        idx = torch.stack(torch.unravel_index(torch.argmax(cc), cc.shape))
        base = (idx.to(torch.float64) - search)[None]
    ints = [i + int(b) for i, b in zip(ints, base[0].tolist())]
    frac = torch.zeros(1, nd, dtype=torch.float64, device=r.device)
    steps: list[torch.Tensor] = []
    for _ in range(max_iter):
        mw = fourier_shift(mc_full, base[0] + frac[0])[inner]
        spec = fr * torch.fft.rfftn(_prepare(mw[None], nd, window), dim=dims)
        res = _refine(spec, torch.zeros_like(frac), half_n=rc.shape[-1])
        steps.append(res)
        if len(steps) == 2:
            # Estimates are (1 - beta) x the true residual: two of them give beta (Aitken), per axis.
            r1, r2 = steps
            denom = r1 - r2
            ok = denom.abs() > 1e-9
            jump = torch.where(ok, r1 * r1 / torch.where(ok, denom, torch.ones_like(denom)), r1 + r2)
            frac = frac - r1 + jump.clamp(-1.0, 1.0)
        else:
            frac = frac + res
        if float(res.abs().max()) < tol:
            break
    return frac[0] + torch.tensor(ints, dtype=torch.float64, device=r.device)


def fourier_shift(x: torch.Tensor, shift: torch.Tensor, pad: int = 8) -> torch.Tensor:
    """``out[p] = x[p + shift]`` by band-limited interpolation; reflect padding keeps the edges from ringing."""
    nd = x.dim()
    p = min(pad, *(n - 1 for n in x.shape))
    xp = F.pad(x[None, None], [p] * (2 * nd), mode="reflect")[0, 0] if p > 0 else x
    dims = tuple(range(nd))
    spec = torch.fft.rfftn(xp.to(torch.float32), dim=dims)
    for ax, n in enumerate(xp.shape):
        half = ax == nd - 1
        k = (torch.fft.rfftfreq if half else torch.fft.fftfreq)(n, device=x.device, dtype=torch.float64)
        shape = [1] * nd
        shape[ax] = k.numel()
        spec = spec * torch.exp(2j * math.pi * k * float(shift[ax])).to(torch.complex64).reshape(shape)
    out = torch.fft.irfftn(spec, s=tuple(xp.shape), dim=dims).to(x.dtype)
    return out[tuple(slice(p, p + n) for n in x.shape)] if p > 0 else out


def estimate_shift(
    ref: np.ndarray | torch.Tensor,
    mov: np.ndarray | torch.Tensor,
    *,
    ndim: int | None = None,
    max_shift: float | None = None,
    window: float = 0.25,
    subpixel: bool = True,
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
    full_r, full_m = r, m
    factor = 1
    if not batched:
        # The integer peak does not need full resolution: bin large images (the overlap stage re-searches).
        while int(np.prod(r.shape[-nd:])) > BIN_ABOVE_VOXELS and min(r.shape[-nd:]) >= 64:
            pool = F.avg_pool3d if nd == 3 else F.avg_pool2d
            r, m = pool(r[:, None], 2)[:, 0], pool(m[:, None], 2)[:, 0]
            factor *= 2
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
        s = _refine_on_overlap(full_r[0], full_m[0], s0[0] * factor, window, search=factor).unsqueeze(0)
    elif subpixel:
        s = _refine(P, s0, half_n=shape[-1])
    else:
        s = s0
    out_shape = (-1, nd) if batched else (nd,)
    ncc = (peak_val / norm).cpu().numpy()
    return ShiftResult(
        s.cpu().numpy().reshape(out_shape), ncc if batched else ncc.reshape(()), z if batched else z.reshape(())
    )
