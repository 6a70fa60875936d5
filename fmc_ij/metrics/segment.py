"""Segmentation for N_IOU: a classical 3D segmenter (offline) and Cellpose (optional), and the N_IOU score.

The challenge's N_IOU (see ``shared/specs/fuse-my-cells.md``) segments the images with Cellpose
(``nuclei`` for nuclei, ``cyto3`` for membranes) after making them isotropic by linear interpolation::

    n_iou = (prediction_iou - reference_iou) / (best_iou - reference_iou)

with ``best_iou`` = IoU(verified input labels, verified GT labels), ``reference_iou`` = IoU(verified input
labels, segmentation of the GT) and ``prediction_iou`` = IoU(segmentation of the prediction, verified GT
labels). The organisers' verified labels are not public: when they are not given, :func:`n_iou` uses the
segmentation of the GT as the reference, ``reference_iou`` = IoU(seg(input), seg(GT)),
``prediction_iou`` = IoU(seg(prediction), seg(GT)) and ``best_iou`` = 1. The organisers' isotropic
spacing is not published either; the default here is the coarsest axis (tractable on a CPU).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from fmc_ij.errors import FmcInputError

IouMode = Literal["foreground", "instance"]


class Segmenter(Protocol):
    """Anything that maps an isotropic 3D (or 2D) image to an integer label image (0 = background)."""

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


def make_isotropic(image: np.ndarray, spacing: Sequence[float], target: float | None = None) -> np.ndarray:
    """Resample to isotropic voxels of ``target`` (default: the coarsest spacing) by linear interpolation."""
    spacing = [float(s) for s in spacing][-image.ndim :]
    target = float(target or max(spacing))
    zoom = [s / target for s in spacing]
    if all(abs(z - 1) < 1e-6 for z in zoom):
        return np.asarray(image, dtype=np.float32)
    return ndimage.zoom(np.asarray(image, dtype=np.float32), zoom, order=1, mode="nearest", grid_mode=True)


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(values))


def segment_nuclei(image: np.ndarray, *, radius: float = 4.0, smooth: float = 1.0) -> np.ndarray:
    """Classical nucleus segmentation: Gaussian smoothing, Otsu threshold, distance-transform watershed.

    Parameters
    ----------
    image : ndarray
        Isotropic 2D or 3D image (bright nuclei).
    radius : float
        Expected nucleus radius in voxels; sets the seed spacing so one nucleus gives one seed.
    smooth : float
        Gaussian sigma (voxels) applied before thresholding.
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    img = ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), smooth)
    if float(img.max()) == float(img.min()):
        return np.zeros(img.shape, np.int32)
    mask = img > _otsu(img)
    mask = ndimage.binary_opening(mask, iterations=1)
    dist = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=max(1, int(radius * 0.7)), labels=ndimage.label(mask)[0])
    markers = np.zeros(img.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=mask).astype(np.int32)


def segment_membranes(image: np.ndarray, *, radius: float = 4.0, smooth: float = 1.0) -> np.ndarray:
    """Classical cell segmentation from a membrane stain: watershed of the smoothed membrane signal.

    Seeds are the regional minima (cell interiors) at least ``radius`` voxels from bright membrane,
    inside the specimen (the filled, smoothed foreground); the basins are the cells.
    """
    from skimage.segmentation import watershed

    img = ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), smooth)
    if float(img.max()) == float(img.min()):
        return np.zeros(img.shape, np.int32)
    membrane = img > _otsu(img)
    coarse = ndimage.gaussian_filter(img, 3 * smooth + 2)  # membranes blur into a solid specimen
    specimen = ndimage.binary_fill_holes(ndimage.binary_closing(coarse > 0.5 * _otsu(coarse), iterations=2))
    interior = ndimage.distance_transform_edt(~membrane)
    seeds = (interior >= max(1.0, radius * 0.5)) & specimen
    markers, _ = ndimage.label(ndimage.binary_erosion(seeds))
    return watershed(img, markers, mask=specimen).astype(np.int32)


CLASSICAL: dict[str, Callable[..., np.ndarray]] = {"nucleus": segment_nuclei, "membrane": segment_membranes}
CELLPOSE_MODELS = {"nucleus": "nuclei", "membrane": "cyto3"}


def cellpose_segmenter(channel: str, *, diameter: float | None = None, gpu: bool = False) -> Segmenter:
    """Cellpose with the challenge's models (``nuclei``, ``cyto3``); weights must already be on disk.

    Raises a one-line :class:`FmcInputError` when the ``cellpose`` package or its weights are missing
    (this toolkit never downloads them: copy them into Cellpose's model directory).
    """
    if importlib.util.find_spec("cellpose") is None:
        raise FmcInputError(
            "Cellpose is not installed; run `pip install cellpose` (and place its weights locally) "
            "or use the built-in classical segmenter (--segmenter classical)"
        )
    from cellpose import models  # type: ignore[import-not-found]

    name = CELLPOSE_MODELS.get(channel)
    if name is None:
        raise FmcInputError(f"no Cellpose model for channel {channel!r}; use 'nucleus' or 'membrane'")
    model_dir = Path(getattr(models, "MODEL_DIR", Path.home() / ".cellpose" / "models"))
    if not any(model_dir.glob(f"{name}*")):
        raise FmcInputError(
            f"Cellpose weights for {name!r} not found in {model_dir}; copy them there from a machine "
            "with internet access (this toolkit does not download)"
        )
    model = models.Cellpose(gpu=gpu, model_type=name)

    def run(image: np.ndarray) -> np.ndarray:
        masks = model.eval(image, diameter=diameter, channels=[0, 0], do_3D=image.ndim == 3)[0]
        return np.asarray(masks, np.int32)

    return run


def get_segmenter(channel: str, kind: str = "classical", *, radius: float = 4.0) -> Segmenter:
    """The segmenter for a channel: ``"classical"`` (offline, scikit-image) or ``"cellpose"``."""
    if kind == "cellpose":
        return cellpose_segmenter(channel)
    if kind != "classical":
        raise FmcInputError(f"unknown segmenter {kind!r}; use 'classical' or 'cellpose'")
    fn = CLASSICAL.get(channel, segment_nuclei)
    return lambda image: fn(image, radius=radius)


def iou(a: np.ndarray, b: np.ndarray, mode: IouMode = "foreground") -> float:
    """IoU of two label images.

    ``foreground``: IoU of the masks (label > 0). ``instance``: objects matched one-to-one by the
    Hungarian algorithm on their IoU; the score is the sum of matched IoUs over the number of objects
    in the union of both sets (unmatched objects count 0), so splits, merges and misses all cost.
    Two empty images give 1 (nothing to find, nothing found).
    """
    if a.shape != b.shape:
        raise FmcInputError(f"label images differ in shape: {a.shape} vs {b.shape}")
    if mode == "foreground":
        fa, fb = a > 0, b > 0
        union = int(np.count_nonzero(fa | fb))
        return 1.0 if union == 0 else int(np.count_nonzero(fa & fb)) / union
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    na, nb = len(ua), len(ub)
    # Contingency table of label pairs (row/col 0 = background when present).
    table = np.bincount(ia.ravel() * nb + ib.ravel(), minlength=na * nb).reshape(na, nb).astype(np.float64)
    fa = ua > 0
    fb = ub > 0
    inter = table[np.ix_(fa, fb)]
    n_a, n_b = int(fa.sum()), int(fb.sum())
    if n_a == 0 and n_b == 0:
        return 1.0
    if n_a == 0 or n_b == 0:
        return 0.0
    union = table[fa].sum(1)[:, None] + table[:, fb].sum(0)[None, :] - inter
    ious = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    rows, cols = linear_sum_assignment(-ious)
    matched = ious[rows, cols]
    matched = matched[matched > 0]
    return float(matched.sum() / (n_a + n_b - len(matched)))


def n_iou(
    pred: np.ndarray,
    gt: np.ndarray,
    inp: np.ndarray,
    *,
    segmenter: Segmenter,
    spacing: Sequence[float] | None = None,
    iso_spacing: float | None = None,
    gt_labels: np.ndarray | None = None,
    input_labels: np.ndarray | None = None,
    mode: IouMode = "foreground",
) -> dict[str, float]:
    """The challenge's N_IOU and its three IoUs (see the module docstring for the formula).

    Images (and given verified labels, by nearest neighbour) are made isotropic first when ``spacing``
    is given. Returns ``n_iou`` (nan when ``best_iou == reference_iou``), ``prediction_iou``,
    ``reference_iou``, ``best_iou``.
    """
    if spacing is not None:
        pred, gt, inp = (make_isotropic(v, spacing, iso_spacing) for v in (pred, gt, inp))
        zoom_to = gt.shape

        def relabel(lab: np.ndarray) -> np.ndarray:
            z = [n / o for n, o in zip(zoom_to, lab.shape)]
            out = ndimage.zoom(lab, z, order=0, grid_mode=True, mode="nearest")
            return out[tuple(slice(0, n) for n in zoom_to)]

        gt_labels = relabel(gt_labels) if gt_labels is not None else None
        input_labels = relabel(input_labels) if input_labels is not None else None
    seg_gt, seg_pred = segmenter(gt), segmenter(pred)
    if gt_labels is not None and input_labels is not None:
        best = iou(input_labels, gt_labels, mode)
        ref = iou(input_labels, seg_gt, mode)
        got = iou(seg_pred, gt_labels, mode)
    else:
        best, ref, got = 1.0, iou(segmenter(inp), seg_gt, mode), iou(seg_pred, seg_gt, mode)
    denom = best - ref
    score = (got - ref) / denom if abs(denom) > 1e-9 else math.nan
    return {"n_iou": score, "prediction_iou": got, "reference_iou": ref, "best_iou": best}
