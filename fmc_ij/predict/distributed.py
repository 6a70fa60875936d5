"""Prediction on a Dask cluster: one task per file, or one task per group of tiles of a huge volume.

Workers open the model and the (lazy) input themselves, so only paths, tile coordinates and the
normalisation travel; tiles are the same as in a single process and batched the same way, so the result is
the same. ``fmc-ij predict --workers N`` starts a LocalCluster; ``--scheduler ADDRESS`` joins a running one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fmc_ij.data.patches import Normalizer
from fmc_ij.errors import FmcInputError
from fmc_ij.io import open_lazy
from fmc_ij.predict.core import Prediction, plan_tiles, run_tiles
from fmc_ij.predict.files import collect_inputs, predict_file
from fmc_ij.predict.model import ChannelPredictors, Predictor, load_one, load_predictor
from fmc_ij.progress import track

_CACHE: dict[tuple[str, str, bool], Predictor | ChannelPredictors] = {}


def _predictor(model: str, device: str, tta: bool = False) -> Predictor | ChannelPredictors:
    # One load per worker process, reused by its later tasks.
    key = (model, device, tta)
    if key not in _CACHE:
        _CACHE[key] = load_predictor(model, device)
        _CACHE[key].tta = tta
    return _CACHE[key]


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: connected to ``scheduler``, or on a fresh LocalCluster of ``workers`` processes."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise FmcInputError("Dask is not installed: pip install 'fmc-ij[dask]'") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as err:
            raise FmcInputError(f"cannot reach the Dask scheduler at {scheduler} ({err})") from None
        with client:
            yield client
        return
    threads = max(1, (os.cpu_count() or 1) // max(1, workers or 1))
    with LocalCluster(n_workers=workers or 1, threads_per_worker=threads, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        yield client


def _file_task(model: str, device: str, tta: bool, src: str, dst: str, kwargs: dict[str, Any]) -> list[str]:
    return [str(p) for p in predict_file(_predictor(model, device, tta), src, dst, progress=False, **kwargs)]


def predict_files_dask(
    client: Any, model: str | os.PathLike, inputs: Sequence[str | os.PathLike], out: str | os.PathLike,
    device: str = "cpu", pattern: str = "*", tta: bool = False, **kwargs: Any,
) -> list[Path]:  # fmt: skip
    """:func:`fmc_ij.predict.predict_files` with one Dask task per file (a multi-channel model: per CZYX file)."""
    out = Path(out)
    pairs = collect_inputs(inputs, pattern)
    p = load_predictor(model, "cpu")
    if isinstance(p, Predictor) and p.channels > 1 and any("C" not in open_lazy(f).axes for f, _ in pairs):
        raise FmcInputError(
            "a multi-channel model on a cluster takes multi-channel (CZYX) files; predict one-channel files "
            "without --workers / --scheduler (they are grouped by specimen)"
        )
    futures = [client.submit(_file_task, str(model), device, tta, str(src), str(out / rel), kwargs, pure=False)
               for src, rel in pairs]  # fmt: skip
    written: list[Path] = []
    for f in track(futures, "predict (dask)", total=len(futures)):
        written += [Path(p) for p in f.result()]
    return written


def _tile_task(model: str, device: str, tta: bool, src: str, norm: tuple[float, float], chunk: list) -> list:
    p = _predictor(model, device, tta)
    image = open_lazy(src).data
    return run_tiles(p, image, Normalizer(*norm), chunk)


def predict_volume_dask(
    client: Any,
    model: str | os.PathLike,
    src: str | os.PathLike,
    *,
    device: str = "cpu",
    tile: Sequence[int] | None = None,
    halo: Sequence[int] | None = None,
    batch: int = 1,
    out: Any | None = None,
    tta: bool = False,
) -> Prediction:
    """Predict one (large) image with its tile groups spread over the cluster.

    Same tiles and batches as :func:`fmc_ij.predict.predict_array`, hence the same result.
    """
    p = load_one(model, "cpu")
    p.tta = tta
    if p.channels > 1:
        raise FmcInputError("predict multi-channel images file by file on a cluster (predict_files_dask)")
    image = open_lazy(src).data
    norm = Normalizer.fit(image, p.pmin, p.pmax)
    chunks = plan_tiles(p, tuple(image.shape), tile=tile, halo=halo, batch=batch)
    shape = tuple(image.shape)
    mean = out if out is not None else np.zeros(shape, np.float32)
    unc = np.zeros(shape, np.float32) if p.has_uncertainty else None
    futures = [client.submit(_tile_task, str(model), device, tta, str(src), (norm.lo, norm.hi), c, pure=False)
               for c in chunks]  # fmt: skip
    for f in track(futures, "predict (dask tiles)", total=len(futures)):
        for dst, m, u in f.result():
            mean[dst] = m
            if unc is not None and u is not None:
                unc[dst] = u
    return Prediction(mean, unc, norm)
