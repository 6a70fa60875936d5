"""fmc-ij: paired fluorescence images to a trained restoration network that runs back in Fiji.

The pipeline, one package per step: :mod:`fmc_ij.io` -> :mod:`fmc_ij.register` -> :mod:`fmc_ij.data`
-> :mod:`fmc_ij.model_io` (the stored-model contract) -> :mod:`fmc_ij.train` -> :mod:`fmc_ij.predict`
-> :mod:`fmc_ij.evaluate` -> :mod:`fmc_ij.export`, with :mod:`fmc_ij.synthetic` for built-in data and
:mod:`fmc_ij.fiji` for ImageJ/Fiji interop (the rules: ``tests/test_architecture.py``).
"""

from fmc_ij.errors import FmcInputError

__version__ = "0.1.0"

__all__ = ["FmcInputError", "__version__"]
