"""Integrity of TIFF files before and while they are read: missing, empty, truncated or damaged files become
one-line :class:`~fmc_ij.errors.FmcInputError` s instead of silently wrong pixels or a parser's traceback."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from fmc_ij.errors import FmcInputError


def check_file(path: Path) -> int:
    """The file's size, after one ``stat``: missing, folder and empty files are one-line errors."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FmcInputError(f"{path}: no such file") from None
    if stat.S_ISDIR(st.st_mode):
        raise FmcInputError(f"{path}: is a folder, expected a TIFF file")
    if st.st_size == 0:
        raise FmcInputError(f"{path}: empty file; re-export or re-download it")
    return st.st_size


def check_complete(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries, path: Path, size: int) -> bool:
    """Reject truncated or inconsistent files: tifffile would silently return fewer planes, zeros, or a huge image
    of nothing (a damaged ImageLength tag). Returns whether the pages still need :func:`check_pages`.

    A contiguous series (ImageJ, shaped, untiled OME) is checked from its data offset and size alone: its pages
    are not parsed one by one, which is what reading would cost again.
    """
    first = tif.pages.first
    expected = tif.imagej_metadata.get("images") if tif.is_imagej and tif.imagej_metadata else None
    planes = int(series.size) // max(1, int(getattr(first, "size", 0) or 1))
    if expected is not None and int(expected) > planes:  # tifffile fell back to the planes it could find
        raise FmcInputError(f"{path}: truncated file ({planes} of {expected} planes); re-export or re-download it")
    offsets = getattr(first, "dataoffsets", ())
    # tifffile's ``chunked`` already counts the sample planes of a planar-separate image
    chunks = int(np.prod(getattr(first, "chunked", (len(offsets),))))
    if offsets and chunks != len(offsets):
        raise FmcInputError(
            f"{path}: damaged tags ({len(offsets)} strips/tiles stored for an image that needs {chunks}); "
            "re-export the file"
        )
    if series.dataoffset is not None:
        # The series' size comes from the metadata (ImageJ's image count, the shaped description): data that ends
        # inside the file is all there. Counting the pages would walk every IFD (a third of a small read).
        if series.dataoffset + series.nbytes > size:
            raise FmcInputError(f"{path}: truncated file (pixel data past the end); re-export or re-download it")
        return False
    return True


def check_pages(pages: Any, path: Path, size: int) -> None:
    """Every page's strips or tiles lie inside the file."""
    for page in pages:
        offsets, counts = getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ())
        if offsets and max(o + c for o, c in zip(offsets, counts)) > size:
            raise FmcInputError(f"{path}: truncated file (pixel data past the end); re-export or re-download it")


def damaged(path: Path, e: BaseException, stage: str = "pixels") -> FmcInputError:
    """The one-line error for a file tifffile cannot parse or decode (the exception's text, shortened)."""
    detail = " ".join(str(e).split())[:120]
    what = f"{type(e).__name__}: {detail}" if detail else type(e).__name__
    if stage == "pixels":
        return FmcInputError(f"{path}: pixel data unreadable ({what}); the file may be truncated or damaged")
    return FmcInputError(f"{path}: not a readable TIFF ({what}); check the file")


class CheckedArray:
    """A lazy array over a TIFF (zarr) whose decoding errors become one-line :class:`FmcInputError` s: a damaged
    tile shows up only when it is read."""

    def __init__(self, arr: Any, path: Path) -> None:
        self._arr, self._path = arr, path
        self.shape, self.dtype, self.ndim = tuple(arr.shape), np.dtype(arr.dtype), len(arr.shape)

    def __getitem__(self, idx: Any) -> np.ndarray:
        try:
            return np.asarray(self._arr[idx])
        except (FmcInputError, MemoryError, IndexError):
            raise
        except Exception as e:
            raise damaged(self._path, e) from None

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        a = self[...]
        return a.astype(dtype) if dtype is not None else a

    def __len__(self) -> int:
        return self.shape[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._arr, name)
