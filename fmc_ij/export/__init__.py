"""Export: stored models as bioimage.io bundles that pass bioimage.io's own test and run in Fiji's deepImageJ.

>>> from fmc_ij.export import export
>>> export("runs/care3d", "care3d.zip")      # doctest: +SKIP
"""

from fmc_ij.export.bundle import channel_names, export, layout

__all__ = ["channel_names", "export", "layout"]
