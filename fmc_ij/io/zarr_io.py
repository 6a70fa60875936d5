"""OME-Zarr (NGFF 0.4) reading and writing, for streaming volumes larger than memory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fmc_ij.errors import FmcInputError
from fmc_ij.io.atomic import atomic_path
from fmc_ij.io.meta import Image, ImageMeta, check_axes

_AXIS_TYPE = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
_NGFF_UNITS = {"µm": "micrometer", "nm": "nanometer", "mm": "millimeter"}


def _ngff_attrs(meta: ImageMeta) -> dict[str, Any]:
    unit = _NGFF_UNITS.get(meta.unit)
    axes = []
    for a in meta.axes:
        entry: dict[str, Any] = {"name": a.lower(), "type": _AXIS_TYPE[a]}
        if a in meta.spacing and unit:
            entry["unit"] = unit
        axes.append(entry)
    scale = [meta.spacing.get(a, 1.0) for a in meta.axes]
    ms = {
        "version": "0.4",
        "name": meta.channel or "image",
        "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
    }
    fmc = {"unit": meta.unit, "channel": meta.channel, "study": meta.study, "extra": meta.extra}
    return {"multiscales": [ms], "fmc_ij": fmc}


def create_ome_zarr(
    path: str | os.PathLike,
    shape: tuple[int, ...],
    dtype: Any,
    meta: ImageMeta,
    *,
    chunks: tuple[int, ...] | None = None,
) -> Any:
    """Create an empty OME-Zarr image (one resolution level) and return its writable zarr array.

    Used for tile-by-tile output: peak memory follows the chunk, not the volume.
    """
    import zarr

    check_axes(meta.axes, len(shape))
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.attrs.update(_ngff_attrs(meta))
    if chunks is None:
        chunks = tuple(1 if a in "TC" else min(s, 64 if a == "Z" else 256) for a, s in zip(meta.axes, shape))
    return root.create_array(
        "0", shape=shape, dtype=np.dtype(dtype), chunks=chunks, chunk_key_encoding={"name": "v2", "separator": "/"}
    )


def write_ome_zarr(
    path: str | os.PathLike, data: np.ndarray, meta: ImageMeta, *, chunks: tuple[int, ...] | None = None
) -> Path:
    """Write an array as OME-Zarr atomically (written to a temporary folder, then renamed)."""
    path = Path(path)
    with atomic_path(path, is_dir=True) as tmp:
        arr = create_ome_zarr(tmp, data.shape, data.dtype, meta, chunks=chunks)
        arr[...] = data
    return path


def open_ome_zarr(path: str | os.PathLike, level: int = 0) -> Image:
    """Open an OME-Zarr image lazily (read-only); NGFF 0.4 and 0.5 layouts."""
    import zarr

    path = Path(path)
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as e:
        raise FmcInputError(f"{path}: not a readable OME-Zarr ({type(e).__name__}); check the folder") from None
    attrs = dict(root.attrs)
    ms_list = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not ms_list:
        raise FmcInputError(f"{path}: no 'multiscales' metadata; is it an OME-Zarr image?")
    ms = ms_list[0]
    axes = "".join(a["name"] if isinstance(a, str) else a["name"] for a in ms["axes"]).upper()
    ds = ms["datasets"][level]
    scale = next((t["scale"] for t in ds.get("coordinateTransformations", []) if t["type"] == "scale"), None)
    arr = root[ds["path"]]
    fmc = attrs.get("fmc_ij", {})
    spacing = {a: float(s) for a, s in zip(axes, scale or [1.0] * len(axes)) if a in "ZYX"}
    unit = fmc.get("unit")
    if unit is None:
        ax_units = [a.get("unit") for a in ms["axes"] if isinstance(a, dict) and a.get("type") == "space"]
        inv = {v: k for k, v in _NGFF_UNITS.items()}
        unit = inv.get(ax_units[0], ax_units[0]) if ax_units and ax_units[0] else "pixel"
    meta = ImageMeta(
        axes=axes,
        spacing=spacing,
        unit=unit,
        channel=fmc.get("channel"),
        study=fmc.get("study"),
        extra=fmc.get("extra", {}),
    )
    return Image(arr, meta)
