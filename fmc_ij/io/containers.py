"""Chunked containers: HDF5 (PlantSeg, ilastik, BigStitcher exports), N5 and plain Zarr arrays, read lazily.

A dataset inside a container is named ``file.h5:/path/in/file`` (``.h5``, ``.hdf5``, ``.hdf``, ``.n5``, ``.zarr``);
without a path the one image-like dataset is found automatically (several: a raw-data name such as ``raw`` or
``data`` wins, label/mask datasets are skipped; otherwise a one-line error lists them). The voxel size comes from the
attributes the tools write: ``element_size_um`` (PlantSeg, ilastik; ZYX order), ``resolution``, ``spacing``,
``voxel_size``, ``pixel_size`` (+ ``unit``), N5 ``pixelResolution`` / ``resolution`` (XYZ order, as N5 stores
dimensions); axes from ``axes`` / ``axistags`` / ``DIMENSION_LABELS``, else inferred from the shape
(:func:`fmc_ij.io.meta.infer_axes`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from fmc_ij.errors import FmcInputError
from fmc_ij.io.meta import Image, meta_from_dict

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
N5_SUFFIXES = (".n5",)
ZARR_SUFFIXES = (".zarr",)
CONTAINER_SUFFIXES = HDF5_SUFFIXES + N5_SUFFIXES + ZARR_SUFFIXES
#: Preferred names when a container holds several image-like datasets (PlantSeg/ilastik/BigStitcher).
RAW_NAMES = ("raw", "data", "image", "images", "volume", "input", "s0", "0", "cells")
_SKIP = re.compile(r"label|seg|mask|pred|prob|boundar", re.I)
_SPLIT = re.compile(r"^(?P<file>.*?\.(?:h5|hdf5|hdf|he5|n5|zarr))(?::(?P<inner>.*))?$", re.I)


def split_container_path(path: str | os.PathLike) -> tuple[Path, str | None] | None:
    """``"a.h5:/raw"`` -> ``(Path("a.h5"), "raw")``; ``"a.h5"`` -> ``(Path("a.h5"), None)``; None for other files."""
    m = _SPLIT.match(os.fspath(path))
    if m is None:
        return None
    inner = m["inner"]
    return Path(m["file"]), (inner.strip("/") or None) if inner is not None else None


def is_container(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an HDF5 / N5 / Zarr container (or a dataset in one)."""
    return split_container_path(path) is not None


def output_name(path: str | os.PathLike, suffix: str = ".tif") -> str:
    """A file name for results derived from ``path``: ``a.tif`` stays ``a.tif``; a container dataset
    ``vol.h5:/s0/raw`` becomes ``vol_s0_raw.tif`` (``vol.tif`` when the container is named alone)."""
    split = split_container_path(path)
    if split is None:
        return Path(path).name
    file, inner = split
    return file.stem + ("_" + inner.replace("/", "_") if inner else "") + suffix


def _attr(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray):
        return [_attr(x) for x in v.tolist()] if v.ndim else _attr(v.item())
    if isinstance(v, (list, tuple)):
        return [_attr(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _axes_from_attrs(attrs: dict[str, Any], ndim: int, reverse: bool) -> str | None:
    for key in ("axes", "axis_order", "dimension_labels", "axistags"):
        v = attrs.get(key)
        if v is None:
            continue
        if key == "axistags" and isinstance(v, str):  # vigra / ilastik JSON
            try:
                v = [a["key"] for a in json.loads(v)["axes"]]
            except (ValueError, KeyError, TypeError):
                continue
        letters = "".join(str(a)[:1] for a in v) if isinstance(v, (list, tuple)) else str(v)
        letters = letters.upper()
        if reverse and isinstance(v, (list, tuple)):
            letters = letters[::-1]
        if len(letters) == ndim and set(letters) <= set("TCZYXS") and len(set(letters)) == ndim:
            return letters
    return None


def _spacing_from_attrs(attrs: dict[str, Any], axes: str | None, ndim: int, reverse: bool) -> dict[str, Any]:
    """``PhysicalSize*`` / ``unit`` keys for :func:`meta_from_dict` from the usual voxel-size attributes."""
    raw: dict[str, Any] = {}
    unit = attrs.get("unit") or attrs.get("units")
    if isinstance(unit, (list, tuple)):
        unit = unit[-1] if unit else None
    for key, default_unit in (("element_size_um", "µm"), ("pixelresolution", None), ("resolution", None),
                              ("spacing", None), ("voxel_size", None), ("voxelsize", None), ("pixel_size", None),
                              ("scale", None)):  # fmt: skip
        v = attrs.get(key)
        if isinstance(v, dict):  # N5 pixelResolution {"dimensions": [...], "unit": "um"}
            unit = unit or v.get("unit")
            v = v.get("dimensions")
        if not isinstance(v, (list, tuple)) or not v:
            continue
        try:
            vals = [float(x) for x in v]
        except (TypeError, ValueError):
            continue
        if reverse:
            vals = vals[::-1]
        spatial = [a for a in (axes or "") if a in "ZYX"] or list("ZYX"[-min(len(vals), 3) :])
        if len(vals) == ndim and axes:
            vals = [x for a, x in zip(axes, vals) if a in "ZYX"]
        if len(vals) != len(spatial):
            continue
        for a, x in zip(spatial, vals):
            raw[f"PhysicalSize{a}"] = x
        raw["unit"] = default_unit or unit or "µm"
        break
    for key in ("channel_names", "channels", "channel"):
        if key in attrs:
            raw["channel_names" if key != "channel" else "channel"] = attrs[key]
    return raw


def _image(data: Any, attrs: dict[str, Any], reverse: bool = False, axes: str | None = None) -> Image:
    shape = tuple(int(n) for n in data.shape)
    if not shape or min(shape) == 0:
        raise FmcInputError(f"empty dataset (shape {shape}); name another one")
    attrs = {str(k).lower(): _attr(v) for k, v in attrs.items()}
    stored = axes or _axes_from_attrs(attrs, len(shape), reverse)
    raw = _spacing_from_attrs(attrs, stored, len(shape), reverse)
    if stored:
        raw["axes"] = stored
    meta = meta_from_dict(raw, len(shape), axes=stored, shape=shape)
    return Image(data, meta)


def _pick(candidates: list[tuple[str, tuple[int, ...]]], file: Path) -> str:
    """The one image-like dataset of a container (see the module docstring)."""
    images = [(n, s) for n, s in candidates if len(s) >= 2 and min(s[-2:]) >= 4]
    if not images:
        raise FmcInputError(f"{file}: no image dataset inside (2D or more, at least 4x4); name one as {file}:/path")
    if len(images) == 1:
        return images[0][0]
    raw = [n for n, _ in images if n.rsplit("/", 1)[-1].lower() in RAW_NAMES]
    if len(raw) == 1:
        return raw[0]
    plain = [n for n, _ in images if not _SKIP.search(n.rsplit("/", 1)[-1])]
    if len(plain) == 1:
        return plain[0]
    listed = ", ".join(f"/{n} {s}" for n, s in images[:6])
    raise FmcInputError(f"{file}: several image datasets ({listed}); name one, e.g. {file}:/{images[0][0]}")


def _open_hdf5(file: Path, inner: str | None, axes: str | None) -> Image:
    try:
        import h5py
    except ImportError:
        raise FmcInputError(f"{file}: reading HDF5 needs h5py; install it with `pip install h5py`") from None
    try:
        f = h5py.File(file, "r")
    except OSError as e:
        raise FmcInputError(f"{file}: not a readable HDF5 file ({e}); check or re-export it") from None
    try:
        if inner is None:
            found: list[tuple[str, tuple[int, ...]]] = []
            f.visititems(lambda n, o: found.append((n, o.shape)) if isinstance(o, h5py.Dataset) else None)
            inner = _pick(found, file)
        if inner not in f or not isinstance(f[inner], h5py.Dataset):
            names = []
            f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            raise FmcInputError(f"{file}: no dataset /{inner} (datasets: {', '.join(names[:8]) or 'none'})")
        ds = f[inner]
        attrs = {**dict(f.attrs), **dict(ds.parent.attrs), **dict(ds.attrs)}
        return _image(ds, attrs, axes=axes)
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise FmcInputError(f"{file}: damaged HDF5 file ({type(e).__name__}: {e}); re-export it") from None


class N5Array:
    """A read-only N5 dataset (raw, gzip, zlib, bzip2, xz; blosc/zstd/lz4 through imagecodecs when installed),
    in numpy (C) axis order: N5 stores dimensions fastest-first, so they are reversed."""

    def __init__(self, path: Path, attrs: dict[str, Any]) -> None:
        self.path = path
        self.shape = tuple(int(n) for n in reversed(attrs["dimensions"]))
        self.block = tuple(int(n) for n in reversed(attrs["blockSize"]))
        self._stored = np.dtype(attrs["dataType"]).newbyteorder(">")  # N5 blocks are big-endian
        self.dtype = self._stored.newbyteorder("=")
        comp = attrs.get("compression", {"type": "raw"})
        self.codec = comp.get("type", "raw") if isinstance(comp, dict) else str(comp)
        self.ndim = len(self.shape)

    def _decode(self, raw: bytes) -> bytes:
        import bz2
        import gzip
        import lzma
        import zlib

        if self.codec == "raw":
            return raw
        if self.codec == "gzip":
            return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else zlib.decompress(raw)
        if self.codec == "zlib":
            return zlib.decompress(raw)
        if self.codec == "bzip2":
            return bz2.decompress(raw)
        if self.codec == "xz":
            return lzma.decompress(raw)
        try:
            import imagecodecs

            return {"blosc": imagecodecs.blosc_decode, "zstd": imagecodecs.zstd_decode,
                    "lz4": imagecodecs.lz4f_decode}[self.codec](raw)  # fmt: skip
        except (ImportError, KeyError):
            raise FmcInputError(f"{self.path}: N5 compression {self.codec!r} is not supported") from None

    def _block(self, idx: tuple[int, ...]) -> np.ndarray:
        """Block ``idx`` (numpy order) as an array of the block's own shape; missing blocks are zeros."""
        f = self.path.joinpath(*[str(i) for i in reversed(idx)])
        full = tuple(min(b, n - i * b) for b, n, i in zip(self.block, self.shape, idx))
        if not f.is_file():
            return np.zeros(full, self.dtype)
        buf = f.read_bytes()
        try:
            mode, nd = int.from_bytes(buf[0:2], "big"), int.from_bytes(buf[2:4], "big")
            dims = [int.from_bytes(buf[4 + 4 * k : 8 + 4 * k], "big") for k in range(nd)]
            off = 4 + 4 * nd + (4 if mode == 1 else 0)
            data = np.frombuffer(self._decode(buf[off:]), self._stored, int(np.prod(dims)))
        except (ValueError, OSError, EOFError) as e:
            raise FmcInputError(f"{f}: damaged N5 block ({type(e).__name__}: {e})") from None
        arr = data.reshape(tuple(reversed(dims))).astype(self.dtype)
        return arr[tuple(slice(0, n) for n in full)]

    def __getitem__(self, idx: Any) -> np.ndarray:
        sl = _normalise_index(idx, self.shape)
        ranges = [range(s.start // b, max(s.start, s.stop - 1) // b + 1) for s, b in zip(sl, self.block)]
        out = np.zeros([s.stop - s.start for s in sl], self.dtype)
        for bidx in np.ndindex(*[len(r) for r in ranges]):
            b = tuple(r[i] for r, i in zip(ranges, bidx))
            blk = self._block(b)
            src, dst = [], []
            for s, k, bs, n in zip(sl, b, self.block, blk.shape):
                lo, hi = max(s.start, k * bs), min(s.stop, k * bs + n)
                src.append(slice(lo - k * bs, hi - k * bs))
                dst.append(slice(lo - s.start, hi - s.start))
            out[tuple(dst)] = blk[tuple(src)]
        squeeze = tuple(i for i, v in enumerate(_expand(idx, len(self.shape))) if isinstance(v, (int, np.integer)))
        return out.squeeze(squeeze) if squeeze else out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        a = self[...]
        return a.astype(dtype) if dtype is not None else a


def _expand(idx: Any, nd: int) -> tuple[Any, ...]:
    idx = idx if isinstance(idx, tuple) else (idx,)
    if any(i is Ellipsis for i in idx):
        e = idx.index(Ellipsis)
        idx = idx[:e] + (slice(None),) * (nd - len(idx) + 1) + idx[e + 1 :]
    return idx + (slice(None),) * (nd - len(idx))


def _normalise_index(idx: Any, shape: tuple[int, ...]) -> list[slice]:
    out = []
    for v, n in zip(_expand(idx, len(shape)), shape):
        if isinstance(v, (int, np.integer)):
            k = int(v) + n if v < 0 else int(v)
            if not 0 <= k < n:
                raise IndexError(f"index {v} out of range for an axis of {n}")
            out.append(slice(k, k + 1))
        elif isinstance(v, slice):
            start, stop, step = v.indices(n)
            if step != 1:
                raise IndexError("N5 arrays are sliced with step 1")
            out.append(slice(start, max(start, stop)))
        else:
            raise IndexError(f"unsupported index {v!r} for an N5 array")
    return out


def _open_n5(file: Path, inner: str | None, axes: str | None) -> Image:
    def attrs_of(p: Path) -> dict[str, Any]:
        try:
            return json.loads((p / "attributes.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    if not (file / "attributes.json").is_file():
        raise FmcInputError(f"{file}: not an N5 container (no attributes.json)")
    if inner is None:
        found = []
        for a in sorted(file.rglob("attributes.json")):
            d = attrs_of(a.parent)
            if "dimensions" in d:
                found.append((a.parent.relative_to(file).as_posix(), tuple(int(n) for n in reversed(d["dimensions"]))))
        inner = _pick(found, file)
    attrs = attrs_of(file / inner)
    if "dimensions" not in attrs or "dataType" not in attrs:
        raise FmcInputError(f"{file}: /{inner} is not an N5 dataset")
    try:
        arr = N5Array(file / inner, attrs)
    except (KeyError, TypeError, ValueError) as e:
        raise FmcInputError(f"{file}: /{inner} has damaged N5 attributes ({e})") from None
    parent = {**attrs_of(file), **attrs_of((file / inner).parent), **attrs}
    return _image(arr, parent, reverse=True, axes=axes)


def _open_zarr(file: Path, inner: str | None, axes: str | None) -> Image:
    import zarr

    attrs_root = {}
    try:
        node = zarr.open(str(file), mode="r")
        attrs_root = dict(node.attrs)
    except Exception as e:
        raise FmcInputError(f"{file}: not a readable Zarr store ({type(e).__name__}); check the folder") from None
    if ("multiscales" in attrs_root or "ome" in attrs_root) and inner is None:
        from fmc_ij.io.zarr_io import open_ome_zarr

        return open_ome_zarr(file)
    if isinstance(node, zarr.Array):
        return _image(node, attrs_root, axes=axes)
    if inner is None:
        found = [(name, tuple(a.shape)) for name, a in node.arrays()]
        for gname, g in node.groups():
            found += [(f"{gname}/{n}", tuple(a.shape)) for n, a in g.arrays()]
        inner = _pick(found, file)
    try:
        arr = node[inner]
    except KeyError:
        raise FmcInputError(f"{file}: no array /{inner}") from None
    return _image(arr, {**attrs_root, **dict(arr.attrs)}, axes=axes)


def open_container(path: str | os.PathLike, *, axes: str | None = None) -> Image:
    """Open a dataset of an HDF5 / N5 / Zarr container lazily (see the module docstring).

    ``axes``: the stored axes when the container does not name them (or names them wrongly).
    """
    split = split_container_path(path)
    if split is None:
        raise FmcInputError(f"{path}: not an HDF5, N5 or Zarr path")
    file, inner = split
    if not file.exists():
        raise FmcInputError(f"{file}: no such file")
    suffix = file.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        if file.is_dir():
            raise FmcInputError(f"{file}: is a folder, expected an HDF5 file")
        return _open_hdf5(file, inner, axes)
    if suffix in N5_SUFFIXES:
        return _open_n5(file, inner, axes)
    return _open_zarr(file, inner, axes)
