"""NanoJ-SQUIRREL artifact analysis: error maps, RSF, RSE, RSP, fusion (Culley et al. 2018); 2D and 3D."""

from fmc_ij.squirrel.core import (
    ErrorMapResult,
    error_map,
    error_map_per_slice,
    forward_model,
    fuse,
    magnification_of,
    rsf_image,
    rsf_kernel_1d,
)
from fmc_ij.squirrel.volume import VolumeErrorMapResult, error_map_3d

__all__ = [
    "VolumeErrorMapResult",
    "error_map_3d",
    "ErrorMapResult",
    "error_map",
    "error_map_per_slice",
    "forward_model",
    "fuse",
    "magnification_of",
    "rsf_image",
    "rsf_kernel_1d",
]
