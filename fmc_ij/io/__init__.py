"""Microscopy I/O: TIFF (ImageJ, OME, Fuse My Cells), OME-Zarr, HDF5 / N5 / Zarr containers with metadata, lazy
access, multi-channel stacks, datasets.

Every array travels with an :class:`ImageMeta` (axes, voxel size, unit, channel, study).

Examples
--------
>>> from fmc_ij import io
>>> img = io.imread("image_0_nucleus_angle.tif")        # doctest: +SKIP
>>> img.axes, img.spacing, img.meta.channel               # doctest: +SKIP
('ZYX', {'Z': 1.0, 'Y': 0.195, 'X': 0.195}, 'nucleus')
>>> io.imwrite("out.tif", img.data, img.meta)             # doctest: +SKIP
>>> vol = io.open_lazy("sample_ovule.h5")                   # doctest: +SKIP  (the one image dataset: /raw)
>>> [c.meta.channel for c in io.open_lazy("cells.tif").channels()]  # doctest: +SKIP
['membrane', 'nucleus']
"""

import os

from fmc_ij.io.atomic import atomic_path, write_text_atomic
from fmc_ij.io.check import check_image
from fmc_ij.io.containers import (
    CONTAINER_SUFFIXES,
    is_container,
    open_container,
    output_name,
    split_container_path,
)
from fmc_ij.io.dataset import (
    MANIFEST,
    Pair,
    discover,
    discover_fmc,
    pair_by_glob,
    read_manifest,
    write_manifest,
)
from fmc_ij.io.meta import (
    ChannelView,
    Image,
    ImageMeta,
    check_axes,
    infer_axes,
    meta_from_dict,
    normalize_unit,
    unit_to_um,
)
from fmc_ij.io.tiff import SUPPORTED_DTYPES, check_dtype, imagej_dtype, imread, imwrite, open_lazy, read_meta, to_dtype
from fmc_ij.io.zarr_io import create_ome_zarr, open_ome_zarr, write_ome_zarr

#: File names the readers take (a container may also be named ``file.h5:/path``).
IMAGE_SUFFIXES = (".tif", ".tiff", *CONTAINER_SUFFIXES)


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names something :func:`open_lazy` reads: a TIFF, an HDF5 / N5 / Zarr container (or a
    dataset in one, ``file.h5:/raw``)."""
    name = os.fspath(path).lower()
    return name.endswith((".tif", ".tiff")) or is_container(path)


__all__ = [
    "CONTAINER_SUFFIXES",
    "IMAGE_SUFFIXES",
    "ChannelView",
    "MANIFEST",
    "SUPPORTED_DTYPES",
    "Image",
    "ImageMeta",
    "Pair",
    "atomic_path",
    "check_axes",
    "check_dtype",
    "check_image",
    "create_ome_zarr",
    "discover",
    "discover_fmc",
    "imagej_dtype",
    "imread",
    "infer_axes",
    "is_container",
    "is_image_path",
    "imwrite",
    "meta_from_dict",
    "normalize_unit",
    "open_container",
    "open_lazy",
    "output_name",
    "open_ome_zarr",
    "pair_by_glob",
    "read_manifest",
    "read_meta",
    "split_container_path",
    "to_dtype",
    "unit_to_um",
    "write_manifest",
    "write_ome_zarr",
    "write_text_atomic",
]
