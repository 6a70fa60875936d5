"""ImageJ 1 image operations as NanoJ (Core and SQUIRREL) calls them, reproduced so its numbers can be matched.

- :func:`resize_bicubic_up`: ``ImageProcessor.resize`` with BICUBIC to m times the size; ImageJ samples
  the source at ``x/m - 1/4`` (its ``dstCenter += scale/4``), and falls back to clamped bilinear near edges.
- :func:`resize_none_down`: ``resize`` with interpolation NONE to 1/m: the top-left pixel of each block.
- :func:`translate_bicubic`: ``translate(dx, dy)`` with BICUBIC, background 0.
- :func:`gaussian_blur`: ``GaussianBlur.blurGaussian(ip, sigma, sigma, 0.0002)`` for float images: the
  edge-corrected kernel, edge pixels replicated, and the down/up-scaled approximation above sigma 8.5.
- :func:`erf_as`: Abramowitz & Stegun 7.1.26, the erf NanoJ's kernels use.
"""

from __future__ import annotations

import math

import numpy as np


def cubic(t: np.ndarray, a: float = 0.5) -> np.ndarray:
    """ImageJ's cubic convolution kernel (Catmull-Rom for a = 0.5)."""
    t = np.abs(t)
    return np.where(
        t <= 1, (2 - a) * t**3 + (a - 3) * t**2 + 1, np.where(t < 2, -a * t**3 + 5 * a * t**2 - 8 * a * t + 4 * a, 0.0)
    )


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray, background: float) -> np.ndarray:
    h, w = img.shape
    inside = (x >= -1) & (x < w) & (y >= -1) & (y < h)
    xc = np.clip(x, 0.0, w - 1.001)
    yc = np.clip(y, 0.0, h - 1.001)
    x0, y0 = np.floor(xc).astype(int), np.floor(yc).astype(int)
    fx, fy = xc - x0, yc - y0
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    top = img[y0, x0] + fx * (img[y0, x1] - img[y0, x0])
    bot = img[y1, x0] + fx * (img[y1, x1] - img[y1, x0])
    return np.where(inside, top + fy * (bot - top), background)


def bicubic_sample(img: np.ndarray, x: np.ndarray, y: np.ndarray, background: float = 0.0) -> np.ndarray:
    """``getBicubicInterpolatedPixel`` at arrays of (x, y): Catmull-Rom inside, bilinear within 1 px of edges."""
    img = np.asarray(img, np.float64)
    h, w = img.shape
    x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
    u0, v0 = np.floor(x).astype(int), np.floor(y).astype(int)
    edge = (u0 <= 0) | (v0 <= 0) | (u0 >= w - 2) | (v0 >= h - 2)
    out = np.empty(x.shape)
    if edge.any():
        out[edge] = _bilinear(img, x[edge], y[edge], background)
    inner = ~edge
    if inner.any():
        xi, yi, ui, vi = x[inner], y[inner], u0[inner], v0[inner]
        acc = np.zeros(xi.shape)
        for j in range(4):
            v = vi - 1 + j
            row = np.zeros(xi.shape)
            for i in range(4):
                u = ui - 1 + i
                row += img[v, u] * cubic(xi - u)
            acc += row * cubic(yi - v)
        out[inner] = acc
    return out


def resize_bicubic_up(img: np.ndarray, m: int) -> np.ndarray:
    """ImageJ's bicubic ``resize`` to ``m`` x the size (samples the source at x/m - 1/4)."""
    h, w = img.shape
    ys = np.arange(h * m) / m - 0.25
    xs = np.arange(w * m) / m - 0.25
    return bicubic_sample(img, xs[None, :], ys[:, None])


def resize_none_down(img: np.ndarray, m: int) -> np.ndarray:
    """ImageJ's ``resize`` with interpolation NONE to 1/m: pixel (m y, m x) of each block."""
    return np.asarray(img)[::m, ::m][: img.shape[0] // m, : img.shape[1] // m].copy()


def translate_bicubic(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``ImageProcessor.translate(dx, dy)`` with BICUBIC interpolation and background 0."""
    h, w = img.shape
    if dx == int(dx) and dy == int(dy):
        out = np.zeros((h, w))
        sy, sx = int(dy), int(dx)
        ys, xs = slice(max(0, sy), min(h, h + sy)), slice(max(0, sx), min(w, w + sx))
        out[ys, xs] = np.asarray(img, np.float64)[max(0, -sy) : h - max(0, sy), max(0, -sx) : w - max(0, sx)]
        return out
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return bicubic_sample(img, xx - dx, yy - dy, background=0.0)


def erf_as(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), as in NanoJ's kernels."""
    x = np.asarray(x, np.float64)
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return s * (1.0 - poly * np.exp(-a * a))


# --- GaussianBlur (ImageJ 1) -------------------------------------------------------------------------------


def _gauss_kernel(sigma: float, accuracy: float, max_radius: int) -> tuple[np.ndarray, np.ndarray]:
    """One-sided kernel and its running outer sums, with ImageJ's smooth edge correction."""
    k_radius = int(math.ceil(sigma * math.sqrt(-2 * math.log(accuracy)))) + 1
    max_radius = max(max_radius, 50)
    k_radius = min(k_radius, max_radius)
    i = np.arange(k_radius, dtype=np.float64)
    kern = np.exp(-0.5 * i * i / sigma / sigma).astype(np.float32).astype(np.float64)
    if 3 < k_radius < max_radius:
        sqrt_slope = math.inf
        r = k_radius
        while r > k_radius // 2:
            r -= 1
            a = math.sqrt(kern[r]) / (k_radius - r)
            if a < sqrt_slope:
                sqrt_slope = a
            else:
                break
        for r1 in range(r + 2, k_radius):
            kern[r1] = np.float32((k_radius - r1) ** 2 * sqrt_slope * sqrt_slope)
    total = kern[0] + 2 * kern[1:].sum() if k_radius < max_radius else sigma * math.sqrt(2 * math.pi)
    v = kern / total
    rsum = 0.5 + 0.5 * kern[0] / total - np.cumsum(v)
    return v.astype(np.float32).astype(np.float64), rsum.astype(np.float32).astype(np.float64)


def _convolve_line(line: np.ndarray, kern: np.ndarray, ksum: np.ndarray) -> np.ndarray:
    """``convolveLine`` over whole lines (last axis): out-of-line pixels replaced by the edge pixels."""
    n = line.shape[-1]
    r = len(kern)
    out = line * kern[0]
    for k in range(1, r):
        left = np.concatenate([np.zeros(line.shape[:-1] + (min(k, n),)), line[..., : max(n - k, 0)]], -1)[..., :n]
        right = np.concatenate([line[..., k:], np.zeros(line.shape[:-1] + (min(k, n),))], -1)[..., :n]
        out = out + kern[k] * (left + right)
    idx = np.arange(n)
    # Edge terms: the weight of the kernel beyond the line times the edge pixel.
    first_w = np.where(idx < r, ksum[np.minimum(idx, r - 1)], 0.0)
    last_i = n - idx - 1
    last_w = np.where(idx + r >= n, ksum[np.minimum(last_i, r - 1)], 0.0)
    return out + first_w * line[..., :1] + last_w * line[..., -1:]


def _downscale_kernel(unit: int) -> np.ndarray:
    mid = unit * 3 // 2
    k = np.zeros(3 * unit)
    for i in range(unit // 2 + 1):
        x = i / unit
        k[mid - i] = k[mid + i] = np.float32((0.75 - x * x) / unit)
    for i in range(unit // 2 + 1, (unit * 3 + 1) // 2):
        x = i / unit
        k[mid - i] = k[mid + i] = np.float32((0.125 + 0.5 * (x - 1) * (x - 2)) / unit)
    return k


def _upscale_kernel(unit: int) -> np.ndarray:
    k = np.zeros(4 * unit)
    mid = 2 * unit
    for i in range(unit):
        x = i / unit
        k[mid + i] = k[mid - i] = np.float32(2.0 / 3.0 - x * x * (1 - 0.5 * x))
    for i in range(unit, 2 * unit):
        x = i / unit
        v = np.float32((2.0 - x) ** 3 / 6.0)
        k[mid + i] = v
        if mid - i >= 0:
            k[mid - i] = v
    k[0] = 0.0
    return k


def _blur_lines(lines: np.ndarray, sigma: float, accuracy: float) -> np.ndarray:
    """``blur1Direction`` on every row of ``lines`` (whole lines written)."""
    n = lines.shape[-1]
    up_k = 2
    min_down_sigma = 4.0
    down = sigma > 2 * min_down_sigma + 0.5
    reduce_by = min(int(math.floor(sigma / min_down_sigma)), n) if down else 1
    sigma_g = math.sqrt(sigma * sigma / (reduce_by * reduce_by) - 1.0 / 3.0 - 1.0 / 4.0) if down else sigma
    max_len = (n + reduce_by - 1) // reduce_by + 2 * (up_k + 1) if down else n
    kern, ksum = _gauss_kernel(sigma_g, accuracy, max_len)
    if not down:
        return _convolve_line(lines, kern, ksum)
    k_radius = len(kern)
    read_from = max(0, 0 - k_radius * reduce_by)
    read_to = min(n, n + k_radius * reduce_by)
    new_len = (read_to - read_from + reduce_by - 1) // reduce_by + 2 * (up_k + 1)
    unscaled0 = read_from - (up_k + 1) * reduce_by
    dk, uk = _downscale_kernel(reduce_by), _upscale_kernel(reduce_by)
    # downscaleLine: out-of-line pixels replaced by the edge pixels.
    xin0 = unscaled0 - reduce_by // 2
    cache = np.zeros(lines.shape[:-1] + (new_len,))
    for xout in range(new_len):
        for x in range(reduce_by):
            xin = xin0 + xout * reduce_by + x
            for j, off in enumerate((-reduce_by, 0, reduce_by)):
                cache[..., xout] += dk[x + j * reduce_by] * lines[..., min(max(xin + off, 0), n - 1)]
    cache2 = _convolve_line(cache, kern, ksum)
    out = np.empty_like(lines, dtype=np.float64)
    for xout in range(n):
        xin = (xout - unscaled0 + reduce_by - 1) // reduce_by
        x = reduce_by - 1 - (xout - unscaled0 + reduce_by - 1) % reduce_by
        out[..., xout] = (
            cache2[..., xin - 2] * uk[x]
            + cache2[..., xin - 1] * uk[x + reduce_by]
            + cache2[..., xin] * uk[x + 2 * reduce_by]
            + cache2[..., xin + 1] * uk[x + 3 * reduce_by]
        )
    return out


def gaussian_blur(img: np.ndarray, sigma: float, accuracy: float = 0.0002) -> np.ndarray:
    """ImageJ's ``GaussianBlur`` of a float image (x direction first, then y), edges replicated."""
    out = np.asarray(img, np.float64)
    if sigma <= 0:
        return out.copy()
    out = _blur_lines(out, sigma, accuracy)  # rows (x)
    return _blur_lines(out.T, sigma, accuracy).T  # columns (y)
