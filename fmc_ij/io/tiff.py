"""TIFF reading and writing with voxel size, unit, axes and the Fuse My Cells keys.

Three flavours are written:

``"imagej"``
    An ImageJ hyperstack: ImageJ 1 and Fiji read the calibration (``getVoxelSize``). Axes are stored
    in ImageJ's order (TZCYX); extra keys are lower-cased by the format, and read back canonically.
``"ome"``
    OME-TIFF (BigTIFF when large): physical sizes in the OME-XML, channel/study/extra keys in a
    ``MapAnnotation``. Any axis order.
``"fmc"``
    The Fuse My Cells template: BigTIFF, 128x128 tiles, XY resolution tags and the metadata
    dictionary as tifffile's JSON "shaped" description, exactly as the challenge containers write it.

Reading accepts all three, plus plain TIFFs and the challenge's ImageJ-style training files.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile

from fmc_ij.errors import FmcInputError
from fmc_ij.io.atomic import atomic_path
from fmc_ij.io.containers import is_container, open_container
from fmc_ij.io.integrity import CheckedArray, check_complete, check_file, check_pages, damaged
from fmc_ij.io.meta import IMAGEJ_ORDER, UNIT_TO_UM, Image, ImageMeta, check_axes, meta_from_dict
from fmc_ij.io.rawread import read_contiguous, read_tiles

TiffFlavour = Literal["imagej", "ome", "fmc"]

#: dtypes the pipeline reads; anything else (complex, bool, 64-bit ints) is rejected with a clear message.
SUPPORTED_DTYPES = tuple(
    np.dtype(t) for t in ("uint8", "uint16", "int8", "int16", "uint32", "int32", "float16", "float32", "float64")
)
_IMAGEJ_DTYPES = tuple(np.dtype(t) for t in ("uint8", "uint16", "float32"))
# Classic TIFF tops out at 4 GiB; keep a margin for the IFDs.
_CLASSIC_TIFF_LIMIT = 2**32 - 2**25


def to_dtype(data: np.ndarray, dtype: Any) -> np.ndarray:
    """Cast float results back to an image dtype: integers are rounded and clipped to the dtype's range."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(data), info.min, info.max).astype(dtype)
    return np.asarray(data).astype(dtype)


def imagej_dtype(dtype: Any) -> np.dtype:
    """``dtype`` where an ImageJ TIFF holds it (uint8, uint16, float32); float32 otherwise (float64, uint32, ...)."""
    dt = np.dtype(dtype)
    return dt if dt in (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)) else np.dtype(np.float32)


def check_dtype(dtype: Any, where: str = "image") -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in SUPPORTED_DTYPES:
        names = ", ".join(d.name for d in SUPPORTED_DTYPES)
        raise FmcInputError(f"{where}: unsupported dtype {dt.name}; convert it to one of {names}")
    return dt


def _ij_unescape(value: Any) -> Any:
    # ImageJ writes non-ASCII characters as \uXXXX (e.g. unit=\u00B5m).
    if isinstance(value, str) and "\\u" in value:
        try:
            return value.encode("ascii", "backslashreplace").decode("unicode_escape")
        except UnicodeDecodeError:
            return value
    return value


def _ij_escape(value: Any) -> Any:
    if isinstance(value, str):
        return "".join(c if ord(c) < 128 else f"\\u{ord(c):04X}" for c in value)
    return value


def _xy_resolution(page: tifffile.TiffPage) -> tuple[float, float, str | None] | None:
    """Pixel size (X, Y) from the resolution tags and the unit the tags imply, or None if uncalibrated.

    ImageJ files give pixels per ``unit`` of their description (tag unit NONE, returned as None);
    plain TIFFs with inch or centimetre tags are converted to micrometres.
    """
    try:
        xres, yres = page.get_resolution()
        runit = int(page.tags["ResolutionUnit"].value) if "ResolutionUnit" in page.tags else 2
    except Exception:  # malformed tags: treat as uncalibrated
        return None
    if not xres or not yres or (xres == 1 and yres == 1):
        return None
    if runit == 2:  # inch
        return 25400.0 / float(xres), 25400.0 / float(yres), "µm"
    if runit == 3:  # centimetre
        return 1e4 / float(xres), 1e4 / float(yres), "µm"
    return 1.0 / float(xres), 1.0 / float(yres), None


def _ome_meta(ome_xml: str) -> dict[str, Any]:
    """Physical sizes, unit and MapAnnotation key/values from OME-XML."""
    d = tifffile.xml2dict(ome_xml).get("OME", {})
    image = d.get("Image", {})
    image = image[0] if isinstance(image, list) else image
    pixels = image.get("Pixels", {})
    raw: dict[str, Any] = {}
    for a in "XYZ":
        if f"PhysicalSize{a}" in pixels:
            raw[f"PhysicalSize{a}"] = pixels[f"PhysicalSize{a}"]
    if "PhysicalSizeXUnit" in pixels:
        raw["unit"] = pixels["PhysicalSizeXUnit"]
    elif raw:
        raw["unit"] = "µm"  # the OME default
    chans = pixels.get("Channel", [])
    chans = chans if isinstance(chans, list) else [chans]
    names = [c.get("Name") for c in chans if isinstance(c, dict)]
    if names and all(isinstance(n, str) and n for n in names):
        raw["channel_names"] = names
    ann = d.get("StructuredAnnotations", {}).get("MapAnnotation", {})
    for a in ann if isinstance(ann, list) else [ann]:
        entries = a.get("Value", {}).get("M", [])
        for m in entries if isinstance(entries, list) else [entries]:
            if "K" in m:
                v = m.get("value", "")
                if isinstance(v, str) and v[:1] in "[{":
                    with contextlib.suppress(ValueError):
                        v = json.loads(v)
                raw[m["K"]] = v
    return raw


def _key_value_description(desc: str) -> dict[str, Any]:
    """Bare ``key=value`` lines (ImageJ-like descriptions without the ``ImageJ=`` header)."""
    raw: dict[str, Any] = {}
    for line in desc.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key.strip() or " " in key.strip():
            continue
        v: Any = _ij_unescape(value.strip())
        for conv in (int, float):
            try:
                v = conv(v)
                break
            except ValueError:
                pass
        raw[key.strip()] = v
    return raw


def _read_meta(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> ImageMeta:
    ndim = len(series.shape)
    axes = series.axes.upper()
    # tifffile uses Q/I/etc. for unknown dimensions: fall back to the key or a default then.
    layout_axes = axes if set(axes) <= set(IMAGEJ_ORDER) else None
    page = tif.pages.first
    xy = _xy_resolution(page)
    raw: dict[str, Any] = {}
    if tif.is_ome and tif.ome_metadata:
        raw = _ome_meta(tif.ome_metadata)
    elif tif.is_shaped and tif.shaped_metadata:
        raw = dict(tif.shaped_metadata[0])
    elif tif.is_imagej and tif.imagej_metadata:
        raw = {k: _ij_unescape(v) for k, v in tif.imagej_metadata.items()}
        labels, n_c = raw.get("Labels"), int(raw.get("channels", 1) or 1)
        # Slice labels name the channels when the stack holds one plane per channel (ImageJ's composite images).
        if "channel_names" not in raw and isinstance(labels, list) and n_c > 1 and len(labels) == n_c:
            raw["channel_names"] = [str(v) for v in labels]
    else:
        raw = _key_value_description(page.description or "")
    # The stored axes key wins over the layout only when it names the same letters (ImageJ reorders).
    stored = str(raw.get("axes", ""))
    if layout_axes is not None and len(stored) == ndim and sorted(stored.upper()) != sorted(layout_axes):
        raw = {k: v for k, v in raw.items() if k != "axes"}
    if xy is not None and xy[2] is not None and not any(k.lower().startswith("physicalsize") for k in raw):
        raw.setdefault("unit", xy[2])  # calibration only in the tags: they fix the unit
    return meta_from_dict(
        raw, ndim, axes=layout_axes, xy_resolution=None if xy is None else xy[:2], shape=tuple(series.shape)
    )


def _read(path: Path, *, pixels: bool) -> tuple[ImageMeta, tuple[int, ...], np.dtype, np.ndarray | None]:
    """Metadata (and optionally the pixels) through one file handle, with errors made one-line."""
    size = check_file(path)
    stage = "metadata"
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            pages_left = check_complete(tif, series, path, size)
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
            if not shape or min(shape) == 0:
                raise FmcInputError(f"{path}: empty image (shape {shape}); re-export it")
            meta = _read_meta(tif, series)
            data = None
            if not pixels:
                if pages_left:
                    check_pages(tif.pages, path, size)
                return meta, shape, dtype, None
            check_dtype(dtype, str(path))
            stage = "pixels"
            data = read_contiguous(path, tif, series)
            if data is None:
                data = read_tiles(path, tif, series)
            if data is None:
                data = series.asarray()
                check_pages(series.pages, path, size)  # parsed by the read already: no second pass
            if data.shape != shape:
                data = data.reshape(shape)
            return meta, shape, dtype, data
    except FmcInputError as e:
        msg = str(e)
        raise FmcInputError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except MemoryError:
        raise
    except Exception as e:  # a damaged file makes the parser fail in any way (struct, zero division, assertions)
        raise damaged(path, e, stage) from None


def _with_axes(img: Image, axes: str | None) -> Image:
    """``img`` with its stored axes overridden by the caller's hint (a file without axes, or a wrong guess)."""
    return Image(img.data, _check_hint(img.meta, img.shape, axes)) if axes else img


def read_meta(path: str | os.PathLike, *, axes: str | None = None) -> tuple[ImageMeta, tuple[int, ...], np.dtype]:
    """Read only the metadata, shape and dtype of an image file (TIFF, or a dataset of an HDF5/N5/Zarr container;
    no pixel data). ``axes``: the stored axes, for files that do not say (see :func:`open_lazy`)."""
    if is_container(path):
        img = _with_axes(open_container(path, axes=axes), axes)
        return img.meta, img.shape, img.dtype
    meta, shape, dtype, _ = _read(Path(path), pixels=False)
    return (_check_hint(meta, shape, axes) if axes else meta), shape, dtype


def _check_hint(meta: ImageMeta, shape: tuple[int, ...], axes: str) -> ImageMeta:
    ax = check_axes(axes, len(shape))
    if ax == meta.axes:
        return meta.replace(note="")
    names = meta.channel_names if "C" in ax and len(meta.channel_names) == shape[ax.index("C")] else ()
    return meta.replace(axes=ax, spacing={a: meta.spacing[a] for a in ax if a in meta.spacing}, channel_names=names,
                        note="")  # fmt: skip


def imread(path: str | os.PathLike, *, axes: str | None = None, stored_axes: str | None = None) -> Image:
    """Read an image into an :class:`~fmc_ij.io.meta.Image` (numpy data plus metadata).

    Parameters
    ----------
    path : path-like
        ImageJ, OME, Fuse My Cells or plain TIFF file, or a dataset of an HDF5 / N5 / Zarr container
        (``file.h5:/raw``, or ``file.h5`` when it holds one image; see :mod:`fmc_ij.io.containers`).
    axes : str, optional
        Reorder the result to these axes (a permutation of the file's axes), e.g. ``"CZYX"``.
    stored_axes : str, optional
        The axes as stored, for files that do not name them (default: read from the file, else inferred from the
        shape with a note in ``meta.note``).

    Returns
    -------
    Image
        ``image.data`` is a numpy array, ``image.meta`` its metadata.
    """
    if is_container(path):
        lazy = open_lazy(path, axes=stored_axes)
        img = Image(np.asarray(lazy.data[...]), lazy.meta)
    else:
        meta, _, _, data = _read(Path(path), pixels=True)
        img = Image(data, _check_hint(meta, data.shape, stored_axes) if stored_axes else meta)
    return img.transpose(axes) if axes and axes.upper() != img.meta.axes else img


def _to_imagej_order(data: Any, axes: str) -> tuple[Any, str]:
    order = "".join(a for a in IMAGEJ_ORDER if a in axes)
    if order == axes:
        return data, order  # lazy arrays stay lazy
    return np.transpose(np.asarray(data), [axes.index(a) for a in order]), order


def _pages(arr: Any):
    """The 2D planes of a lazy array, one at a time (tifffile writes them as they come)."""
    for idx in np.ndindex(*arr.shape[:-2]):
        yield np.asarray(arr[idx])


def imwrite(
    path: str | os.PathLike,
    data: np.ndarray,
    meta: ImageMeta | None = None,
    *,
    flavour: TiffFlavour | None = None,
    compression: str | None = None,
    tile: tuple[int, int] | None = None,
    bigtiff: bool | None = None,
) -> Path:
    """Write ``data`` with ``meta`` as a TIFF, atomically (temporary file, then rename).

    Parameters
    ----------
    path : path-like
        Output file; ``*.ome.tif[f]`` selects the OME flavour by default, otherwise ImageJ.
    data : ndarray or lazy array
        The pixels, with one dimension per letter of ``meta.axes``. A lazy array (zarr, memmap-like: ``shape``,
        ``dtype``, slicing) is written plane by plane without being loaded whole (untiled flavours).
    meta : ImageMeta, optional
        Metadata; defaults to uncalibrated with CSBDeep default axes.
    flavour : {"imagej", "ome", "fmc"}, optional
        See the module docstring.
    compression : str, optional
        e.g. ``"zlib"``; none by default (fastest, memory-mappable).
    tile : (int, int), optional
        Tile size; ``"fmc"`` uses 128x128 like the challenge template.
    bigtiff : bool, optional
        Default: on for ``"fmc"`` and for data over ~4 GB.
    """
    path = Path(path)
    if isinstance(data, np.ndarray) or not all(hasattr(data, a) for a in ("shape", "dtype", "__getitem__")):
        data = np.asarray(data)
    if meta is None:
        meta = meta_from_dict({}, data.ndim)
    check_axes(meta.axes, data.ndim)
    check_dtype(data.dtype, f"{path}")
    if flavour is None:
        flavour = "ome" if path.name.lower().endswith((".ome.tif", ".ome.tiff")) else "imagej"
    nbytes = int(np.prod(data.shape)) * np.dtype(data.dtype).itemsize
    large = nbytes > _CLASSIC_TIFF_LIMIT
    kwargs: dict[str, Any] = {"compression": compression, "photometric": "minisblack"}
    sx, sy = meta.spacing.get("X", 1.0), meta.spacing.get("Y", 1.0)

    if flavour == "imagej":
        if data.dtype not in _IMAGEJ_DTYPES:
            raise FmcInputError(
                f"{path}: ImageJ TIFFs hold uint8, uint16 or float32, not {data.dtype.name}; "
                "cast the data or write flavour='ome'"
            )
        if large:
            raise FmcInputError(
                f"{path}: {nbytes / 2**30:.1f} GiB is too large for an ImageJ TIFF; use flavour='ome' or 'fmc'"
            )
        arr, axes = _to_imagej_order(data, meta.axes)
        md: dict[str, Any] = {"axes": axes, "unit": _ij_escape(meta.unit if meta.unit != "pixel" else "pixel")}
        if "Z" in meta.spacing:
            md["spacing"] = meta.spacing["Z"]
        for a in meta.spatial_axes:
            md[f"PhysicalSize{a}"] = meta.spacing[a]
        if meta.channel is not None:
            md["channel"] = _ij_escape(meta.channel)
        if meta.study is not None:
            md["study"] = meta.study
        if meta.channel_names:
            md["channel_names"] = _ij_escape(",".join(meta.channel_names))
        for k, v in meta.extra.items():
            if k.lower() not in md and isinstance(v, (str, int, float, bool)):
                md[k] = _ij_escape(v)
        kwargs.update(imagej=True, metadata=md, resolution=(1.0 / sx, 1.0 / sy), tile=tile)
    elif flavour == "ome":
        arr = data
        ann = {"channel": meta.channel, "study": meta.study, **meta.extra}
        ann = {k: v if isinstance(v, (str, int, float)) else json.dumps(v) for k, v in ann.items() if v is not None}
        md = {"axes": meta.axes}
        for a in meta.spatial_axes:
            md[f"PhysicalSize{a}"] = meta.spacing[a]
            md[f"PhysicalSize{a}Unit"] = meta.unit if meta.unit != "pixel" else "pixel"
        if ann:
            md["MapAnnotation"] = ann
        if meta.channel_names:
            md["Channel"] = {"Name": list(meta.channel_names)}
        # A UUID from the name, shape and metadata instead of a random one: the same inputs give the same bytes.
        key = f"fmc-ij:{path.name}:{tuple(data.shape)}:{np.dtype(data.dtype).name}:{sorted(md.items(), key=str)}"
        md["UUID"] = str(uuid.uuid5(uuid.NAMESPACE_URL, key))
        kwargs.update(ome=True, metadata=md, bigtiff=large if bigtiff is None else bigtiff, tile=tile)
        to_um = UNIT_TO_UM.get(meta.unit)
        if to_um is not None:
            # Resolution tags in pixels per centimetre: plain ImageJ 1 (no Bio-Formats) then reads XY too.
            kwargs.update(resolution=(1e4 / (sx * to_um), 1e4 / (sy * to_um)), resolutionunit="CENTIMETER")
    elif flavour == "fmc":
        arr = data
        md = meta.to_fmc_dict()
        kwargs.update(
            metadata=md,
            bigtiff=True if bigtiff is None else bigtiff,
            tile=tile or (128, 128),
            resolution=(1.0 / sx, 1.0 / sy),
        )
    else:
        raise FmcInputError(f"unknown TIFF flavour {flavour!r}: use 'imagej', 'ome' or 'fmc'")

    if not isinstance(arr, np.ndarray) and kwargs.get("tile") is None:
        # A lazy array (zarr, a converting view) is written plane by plane: memory stays one plane.
        kwargs.update(shape=tuple(arr.shape), dtype=np.dtype(arr.dtype))
        arr = _pages(arr)
    elif not isinstance(arr, np.ndarray):
        arr = np.asarray(arr[...])
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, arr, **kwargs)
    return path


def open_lazy(path: str | os.PathLike, *, axes: str | None = None) -> Image:
    """Open a large image without reading it: slices read only what they touch.

    Uncompressed contiguous TIFFs are memory-mapped (``numpy.memmap``, read-only); tiled or compressed ones are
    wrapped as a read-only zarr array over the TIFF; ``*.zarr`` folders (OME-Zarr or plain), HDF5 files and N5
    containers are opened in place (``file.h5:/path`` names a dataset; see :mod:`fmc_ij.io.containers`).
    ``axes``: the axes as stored, for files that do not name them (otherwise read, or inferred from the shape
    with a note in ``meta.note``).
    """
    path_s = os.fspath(path)
    path = Path(path_s)
    zarr_dir = path.is_dir() and ((path / ".zattrs").exists() or (path / "zarr.json").exists())
    if zarr_dir and not is_container(path_s):
        from fmc_ij.io.zarr_io import open_ome_zarr

        return _with_axes(open_ome_zarr(path), axes)
    if is_container(path_s):
        img = open_container(path_s, axes=axes)
        check_dtype(img.dtype, path_s)
        return _with_axes(img, axes)
    meta, shape, dtype = read_meta(path, axes=axes)
    check_dtype(dtype, str(path))
    try:
        data: Any = tifffile.memmap(path, mode="r")
        if data.shape != shape:
            data = data.reshape(shape)
    except ValueError:
        import zarr

        try:
            store = tifffile.imread(path, aszarr=True, series=0)
            data = CheckedArray(zarr.open(store, mode="r"), path)
        except MemoryError:
            raise
        except Exception as e:
            raise damaged(path, e) from None
        if tuple(data.shape) != shape:
            raise FmcInputError(f"{path}: cannot map {data.shape} onto {shape} lazily; read it with imread") from None
    return Image(data, meta)
