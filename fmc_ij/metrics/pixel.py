"""Voxel-wise fidelity metrics: PSNR, NRMSE, MAE, Pearson, in one chunked float64 pass.

The sums are accumulated plane block by plane block, so memory-mapped volumes of any size work.
Definitions follow scikit-image (``peak_signal_noise_ratio``, ``normalized_root_mse``) so the numbers
can be cross-checked; documented values instead of crashes: PSNR of identical images is ``inf``,
Pearson of a constant image is ``nan``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from fmc_ij.errors import FmcInputError

NrmseNorm = Literal["euclidean", "min-max", "mean"]


def check_images(*images: np.ndarray, names: tuple[str, ...] | None = None) -> None:
    """Same shape, numeric, finite: the preconditions of every metric (one-line errors otherwise)."""
    names = names or tuple(f"image {i + 1}" for i in range(len(images)))
    shapes = {np.shape(im) for im in images}
    if len(shapes) > 1:
        listed = ", ".join(f"{n} {np.shape(im)}" for n, im in zip(names, images))
        raise FmcInputError(f"images differ in shape ({listed}); register or crop them to one grid first")
    for name, im in zip(names, images):
        dt = np.asarray(im[:0] if np.ndim(im) else im).dtype
        if not (np.issubdtype(dt, np.number) or dt == np.bool_) or np.issubdtype(dt, np.complexfloating):
            raise FmcInputError(f"{name} has dtype {dt}; metrics need real-valued images")
        if np.issubdtype(dt, np.floating) and not _all_finite(im):
            raise FmcInputError(f"{name} contains NaN or infinite values; fix or mask them before evaluating")


def _all_finite(im: np.ndarray, block: int = 2**24) -> bool:
    flat = np.asarray(im).reshape(-1)
    return all(np.isfinite(flat[i : i + block]).all() for i in range(0, flat.size, block))


Affine = tuple[tuple[float, float], tuple[float, float]]


def _moments(pred: np.ndarray, gt: np.ndarray, normalize: Affine | None, block: int = 2**24) -> dict[str, float]:
    p, g = np.asarray(pred).reshape(-1), np.asarray(gt).reshape(-1)
    (op, sp), (og, sg) = ((lo, hi - lo if hi != lo else 1.0) for lo, hi in normalize or ((0.0, 1.0), (0.0, 1.0)))
    acc = dict.fromkeys(("n", "sp", "sg", "spp", "sgg", "spg", "sad", "ssd"), 0.0)
    acc["gmin"], acc["gmax"] = math.inf, -math.inf
    for i in range(0, p.size, block):
        a = (p[i : i + block].astype(np.float64) - op) / sp
        b = (g[i : i + block].astype(np.float64) - og) / sg
        d = a - b
        acc["n"] += a.size
        acc["sp"] += a.sum()
        acc["sg"] += b.sum()
        acc["spp"] += a @ a
        acc["sgg"] += b @ b
        acc["spg"] += a @ b
        acc["sad"] += np.abs(d).sum()
        acc["ssd"] += d @ d
        acc["gmin"], acc["gmax"] = min(acc["gmin"], b.min()), max(acc["gmax"], b.max())
    return acc


def pixel_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    data_range: float | None = None,
    nrmse_norm: NrmseNorm = "euclidean",
    normalize: Affine | None = None,
) -> dict[str, float]:
    """PSNR, NRMSE, MAE, MSE and Pearson's r of ``pred`` against ``gt`` in one pass.

    Parameters
    ----------
    pred, gt : ndarray
        Same shape, any dimensionality, finite.
    data_range : float, optional
        Peak value for PSNR; defaults to ``gt.max() - gt.min()`` (1 after percentile normalisation
        would be the challenge's convention: pass it explicitly).
    nrmse_norm : {"euclidean", "min-max", "mean"}
        Denominator of NRMSE: ``sqrt(mean(gt^2))``, ``gt.max() - gt.min()`` or ``mean(gt)``, as in skimage.
    normalize : ((lo_pred, hi_pred), (lo_gt, hi_gt)), optional
        Map each image by ``(x - lo) / (hi - lo)`` on the fly (percentile normalisation without copies).

    Returns
    -------
    dict
        ``psnr`` (dB; inf for identical images), ``nrmse``, ``mae``, ``mse``, ``pearson`` (nan if either
        image is constant).
    """
    check_images(pred, gt, names=("prediction", "ground truth"))
    m = _moments(pred, gt, normalize)
    n = m["n"]
    mse = m["ssd"] / n
    rng = data_range if data_range is not None else m["gmax"] - m["gmin"]
    psnr = math.inf if mse == 0 else (10 * math.log10(rng**2 / mse) if rng > 0 else -math.inf)
    denom = {
        "euclidean": math.sqrt(m["sgg"] / n),
        "min-max": m["gmax"] - m["gmin"],
        "mean": m["sg"] / n,
    }[nrmse_norm]
    nrmse = math.sqrt(mse) / denom if denom else math.nan
    cov = m["spg"] / n - (m["sp"] / n) * (m["sg"] / n)
    vp = m["spp"] / n - (m["sp"] / n) ** 2
    vg = m["sgg"] / n - (m["sg"] / n) ** 2
    pearson = cov / math.sqrt(vp * vg) if vp > 0 and vg > 0 else math.nan
    return {"psnr": psnr, "nrmse": nrmse, "mae": m["sad"] / n, "mse": mse, "pearson": pearson}


def psnr(pred: np.ndarray, gt: np.ndarray, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB (see :func:`pixel_metrics`)."""
    return pixel_metrics(pred, gt, data_range=data_range)["psnr"]


def nrmse(pred: np.ndarray, gt: np.ndarray, *, norm: NrmseNorm = "euclidean") -> float:
    """Normalised root-mean-square error (see :func:`pixel_metrics`)."""
    return pixel_metrics(pred, gt, nrmse_norm=norm)["nrmse"]


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error."""
    return pixel_metrics(pred, gt)["mae"]


def pearson(pred: np.ndarray, gt: np.ndarray) -> float:
    """Pearson correlation coefficient; nan if either image is constant."""
    return pixel_metrics(pred, gt)["pearson"]
