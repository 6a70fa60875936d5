"""NanoJ-SQUIRREL artifact analysis: error maps, RSF, RSE, RSP, fusion (Culley et al. 2018)."""

from fmc_ij.squirrel.core import (
    ErrorMapResult,
    error_map,
    error_map_per_slice,
    fuse,
    magnification_of,
    rsf_image,
    rsf_kernel_1d,
)

__all__ = [
    "ErrorMapResult",
    "error_map",
    "error_map_per_slice",
    "fuse",
    "magnification_of",
    "rsf_image",
    "rsf_kernel_1d",
]
