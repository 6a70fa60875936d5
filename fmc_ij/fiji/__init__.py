"""Fiji / ImageJ interop.

- :mod:`fmc_ij.fiji.bridge`: ImageJ in this process: numpy <-> ImagePlus with calibration, macros with return
  values, menu commands, results tables; ImageJ2 Datasets and ops on a Fiji;
- :mod:`fmc_ij.fiji.session`: :func:`connect` starts it (ImageJ 1, or a local Fiji.app offline);
- :mod:`fmc_ij.fiji.commands`: the exact NanoJ-Core and NanoJ-SQUIRREL command strings;
- :mod:`fmc_ij.fiji.deepimagej`: deepImageJ 3.1's rules (command keys, output names, install folder) and
  one-load runs over many files; :mod:`fmc_ij.export.jdll`: what a bundle needs (tiles, clip, nickname);
- :mod:`fmc_ij.fiji.process`: shipped macros (``macros/``) in a child ImageJ 1 or the user's Fiji
  (``--engine fiji``);
- :mod:`fmc_ij.fiji.locate`: Java, ImageJ 1, Fiji, NanoJ on this machine. Nothing here downloads anything.
"""

from fmc_ij.export.jdll import bundle_problems, choose_tile, min_image_size, tile_grid
from fmc_ij.fiji.bridge import ImageJ, MacroError
from fmc_ij.fiji.commands import (
    Command,
    correct_drift,
    estimate_drift,
    ij_path,
    options,
    register_channels_apply,
    register_channels_estimate,
    squirrel_error_map,
    trim_key,
)
from fmc_ij.fiji.deepimagej import deepimagej_run, install_model, output_name, run_on_files, short_title
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
from fmc_ij.fiji.session import connect

__all__ = [
    "MACROS_DIR", "Command", "ImageJ", "ImageJNotFound", "MacroError", "bundle_problems", "choose_tile", "connect",
    "correct_drift",
    "deepimagej_run", "estimate_drift", "fiji_command", "find_fiji", "find_ij_jar", "find_java", "find_nanoj",
    "find_squirrel", "ij_path", "imagej_calibration", "install_model", "macro_path", "min_image_size", "options",
    "output_name", "register_channels_apply", "register_channels_estimate", "run_fiji_macro", "run_imagej1_macro",
    "run_nanoj_register", "run_nanoj_squirrel", "run_on_files", "short_title", "squirrel_error_map", "tile_grid",
    "trim_key",
]  # fmt: skip
