"""Fiji / ImageJ interop.

- :mod:`fmc_ij.fiji.bridge`: ImageJ in this process (:func:`connect`): numpy <-> ImagePlus with calibration,
  macros with return values, menu commands, results tables;
- :mod:`fmc_ij.fiji.commands`: the exact NanoJ-Core, NanoJ-SQUIRREL and deepImageJ command strings;
- :mod:`fmc_ij.fiji.process`: shipped macros (``macros/``) in a child ImageJ 1 or the user's Fiji
  (``--engine fiji``);
- :mod:`fmc_ij.fiji.locate`: Java, ImageJ 1, Fiji, NanoJ on this machine. Nothing here downloads anything.
"""

from fmc_ij.fiji.bridge import ImageJ, MacroError, connect
from fmc_ij.fiji.commands import (
    Command,
    correct_drift,
    deepimagej_run,
    estimate_drift,
    ij_path,
    options,
    register_channels_apply,
    register_channels_estimate,
    squirrel_error_map,
    trim_key,
)
from fmc_ij.fiji.locate import ImageJNotFound, find_fiji, find_ij_jar, find_java, find_nanoj, find_squirrel
from fmc_ij.fiji.process import (
    MACROS_DIR,
    fiji_command,
    imagej_calibration,
    macro_path,
    run_fiji_macro,
    run_imagej1_macro,
    run_nanoj_register,
    run_nanoj_squirrel,
)

__all__ = [
    "MACROS_DIR", "Command", "ImageJ", "ImageJNotFound", "MacroError", "connect", "correct_drift", "deepimagej_run",
    "estimate_drift", "fiji_command", "find_fiji", "find_ij_jar", "find_java", "find_nanoj", "find_squirrel",
    "ij_path", "imagej_calibration", "macro_path", "options", "register_channels_apply",
    "register_channels_estimate", "run_fiji_macro", "run_imagej1_macro", "run_nanoj_register", "run_nanoj_squirrel",
    "squirrel_error_map", "trim_key",
]  # fmt: skip
