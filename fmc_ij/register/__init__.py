"""Register LR/HR pairs: global sub-pixel cross-correlation, then pyramidal elastic (block-wise)
registration down to 64 px blocks (Wang et al. 2019, NanoJ-Core) and a regularised dense refinement on a grid of
control points (:mod:`fmc_ij.register.dense`), 2D and 3D; a NanoJ-compatible mode. Voxel sizes are converted
between units; the valid region ends where the moving image's field of view ends.

Convention: ``registered[p] = moving[p + field[:, p]]`` (voxels, array axis order).
"""

from fmc_ij.register.dense import dense_refine
from fmc_ij.register.elastic import ElasticResult, elastic_register, ncc, valid_region, warp
from fmc_ij.register.nanoj import (
    apply_nanoj_mask,
    cross_correlation_map,
    nanoj_elastic_mask,
    nanoj_shift,
    subpixel_peak,
)
from fmc_ij.register.pair import (
    RegistrationResult,
    qc_figure,
    register_dataset,
    register_images,
    register_pair,
    registered_meta,
    resample,
    write_registered,
)
from fmc_ij.register.shift import ShiftResult, estimate_shift

__all__ = [
    "ElasticResult",
    "RegistrationResult",
    "ShiftResult",
    "apply_nanoj_mask",
    "cross_correlation_map",
    "dense_refine",
    "elastic_register",
    "estimate_shift",
    "nanoj_elastic_mask",
    "nanoj_shift",
    "ncc",
    "qc_figure",
    "register_dataset",
    "register_images",
    "register_pair",
    "registered_meta",
    "resample",
    "subpixel_peak",
    "valid_region",
    "warp",
    "write_registered",
]
