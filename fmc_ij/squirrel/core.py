"""SQUIRREL error maps (Culley et al. 2018): RSF, alpha, beta, RSE, RSP, with a deterministic optimiser.

Model: the reference R (diffraction-limited) is explained by the image S (super-resolved / restored) as
``R ~ bin_m(K_sigma * (alpha S + beta))``, K_sigma the resolution-scaling function (RSF, a pixel-integrated
Gaussian). For each sigma, alpha and beta are linear least squares (closed form); sigma is found by a 1-D
search over the pieces on which the objective is smooth (NanoJ's kernel radius 3 int(sigma m) jumps at
integer sigma m, and the optimum often sits on such a jump). No random swarm: same input, same answer.
Each sigma costs a few products of radius-sized tables, not a transform of the image
(:mod:`fmc_ij.squirrel.objective`).

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
from scipy import ndimage

from fmc_ij.errors import FmcInputError
from fmc_ij.register import ij_ops as ij
from fmc_ij.squirrel.objective import Objective, rsf_kernel_1d

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
        obj = Objective(ref_c, img, m, dev, max(sigma_range[1], rsf or 0.0))
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
        ok = np.isfinite(down)  # NanoJ skips NaN pairs; copy only when there are some
        a, b = (down.ravel(), ref_c.ravel()) if ok.all() else (down[ok], ref_c[ok])
        rse = float(np.sqrt(np.mean((a - b) ** 2)))
        rsp = float(np.corrcoef(a, b)[0, 1])
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
