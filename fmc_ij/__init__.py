"""fmc-ij: paired fluorescence images to a trained restoration network that runs back in Fiji.

The pipeline, one module per step: :mod:`fmc_ij.io` -> :mod:`fmc_ij.register` -> :mod:`fmc_ij.data`
-> :mod:`fmc_ij.train` -> :mod:`fmc_ij.predict` -> :mod:`fmc_ij.metrics` -> :mod:`fmc_ij.bioimageio`,
with :mod:`fmc_ij.synthetic` for built-in data and :mod:`fmc_ij.fiji` for ImageJ/Fiji interop.
"""

from fmc_ij.errors import FmcInputError

__version__ = "0.1.0"

__all__ = ["FmcInputError", "__version__"]
