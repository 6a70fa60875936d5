"""Built-in, physically motivated datasets: seeded, written in the layouts the pipeline reads.

* :func:`simulate_lightsheet`: an organoid seen by one light-sheet view and by the fused multiview
  (nucleus and membrane channels), the Fuse My Cells setting;
* :func:`simulate_beads`: sub-diffraction beads, confocal-like vs STED-like PSF, positions known;
* :func:`simulate_filaments`: 2D filaments at low vs high NA;
* :func:`random_displacement` / :func:`apply_displacement`: known misregistration for registration tests;
* :func:`simulate`: write any of these to disk.
"""

from fmc_ij.synthetic.beads import BeadsConfig, simulate_beads
from fmc_ij.synthetic.dataset import (
    KINDS,
    simulate,
    simulate_beads_dataset,
    simulate_filaments_dataset,
    simulate_lightsheet_dataset,
    simulate_surface_dataset,
)
from fmc_ij.synthetic.filaments import FilamentsConfig, simulate_filaments
from fmc_ij.synthetic.lightsheet import CHANNELS, LightSheetConfig, simulate_lightsheet
from fmc_ij.synthetic.surface import SurfaceConfig, simulate_surface
from fmc_ij.synthetic.warp import apply_displacement, random_displacement

__all__ = [
    "CHANNELS",
    "KINDS",
    "BeadsConfig",
    "FilamentsConfig",
    "LightSheetConfig",
    "SurfaceConfig",
    "apply_displacement",
    "random_displacement",
    "simulate",
    "simulate_beads",
    "simulate_beads_dataset",
    "simulate_filaments",
    "simulate_filaments_dataset",
    "simulate_lightsheet",
    "simulate_lightsheet_dataset",
    "simulate_surface",
    "simulate_surface_dataset",
]
