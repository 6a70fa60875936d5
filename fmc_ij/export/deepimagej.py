"""What deepImageJ 3.1 (JDLL 0.6.x) needs from a bundle, beyond bioimage.io's spec; each rule was checked against
their sources (see ``docs/fiji.md``).

- ``clip`` needs both ``min`` and ``max`` (JDLL's ``ClipTransformation`` refuses one bound, after inference).
- A stable ``config.bioimageio.nickname``: without it (or an ``id``) JDLL names the model ``friend-N`` from a counter
  that changes between listings, and recorded macros break.
- Fixed input tile sizes: with parameterised sizes JDLL's ``TileCalculator`` loops forever once the padded image
  exceeds 50,331,648 voxels (every Fuse My Cells volume); a fixed tile may be at most 3x the image per axis
  (the checks and the tile choice: :mod:`fmc_ij.export.jdll`).
- ``documentation`` and ``covers`` as plain strings (JDLL casts them), which format 0.5.10 still allows.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from fmc_ij.export.jdll import choose_tile, tile_budget

#: A finite upper bound for ``clip``: outputs are in target-normalised units (about 0 to 1.5), so it never binds.
#: Written without an exponent: YAML 1.1 readers (PyYAML, SnakeYAML in Fiji) take ``1e+30`` for a string.
CLIP_MAX = 1000000.0
#: Peak activation memory one deepImageJ tile may take by default (MB; ``FMC_IJ_TILE_MEMORY_MB`` overrides): the
#: fixed tile, and the test tensor, follow from it (:func:`fmc_ij.export.jdll.choose_tile`; a 3D U-Net with 32 base
#: filters gets about 72 x 144 x 144).
TILE_MEMORY_MB = float(os.environ.get("FMC_IJ_TILE_MEMORY_MB", "1024"))
#: The rdf format deepImageJ 3 reads (documentation and covers as strings).
FORMAT_VERSION = "0.5.10"


def nickname(name: str) -> str:
    """A stable nickname from the model's name: lower-case words joined by ``-`` (JDLL lists models by it)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "fmc-ij-model"


def fixed_tile(halo: Sequence[int], step: Sequence[int], mins: Sequence[int], base: int,
               memory_mb: float = TILE_MEMORY_MB) -> list[int]:  # fmt: skip
    """The fixed input tile deepImageJ runs the bundle with: shaped like the halo, within ``memory_mb`` of
    activations for a network of ``base`` filters (:func:`fmc_ij.export.jdll.choose_tile`)."""
    return list(choose_tile(halo, step, mins, tile_budget(int(memory_mb * 2**20), base)))


def make_compatible(zip_path: Path) -> None:
    """Rewrite ``rdf.yaml`` inside the zip the way deepImageJ 3 reads it (format 0.5.10, plain strings)."""
    with zipfile.ZipFile(zip_path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    rdf = yaml.safe_load(entries["rdf.yaml"])
    rdf["format_version"] = FORMAT_VERSION
    if isinstance(rdf.get("documentation"), dict):
        rdf["documentation"] = rdf["documentation"]["source"]
    rdf["covers"] = [c["source"] if isinstance(c, dict) else c for c in rdf.get("covers", [])]
    entries["rdf.yaml"] = yaml.safe_dump(rdf, sort_keys=False).encode()
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in entries.items():
            z.writestr(n, data)
