"""SQUIRREL error maps (Culley et al. 2018): RSF, alpha, beta, RSE, RSP, with a deterministic optimiser.

Model: the reference R (diffraction-limited) is explained by the image S (super-resolved / restored) as
``R ~ bin_m(K_sigma * (alpha S + beta))``, K_sigma the resolution-scaling function (RSF, a pixel-integrated
Gaussian). For each sigma, alpha and beta are linear least squares (closed form); sigma is found by a 1-D
search over the pieces on which the objective is smooth (NanoJ's kernel radius 3 int(sigma m) jumps at
integer sigma m, and the optimum often sits on such a jump). No random swarm: same input, same answer.

``method="nanoj"`` reproduces NanoJ-SQUIRREL's ``ErrorMap_`` (see ``shared/specs/nanoj.md``): bicubic
ImageJ upscaling of R (with its quarter-pixel offset), NanoJ cross-correlation registration applied when
any component reaches 0.5 px, the crop that follows, ImageJ's GaussianBlur for the output, and
nearest-pixel (top-left) downsampling for RSE/RSP. ``method="binned"`` uses block means and the same
integrated kernel throughout: self-consistent, but its RSE/RSP differ from NanoJ's published numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, optimize

from fmc_ij.errors import FmcInputError
from fmc_ij.register import ij_ops as ij

Method = Literal["nanoj", "binned"]
SIGMA_RANGE = (0.5, 10.0)  # reference pixels, NanoJ's swarm bounds


@dataclass
class ErrorMapResult:
    """One frame's SQUIRREL analysis (lengths in reference pixels unless stated)."""

    sigma: float
    alpha: float
    beta: float
    rse: float
    rsp: float
    error_map: np.ndarray  # |R_up - C| on the image grid (after the registration crop)
    rsf: np.ndarray  # the RSF kernel at image pixels (2D)
    shift: tuple[float, float]  # registration applied to the image (x, y), image pixels, ImageJ translate sign
    crop: tuple[int, int]  # reference pixels cropped (x, y); negative = from the end
    magnification: int
    method: str
    extra: dict = field(default_factory=dict)


def _as_float(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if not np.isfinite(x).all():
        raise FmcInputError(f"SQUIRREL: the {what} contains NaN or infinite values")
    if x.size == 0 or float(x.max()) == float(x.min()):
        raise FmcInputError(f"SQUIRREL: the {what} is constant; there is nothing to compare")
    return x


def magnification_of(ref_shape: Sequence[int], img_shape: Sequence[int]) -> int:
    """The integer magnification m = W_image / W_reference (NanoJ's rule); both axes must agree."""
    mx, my = img_shape[-1] / ref_shape[-1], img_shape[-2] / ref_shape[-2]
    if abs(mx - round(mx)) > 1e-9 or round(mx) < 1:
        raise FmcInputError(
            f"SQUIRREL: image width {img_shape[-1]} is not an integer multiple of the reference width "
            f"{ref_shape[-1]}; crop or resample so that width_image = m x width_reference"
        )
    if abs(my - mx) > 1e-9:
        raise FmcInputError(
            f"SQUIRREL: aspect ratios differ (x magnification {mx:g}, y {my:g}); the image and the reference must "
            "show the same field of view"
        )
    return int(round(mx))


def rsf_kernel_1d(sigma_px: float) -> np.ndarray:
    """NanoJ's RSF taps at image pixels: pixel-integrated Gaussian, radius 3 int(sigma) (>= 1), normalised."""
    r = max(1, 3 * int(sigma_px))
    d = np.arange(-r, r + 1, dtype=np.float64)
    k = 0.5 * (ij.erf_as((d + 0.5) / (math.sqrt(2) * sigma_px)) - ij.erf_as((d - 0.5) / (math.sqrt(2) * sigma_px)))
    return k / k.sum()


def rsf_image(sigma_ref: float, m: int) -> np.ndarray:
    """The 2D RSF at image pixels (what NanoJ shows as the RSF output)."""
    k = rsf_kernel_1d(float(np.float32(sigma_ref * m)))
    return np.outer(k, k)


def forward_model(
    image: np.ndarray,
    sigma: float | Sequence[float],
    magnification: int | Sequence[int],
    *,
    alpha: float = 1.0,
    beta: float = 0.0,
) -> np.ndarray:
    """The reference SQUIRREL's model predicts: ``bin_m(K_sigma * (alpha image + beta))``, edges clamped.

    ``sigma`` (reference pixels) and ``magnification`` are scalars or one value per axis (anisotropic volumes).
    """
    img = np.asarray(image, np.float64)
    nd = img.ndim
    sig = np.broadcast_to(np.asarray(sigma, float), (nd,))
    mag = np.broadcast_to(np.asarray(magnification, int), (nd,))
    out = alpha * img + beta
    for ax in range(nd):
        out = ndimage.correlate1d(out, rsf_kernel_1d(float(np.float32(sig[ax] * mag[ax]))), ax, mode="nearest")
    ref_shape = [n // m for n, m in zip(img.shape, mag)]
    out = out[tuple(slice(0, r * m) for r, m in zip(ref_shape, mag))]
    return out.reshape([v for r, m in zip(ref_shape, mag) for v in (r, m)]).mean(tuple(range(1, 2 * nd, 2)))


class _Objective:
    """RMSE(sigma) with closed-form alpha, beta; torch, so it runs on CUDA when available."""

    def __init__(self, ref: np.ndarray, img: np.ndarray, m: int, device: torch.device, sigma_max: float):
        self.m = m
        self.dev = device
        self.ref = torch.as_tensor(ref, dtype=torch.float64, device=device)
        # Edge-replicate once by the largest kernel radius: every smaller kernel then sees exactly the clamped
        # edges NanoJ uses, and each sigma costs one spectral product instead of a long direct convolution.
        self.pad = max(1, 3 * int(float(np.float32(sigma_max * m))))
        # float32 spectra for large images (4x faster, sums stay float64); float64 keeps NanoJ's digits on small ones.
        self.dtype = torch.float32 if img.size > 2**20 else torch.float64
        x = torch.as_tensor(img, dtype=self.dtype, device=device)[None, None]
        x = F.pad(x, (self.pad,) * 4, mode="replicate")[0, 0]
        self.shape = tuple(x.shape)
        self.spec = torch.fft.rfft2(x)
        self.img_shape = img.shape
        self.ref_flat = self.ref.flatten()
        self.sr, self.srr = float(self.ref_flat.sum()), float(self.ref_flat @ self.ref_flat)
        self.cache: dict[float, tuple[float, float, float]] = {}

    def _kernel_fft(self, k: np.ndarray, n: int, real: bool) -> torch.Tensor:
        r = (len(k) - 1) // 2
        v = torch.zeros(n, dtype=self.dtype, device=self.dev)
        kt = torch.as_tensor(k, dtype=self.dtype, device=self.dev)
        v[: r + 1] = kt[r:]
        if r:
            v[-r:] = kt[:r]
        return torch.fft.rfft(v) if real else torch.fft.fft(v)

    def blurred_binned(self, sigma: float) -> torch.Tensor:
        sig = float(np.float32(sigma * self.m))  # NanoJ computes sigma m in float32
        k = rsf_kernel_1d(sig)
        if (len(k) - 1) // 2 > self.pad:
            raise FmcInputError(f"SQUIRREL: sigma {sigma:g} is above the search range")
        fy = self._kernel_fft(k, self.shape[0], real=False)
        fx = self._kernel_fft(k, self.shape[1], real=True)
        x = torch.fft.irfft2(self.spec * fy[:, None] * fx[None, :], s=self.shape)
        p = self.pad
        h, w = self.ref.shape
        x = x[p : p + h * self.m, p : p + w * self.m]
        return F.avg_pool2d(x[None, None], self.m)[0, 0].to(torch.float64)

    def fit(self, sigma: float) -> tuple[float, float, float]:
        """(rmse, alpha, beta) at ``sigma``; alpha kept >= 0.001 as NanoJ's bounds require.

        Three reductions per call: the fit and its residual follow from sums of b, b^2 and b r.
        """
        key = round(float(sigma), 12)
        if key in self.cache:
            return self.cache[key]
        b = self.blurred_binned(sigma).flatten()
        r = self.ref_flat
        n = b.numel()
        sb, sbb, sbr = float(b.sum()), float(b @ b), float(b @ r)
        sr, srr = self.sr, self.srr
        vb = sbb - sb * sb / n
        cov = sbr - sb * sr / n
        alpha = max(cov / vb if vb > 0 else 0.001, 0.001)
        beta = (sr - alpha * sb) / n
        sse = srr - 2 * alpha * sbr - 2 * beta * sr + alpha * alpha * sbb + 2 * alpha * beta * sb + n * beta * beta
        rmse = math.sqrt(max(sse, 0.0) / n)
        self.cache[key] = (rmse, alpha, beta)
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
        for _, a, b in scored[: 3 if self.ref.numel() <= 2**16 else 2]:
            res = optimize.minimize_scalar(
                lambda s: self.fit(s)[0], bounds=(a, b - 1e-9), method="bounded", options={"xatol": 1e-5}
            )
            for s in (a, float(res.x)):
                v = self.fit(s)[0]
                if v < best_v:
                    best_s, best_v = s, v
        return float(best_s)


def _border_crop(ref: np.ndarray, frames: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """NanoJ's border control: drop image rows/columns that are empty in every frame, floor(b/m) ref px."""
    mx = frames.max(0)
    rows, cols = mx.max(1) > 0, mx.max(0) > 0
    if not rows.any():
        raise FmcInputError("SQUIRREL: the image is empty (no pixel > 0)")
    top, bottom = int(np.argmax(rows)), int(np.argmax(rows[::-1]))
    left, right = int(np.argmax(cols)), int(np.argmax(cols[::-1]))
    t, b, lft, rgt = (v // m for v in (top, bottom, left, right))
    h, w = ref.shape
    ref = ref[t : h - b, lft : w - rgt]
    frames = frames[:, t * m : frames.shape[1] - b * m, lft * m : frames.shape[2] - rgt * m]
    return ref, frames


def _crop(img: np.ndarray, cx: int, cy: int, scale: int) -> np.ndarray:
    h, w = img.shape
    ys = slice(0, h - abs(cy) * scale) if cy < 0 else slice(cy * scale, h)
    xs = slice(0, w - abs(cx) * scale) if cx < 0 else slice(cx * scale, w)
    return img[ys, xs]


def error_map(
    reference: np.ndarray,
    image: np.ndarray,
    magnification: int | None = None,
    *,
    rsf: float | None = None,
    method: Method = "nanoj",
    register: bool = True,
    sigma_range: tuple[float, float] = SIGMA_RANGE,
    device: str | torch.device | None = None,
) -> list[ErrorMapResult]:
    """SQUIRREL error map, RSF sigma, alpha, beta, RSE and RSP of each frame of ``image`` against ``reference``.

    Parameters
    ----------
    reference : ndarray (H, W)
        The diffraction-limited reference (e.g. the widefield, or the network's own input).
    image : ndarray (W*m wide) or (frames, H*m, W*m)
        One or several reconstructions of the same field of view.
    magnification : int, optional
        m; derived from the widths if omitted (must be an integer, aspect ratios must match).
    rsf : float, optional
        Hold the RSF sigma (reference pixels) instead of optimising it (NanoJ's "RSF image given" path).
    method : {"nanoj", "binned"}
        ``nanoj`` reproduces NanoJ's numbers and quirks; ``binned`` uses block means throughout.
    register : bool
        Register each frame on the upscaled reference first (NanoJ does).
    sigma_range : (float, float)
        Search bounds for sigma in reference pixels.

    Returns
    -------
    list of ErrorMapResult
        One per frame.
    """
    ref = _as_float(reference, "reference")
    frames = np.asarray(image, np.float64)
    frames = frames[None] if frames.ndim == 2 else frames
    if ref.ndim != 2 or frames.ndim != 3:
        raise FmcInputError(
            f"SQUIRREL: give a 2D reference and a 2D image or a stack of frames, got {ref.shape} and {np.shape(image)}"
        )
    for k, f in enumerate(frames):
        _as_float(f, f"image (frame {k + 1})")
    m = magnification_of(ref.shape, frames.shape) if magnification is None else int(magnification)
    if magnification is not None and magnification_of(ref.shape, frames.shape) != m:
        raise FmcInputError(
            f"SQUIRREL: magnification {magnification} does not match the sizes {ref.shape}, {frames.shape}"
        )
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ref, frames = _border_crop(ref, frames, m)
    if min(ref.shape) < 8:
        raise FmcInputError(f"SQUIRREL: the reference is too small after border control ({ref.shape})")

    # Registration of every frame on the (ImageJ-)upscaled reference, then one crop for all frames.
    ref_up = ij.resize_bicubic_up(ref, m) if m > 1 else ref.copy()
    shifts = []
    for f in frames:
        if register:
            from fmc_ij.register.nanoj import cross_correlation_map, subpixel_peak

            sy, sx, _ = subpixel_peak(cross_correlation_map(ref_up, f))
            shifts.append((sx, sy) if max(abs(sx), abs(sy)) >= 0.5 else (0.0, 0.0))
        else:
            shifts.append((0.0, 0.0))
    crops = []
    for ax in (0, 1):
        comp = [s[ax] for s in shifts]
        big = comp[int(np.argmax(np.abs(comp)))]
        crops.append(int(math.ceil(abs(big) / m)) * int(np.sign(big)))
    cx, cy = crops
    ref_c = _crop(ref, cx, cy, 1)
    ref_up_c = ij.resize_bicubic_up(ref_c, m) if m > 1 else ref_c.copy()
    results = []
    for f, (sx, sy) in zip(frames, shifts):
        moved = ij.translate_bicubic(f, sx, sy) if (sx or sy) else f
        img = _crop(moved, cx, cy, m)
        obj = _Objective(ref_c, img, m, dev, max(sigma_range[1], rsf or 0.0))
        sigma = float(rsf) if rsf is not None else obj.best_sigma(*sigma_range)
        _, alpha, beta = obj.fit(sigma)
        scaled = alpha * img + beta
        if method == "nanoj":
            conv = ij.gaussian_blur(scaled, sigma * m)
            down = ij.resize_none_down(conv, m) if m > 1 else conv
        else:
            k = rsf_kernel_1d(float(np.float32(sigma * m)))
            conv = ndimage.correlate1d(ndimage.correlate1d(scaled, k, 1, mode="nearest"), k, 0, mode="nearest")
            h, w = ref_c.shape
            down = conv[: h * m, : w * m].reshape(h, m, w, m).mean((1, 3))
        diff = down - ref_c
        ok = np.isfinite(diff)
        rse = float(np.sqrt(np.mean(diff[ok] ** 2)))
        rsp = float(np.corrcoef(down[ok], ref_c[ok])[0, 1])
        results.append(
            ErrorMapResult(
                sigma=sigma,
                alpha=alpha,
                beta=beta,
                rse=rse,
                rsp=rsp,
                error_map=np.abs(ref_up_c - conv),
                rsf=rsf_image(sigma, m),
                shift=(sx, sy),
                crop=(cx, cy),
                magnification=m,
                method=method,
            )  # fmt: skip
        )
    return results


def fuse(images: Sequence[np.ndarray], error_maps: Sequence[np.ndarray]) -> np.ndarray:
    """SQUIRREL fusion (``FuseSRImages_``): weight each registered, intensity-normalised image by its local error.

    R_s = 3x3 mean of |error map s| (edges clamped), w_s = max_s R_s / max(R_s, 1), fused = sum w_s S_s / sum w_s.
    """
    if len(images) != len(error_maps) or not images:
        raise FmcInputError("SQUIRREL fusion needs one error map per image (and at least one image)")
    shapes = {np.shape(x) for x in (*images, *error_maps)}
    if len(shapes) != 1:
        raise FmcInputError(f"SQUIRREL fusion: images and error maps differ in shape {sorted(shapes)}")
    local = np.stack([ndimage.uniform_filter(np.abs(np.asarray(e, np.float64)), 3, mode="nearest") for e in error_maps])
    w = local.max(0)[None] / np.maximum(local, 1.0)
    stack = np.stack([np.asarray(x, np.float64) for x in images])
    return (w * stack).sum(0) / w.sum(0)


def error_map_per_slice(reference: np.ndarray, image: np.ndarray, **kwargs) -> list[ErrorMapResult]:
    """3D volumes analysed plane by plane (ZYX reference and image with the same number of planes)."""
    ref, img = np.asarray(reference), np.asarray(image)
    if ref.ndim != 3 or img.ndim != 3 or ref.shape[0] != img.shape[0]:
        raise FmcInputError(
            "SQUIRREL per-slice mode needs two ZYX volumes with the same number of planes, "
            f"got {ref.shape} and {img.shape}"
        )
    return [error_map(ref[z], img[z], **kwargs)[0] for z in range(ref.shape[0])]
