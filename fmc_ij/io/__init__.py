"""Microscopy I/O: TIFF (ImageJ, OME, Fuse My Cells) and OME-Zarr with metadata, lazy access, datasets.

Every array travels with an :class:`ImageMeta` (axes, voxel size, unit, channel, study).

Examples
--------
>>> from fmc_ij import io
>>> img = io.imread("image_0_nucleus_angle.tif")        # doctest: +SKIP
>>> img.axes, img.spacing, img.meta.channel               # doctest: +SKIP
('ZYX', {'Z': 1.0, 'Y': 0.195, 'X': 0.195}, 'nucleus')
>>> io.imwrite("out.tif", img.data, img.meta)             # doctest: +SKIP
"""

from fmc_ij.io.atomic import atomic_path, write_text_atomic
from fmc_ij.io.check import check_image
from fmc_ij.io.dataset import (
    MANIFEST,
    Pair,
    discover,
    discover_fmc,
    pair_by_glob,
    read_manifest,
    write_manifest,
)
from fmc_ij.io.meta import Image, ImageMeta, check_axes, meta_from_dict, normalize_unit
from fmc_ij.io.tiff import SUPPORTED_DTYPES, check_dtype, imagej_dtype, imread, imwrite, open_lazy, read_meta, to_dtype
from fmc_ij.io.zarr_io import create_ome_zarr, open_ome_zarr, write_ome_zarr

__all__ = [
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
    "imwrite",
    "meta_from_dict",
    "normalize_unit",
    "open_lazy",
    "open_ome_zarr",
    "pair_by_glob",
    "read_manifest",
    "read_meta",
    "to_dtype",
    "write_manifest",
    "write_ome_zarr",
    "write_text_atomic",
]
