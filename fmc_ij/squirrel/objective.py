"""SQUIRREL's objective: RMSE(sigma) of ``R ~ alpha bin_m(K_sigma * S) + beta``, alpha and beta in closed form.

For one sigma the fit needs three moments of ``b = bin_m(K_sigma * S)`` (edges clamped): its sum, its sum of
squares and its cross sum with the reference. Both ways below compute them exactly (float64), without an
image-sized inverse transform per sigma; the transforms of the image are computed once per frame:

- ``_EdgeMoments`` (m = 1): ``b`` is the valid part of the full (zero-extended) correlation ``F = k k * P`` of the
  edge-replicated image ``P``. The sum and the cross sum are quadratic forms of the taps over lag tables;
  ``|F|^2`` is the kernel's autocorrelation against ``P``'s autocorrelation; the part of ``F`` outside ``b`` is a
  frame whose strips involve only the first/last rows and columns of the image (inclusion-exclusion:
  ``|b|^2 = |F|^2 - rows outside - columns outside + corners``). Per sigma: a few products of size radius^2.
- ``_FoldedMoments`` (any m): ``b`` is ``F`` sampled every m pixels; sampling folds the spectrum, so one product
  with the kernel's spectrum, a fold to the reference grid and an inverse transform the size of the reference.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft
import torch
from scipy import optimize

from fmc_ij.errors import FmcInputError
from fmc_ij.register import ij_ops as ij

Array = np.ndarray | torch.Tensor
EDGE_MAX_PAD = 64  # above this kernel radius the edge tables outgrow the folded transform (memory ~ pad^2 x size)
SMALL_IMAGE = 2**16  # reference pixels; below, Brent refines three candidate pieces instead of two


def rsf_kernel_1d(sigma_px: float) -> np.ndarray:
    """NanoJ's RSF taps at image pixels: pixel-integrated Gaussian, radius 3 int(sigma) (>= 1), normalised."""
    r = max(1, 3 * int(sigma_px))
    d = np.arange(-r, r + 1, dtype=np.float64)
    k = 0.5 * (ij.erf_as((d + 0.5) / (math.sqrt(2) * sigma_px)) - ij.erf_as((d - 0.5) / (math.sqrt(2) * sigma_px)))
    return k / k.sum()


def kernel_radius(sigma: float, m: int) -> int:
    """The RSF radius in image pixels for sigma in reference pixels (NanoJ computes sigma m in float32)."""
    return max(1, 3 * int(float(np.float32(sigma * m))))


def _fast_len(n: int, multiple: int = 1) -> int:
    """The smallest multiple of ``multiple`` >= n whose quotient has no prime factor above 5 (a fast FFT size)."""
    q = -(-n // multiple)
    while True:
        k = q
        for f in (2, 3, 5):
            while k % f == 0:
                k //= f
        if k == 1:
            return q * multiple
        q += 1


def _wrapped(taps: np.ndarray, first: int, n: int) -> np.ndarray:
    """``taps`` placed at offsets first, first + 1, ... of a length-n circular vector."""
    v = np.zeros(n)
    np.add.at(v, (first + np.arange(len(taps))) % n, taps)
    return v


def _half_weights(n: int) -> np.ndarray:
    """Weights that turn a sum over an rfft half-spectrum of length n into the sum over the full spectrum / n."""
    w = np.full(n // 2 + 1, 2.0)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return w / n


def _on(x: np.ndarray, dev: torch.device) -> Array:
    """numpy on the CPU (elementwise work stays single-threaded: no thread-pool waits on a shared machine), torch on
    an accelerator; the code below is written for both."""
    return x if dev.type == "cpu" else torch.as_tensor(x, device=dev)


def _host(a: Array) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.cpu().numpy()


def _rfft2(a: Array) -> Array:
    """scipy's pocketfft on the CPU (about 1.7x faster than torch's for float64), torch's elsewhere."""
    if isinstance(a, np.ndarray):
        return sfft.rfft2(a, workers=torch.get_num_threads())
    return torch.fft.rfft2(a)


def _irfft2(a: Array, shape: tuple[int, int]) -> Array:
    if isinstance(a, np.ndarray):
        return sfft.irfft2(a, s=shape, workers=torch.get_num_threads())
    return torch.fft.irfft2(a, s=shape)


class _EdgeMoments:
    """Exact moments for m = 1 from lag tables and edge strips (see the module docstring)."""

    def __init__(self, x: np.ndarray, rc: np.ndarray, pad: int, dev: torch.device):
        h, w = x.shape
        p = self.pad = pad
        ly, lx = _fast_len(h + 4 * p), _fast_len(w + 4 * p)  # wrap-free for lags up to 2p
        big = np.pad(x, p, mode="edge")  # P: the image with its edges replicated, (h + 2p, w + 2p)
        both = np.zeros((2, ly, lx))  # P and the reference where P's image sits: one batched transform
        both[0, : h + 2 * p, : w + 2 * p] = big
        both[1, p : p + h, p : p + w] = rc
        spec = _rfft2(_on(both, dev))
        spec[1] = spec[1].conj() * spec[0]
        spec[0] = spec[0].real ** 2 + spec[0].imag ** 2
        lags = [list(np.arange(-2 * p, 2 * p + 1) % n) for n in (ly, lx)]
        tables = _host(_irfft2(spec, (ly, lx))[:, lags[0]][:, :, lags[1]])
        self.auto = tables[0]  # sum P[i, j] P[i + d, j + e], |d|, |e| <= 2p
        self.cross = tables[1, p : 3 * p + 1, p : 3 * p + 1]  # sum R[i, j] P[p + i + a, p + j + b], |a|, |b| <= p
        cs = np.zeros((h + 2 * p + 1, w + 2 * p + 1))
        cs[1:, 1:] = big.cumsum(0).cumsum(1)
        a = np.arange(2 * p + 1)
        self.sums = cs[a + h][:, a + w] - cs[a][:, a + w] - cs[a + h][:, a] + cs[a][:, a]  # window sums of P
        # The edge strips see only the first/last `pad` lines of each side, each replicated along its length.
        self.dy, self.dx, self.shape = min(p, h), min(p, w), (h, w)
        self.gram = {}
        for name, lines, length in (
            ("top", x[: self.dy], lx),
            ("bottom", x[::-1][: self.dy], lx),
            ("left", x.T[: self.dx], ly),
            ("right", x.T[::-1][: self.dx], ly),
        ):
            f = np.fft.rfft(np.pad(lines, ((0, 0), (p, p)), mode="edge"), n=length)
            g = f.real[:, None] * f.real[None] + f.imag[:, None] * f.imag[None]  # Re(conj(f_s) f_t) per frequency
            self.gram[name] = (g * _half_weights(length), length)
        self.corners = [
            x[: self.dy, : self.dx],
            x[: self.dy, ::-1][:, : self.dx],
            x[::-1, : self.dx][: self.dy],
            x[::-1, ::-1][: self.dy, : self.dx],
        ]

    def _edge_matrix(self, k: np.ndarray, n_img: int, d: int) -> np.ndarray:
        """Rows n in [-r, pad) of the full correlation of one edge, as weights of the edge's distinct lines."""
        r, p = (len(k) - 1) // 2, self.pad
        n = np.arange(-r, p)[:, None]
        a = np.arange(-r, r + 1)[None, :]
        i = n + a  # rows of P
        ok = np.broadcast_to(i >= 0, i.shape)
        s = np.clip(i - p, 0, n_img - 1)  # the image row P's row i replicates
        rows = np.broadcast_to(n + r, i.shape)
        flat = (rows * d + s)[ok]
        return np.bincount(flat, np.broadcast_to(k[None, :], i.shape)[ok], minlength=(p + r) * d).reshape(p + r, d)

    def __call__(self, k: np.ndarray) -> tuple[float, float, float]:
        r, p = (len(k) - 1) // 2, self.pad
        kp = np.zeros(2 * p + 1)
        kp[p - r : p + r + 1] = k
        kk = np.zeros(4 * p + 1)
        kk[2 * p - 2 * r : 2 * p + 2 * r + 1] = np.convolve(k, k)
        total = kk @ self.auto @ kk
        spec2 = {}
        for length in {self.gram[s][1] for s in self.gram}:
            spec2[length] = np.fft.rfft(_wrapped(k, -r, length)).real ** 2
        ty = self._edge_matrix(k, self.shape[0], self.dy)
        tx = self._edge_matrix(k, self.shape[1], self.dx)
        for name, t in (("top", ty), ("bottom", ty), ("left", tx), ("right", tx)):
            g, length = self.gram[name]
            d = min(r, t.shape[1])  # lines beyond the radius carry no weight
            total -= float(np.sum((t[:, :d].T @ t[:, :d]) * (g[:d, :d] @ spec2[length])))
        total += sum(float(np.sum((ty @ c @ tx.T) ** 2)) for c in self.corners)
        return float(kp @ self.sums @ kp), float(total), float(kp @ self.cross @ kp)


class _FoldedMoments:
    """Exact moments for any m: one spectral product, folded to the reference grid (see the module docstring)."""

    def __init__(self, x: np.ndarray, rc: np.ndarray, m: int, pad: int, dev: torch.device):
        self.m, self.dev = m, dev
        self.pad = m * -(-pad // m)  # a multiple of m: the bins then start on the sampling lattice
        big = np.pad(x, self.pad, mode="edge")
        self.ly, self.lx = (_fast_len(n, m) for n in big.shape)
        self.spec = _rfft2(_on(np.pad(big, ((0, self.ly - big.shape[0]), (0, self.lx - big.shape[1]))), dev))
        self.rc = _on(rc, dev)

    def __call__(self, k: np.ndarray) -> tuple[float, float, float]:
        m, r = self.m, (len(k) - 1) // 2
        g = np.convolve(k, np.ones(m)) / m  # blur then m-bin = one kernel at offsets -r .. r + m - 1
        gy = _on(np.fft.fft(_wrapped(g, -r, self.ly)).conj()[:, None], self.dev)
        gx = _on(np.fft.rfft(_wrapped(g, -r, self.lx)).conj()[None, :], self.dev)
        c = self.spec * gy * gx
        c = c.reshape(m, self.ly // m, -1).sum(0) / m  # rows sampled every m: the spectrum folds
        c = _irfft2(c, (self.ly // m, self.lx))[:, ::m]
        h, w = self.rc.shape
        o = self.pad // m
        b = c[o : o + h, o : o + w]
        return float(b.sum()), float((b * b).sum()), float((b * self.rc).sum())


class Objective:
    """RMSE(sigma) with closed-form alpha, beta; the image transforms run on ``device`` (CUDA when available)."""

    def __init__(self, ref: np.ndarray, img: np.ndarray, m: int, device: torch.device, sigma_max: float):
        self.m = m
        self.pad = kernel_radius(sigma_max, m)
        ref = np.asarray(ref, np.float64)
        img = np.asarray(img, np.float64)
        self.n, self.ref_mean = ref.size, float(ref.mean())
        rc = ref - self.ref_mean
        self.vr = float(np.sum(rc * rc))
        # Centred: the kernel sums to 1, so the blur of (S - c) is the blur of S minus c; the moments then carry
        # no large common offset and the residual sum of squares loses no digits to cancellation.
        self.offset = float(img.mean())
        xc = img - self.offset
        if m == 1 and self.pad <= EDGE_MAX_PAD:
            self.moments = _EdgeMoments(xc, rc, self.pad, device)
        else:
            self.moments = _FoldedMoments(xc, rc, m, self.pad, device)
        self.cache: dict[float, tuple[float, float, float]] = {}

    def fit(self, sigma: float) -> tuple[float, float, float]:
        """(rmse, alpha, beta) at ``sigma``; alpha kept >= 0.001 as NanoJ's bounds require."""
        key = round(float(sigma), 12)
        if key in self.cache:
            return self.cache[key]
        if kernel_radius(sigma, self.m) > self.pad:
            raise FmcInputError(f"SQUIRREL: sigma {sigma:g} is above the search range")
        sb, sbb, cov = self.moments(rsf_kernel_1d(float(np.float32(sigma * self.m))))
        n = self.n
        vb = sbb - sb * sb / n
        alpha = max(cov / vb if vb > 0 else 0.001, 0.001)
        beta = self.ref_mean - alpha * (sb / n + self.offset)
        sse = self.vr - 2 * alpha * cov + alpha * alpha * vb
        self.cache[key] = (math.sqrt(max(sse, 0.0) / n), alpha, beta)
        return self.cache[key]

    def best_sigma(self, lo: float, hi: float) -> float:
        """Global minimum over [lo, hi]: coarse scan of every smooth piece, then Brent in the best ones."""
        m = self.m
        edges = sorted({lo, hi, *[k / m for k in range(int(math.ceil(lo * m)), int(math.floor(hi * m)) + 1)]})
        pieces = [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b - a > 1e-9]
        scored = []
        for a, b in pieces:
            pts = (a, 0.5 * (a + b), b - 1e-9)
            vals = [self.fit(p)[0] for p in pts]
            scored.append((min(vals), a, b))
        scored.sort()
        best_s, best_v = None, math.inf
        for _, a, b in scored[: 3 if self.n <= SMALL_IMAGE else 2]:
            res = optimize.minimize_scalar(
                lambda s: self.fit(s)[0], bounds=(a, b - 1e-9), method="bounded", options={"xatol": 1e-5}
            )
            for s in (a, float(res.x)):
                v = self.fit(s)[0]
                if v < best_v:
                    best_s, best_v = s, v
        return float(best_s)
