"""Uncompressed TIFF pixels copied straight out of a memory map of the file.

tifffile reads an uncompressed series with ``readinto`` into a fresh buffer (every page of it faulted in one by
one while the kernel copies) and decodes uncompressed tiles one Python call per tile. Mapping the file and
copying from the page cache with one numpy copy per plane is 1.3-1.4x faster for a 32 MiB stack on this machine
(`benchmarks/bench_io.py`), with the same bytes. Anything else (compression, predictors, planar or packed
samples) returns None and goes through tifffile.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import tifffile

from fmc_ij.errors import FmcInputError


def _truncated(path: Path) -> FmcInputError:
    return FmcInputError(f"{path}: truncated file (pixel data past the end); re-export or re-download it")


def _map(path: Path) -> mmap.mmap:
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):  # Linux/macOS: read ahead, drop behind
        mm.madvise(mmap.MADV_SEQUENTIAL)
    return mm


def _plain(page: tifffile.TiffPage, dtype: np.dtype) -> bool:
    """Samples stored as the dtype says, one per pixel, no compression or predictor."""
    return (
        getattr(page, "compression", 1) == 1
        and getattr(page, "predictor", 1) == 1
        and getattr(page, "samplesperpixel", 1) == 1
        and getattr(page, "fillorder", 1) == 1
        and getattr(page, "bitspersample", 0) == dtype.itemsize * 8
    )


def read_contiguous(path: Path, tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> np.ndarray | None:
    """An uncompressed contiguous series (ImageJ, shaped, untiled OME) in one copy, in native byte order; None
    where that does not apply."""
    dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder)
    if series.dataoffset is None or getattr(series.keyframe, "compression", 1) != 1:
        return None
    count = int(np.prod(series.shape))
    mm = _map(path)
    try:
        if series.dataoffset + count * dtype.itemsize > len(mm):
            raise _truncated(path)
        return np.frombuffer(mm, dtype, count, series.dataoffset).reshape(series.shape).astype(dtype.newbyteorder("="))
    finally:
        mm.close()


def read_tiles(path: Path, tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> np.ndarray | None:
    """An uncompressed 2D-tiled series whose tiles lie one after another in each page (as tifffile and the Fuse My
    Cells template write them): each plane is one reshape-and-copy. None where that does not apply."""
    key = series.keyframe
    dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder)
    if not getattr(key, "is_tiled", False) or getattr(key, "tiledepth", 1) != 1 or not _plain(key, dtype):
        return None
    th, tw = int(key.tilelength), int(key.tilewidth)
    h, w = int(key.imagelength), int(key.imagewidth)
    ty, tx = -(-h // th), -(-w // tw)
    tile_bytes = th * tw * dtype.itemsize
    pages = list(series.pages)
    if len(pages) * h * w != int(np.prod(series.shape)):
        return None
    starts = []
    for page in pages:
        offsets, counts = page.dataoffsets, page.databytecounts
        if len(offsets) != ty * tx or any(c != tile_bytes for c in counts):
            return None
        if any(b - a != tile_bytes for a, b in zip(offsets, offsets[1:])):
            return None  # tiles apart: tifffile seeks to each
        starts.append(int(offsets[0]))
    out = np.empty((len(pages), h, w), dtype.newbyteorder("="))  # native order: torch takes no other
    mm = _map(path)
    try:
        if max(starts) + ty * tx * tile_bytes > len(mm):
            raise _truncated(path)
        for i, start in enumerate(starts):
            # the tiles (ty, tx, th, tw) as the padded plane (ty, th, tx, tw); the edge tiles' padding is cropped
            plane = np.frombuffer(mm, dtype, ty * tx * th * tw, start).reshape(ty, tx, th, tw).transpose(0, 2, 1, 3)
            out[i] = plane.reshape(ty * th, tx * tw)[:h, :w]
            del plane  # no view may outlive the map
    finally:
        mm.close()
    return out.reshape(series.shape)
