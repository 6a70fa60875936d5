"""Prediction on a Dask cluster: one task per file, or one task per group of tiles of a huge image.

Workers open the model themselves (once per process), so only paths, tile coordinates and the normalisation
travel; a file-backed image travels as its path (each tile read on the worker), an in-memory one is scattered
once. Tiles and batches are those of one process, and the model's task runs through the same
:func:`fmc_ij.predict.restore.restore` (isotropic, projection, flips, ensembles), so the result is the same.
``fmc-ij predict --workers N`` starts a LocalCluster; ``--scheduler ADDRESS`` joins a running one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmc_ij.errors import FmcInputError
from fmc_ij.io import open_lazy
from fmc_ij.norm import ChannelNormalizer, Normalizer
from fmc_ij.predict.core import Prediction, plan_tiles, run_tiles
from fmc_ij.predict.files import _Fresh, collect_inputs, predict_file
from fmc_ij.predict.model import ChannelPredictors, Predictor, load_predictor
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
    out.mkdir(parents=True, exist_ok=True)  # a file in the way fails before the cluster works
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


def _tile_task(model: str, device: str, tta: bool, image: Any, norm: Any, chunk: list) -> list:
    p = _predictor(model, device, tta)
    assert isinstance(p, Predictor)
    return run_tiles(p, image, norm, chunk)


@dataclass
class DaskTiles:
    """A tile runner (an ``engine`` for :func:`fmc_ij.predict.restore.restore` and :func:`predict_file`) that
    spreads the tile groups of one image over a Dask cluster; same tiles and batches as
    :func:`fmc_ij.predict.predict_array`, hence the same result."""

    client: Any
    model: str
    device: str = "cpu"
    tta: bool = False

    def __call__(
        self,
        predictor: Predictor,
        image: Any,
        *,
        tile: Sequence[int] | None = None,
        halo: Sequence[int] | None = None,
        border: Sequence[int] | None = None,
        batch: int = 1,
        out: Any | None = None,
        uncertainty_out: Any | None = None,
        normalizer: Normalizer | ChannelNormalizer | None = None,
        progress: bool = True,
    ) -> Prediction:
        shape = tuple(int(s) for s in image.shape)
        spatial = shape[1:] if predictor.channels > 1 else shape
        fit = ChannelNormalizer.fit if predictor.channels > 1 else Normalizer.fit
        norm = normalizer or fit(image, predictor.pmin, predictor.pmax)
        chunks = plan_tiles(predictor, spatial, tile=tile, halo=halo, border=border, batch=batch)
        # A file travels as its path (workers read their tiles); anything else is sent once to every worker.
        ref = image if isinstance(image, _Fresh) else self.client.scatter(np.asarray(image), broadcast=True)
        mean = out if out is not None else np.zeros(shape, np.float32)
        unc = uncertainty_out
        if unc is None and predictor.has_uncertainty:
            unc = np.zeros(shape, np.float32)
        futures = [self.client.submit(_tile_task, self.model, self.device, self.tta, ref, norm, c, pure=False)
                   for c in chunks]  # fmt: skip
        done = track(futures, "predict (dask tiles)", total=len(futures)) if progress else futures
        moments = None
        for f in done:
            for dst, m, u, mom in f.result():
                mean[dst] = m
                if unc is not None and u is not None:
                    unc[dst] = u
                if mom is not None:
                    moments = mom if moments is None else moments + mom
        return Prediction(mean, unc, norm, moments)


def predict_file_dask(
    client: Any,
    model: str | os.PathLike,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    device: str = "cpu",
    tta: bool = False,
    **kwargs: Any,
) -> list[Path]:
    """:func:`fmc_ij.predict.predict_file` with the tile groups of one (large) image spread over the cluster."""
    p = _predictor(str(model), "cpu", tta)
    return predict_file(p, src, dst, engine=DaskTiles(client, str(model), device, tta), **kwargs)
