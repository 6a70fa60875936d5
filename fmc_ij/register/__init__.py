"""Register LR/HR pairs: global sub-pixel cross-correlation, then pyramidal elastic (block-wise)
registration down to 64 px blocks, 2D and 3D (Wang et al. 2019, NanoJ-Core); a NanoJ-compatible mode.

Convention: ``registered[p] = moving[p + field[:, p]]`` (voxels, array axis order).
"""

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
    "elastic_register",
    "estimate_shift",
    "nanoj_elastic_mask",
    "nanoj_shift",
    "ncc",
    "qc_figure",
    "register_dataset",
    "register_images",
    "register_pair",
    "resample",
    "subpixel_peak",
    "valid_region",
    "warp",
    "write_registered",
]
