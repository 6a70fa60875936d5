"""What deepImageJ 3.1 (JDLL 0.6.x) needs from a bundle, beyond bioimage.io's spec; each rule was checked against
their sources (see ``docs/fiji.md``).

- ``clip`` needs both ``min`` and ``max`` (JDLL's ``ClipTransformation`` refuses one bound, after inference).
- A stable ``config.bioimageio.nickname``: without it (or an ``id``) JDLL names the model ``friend-N`` from a counter
  that changes between listings, and recorded macros break.
- Fixed input tile sizes: with parameterised sizes JDLL's ``TileCalculator`` loops forever once the padded image
  exceeds 50,331,648 voxels (every Fuse My Cells volume); a fixed tile may be at most 3x the image per axis.
- ``documentation`` and ``covers`` as plain strings (JDLL casts them), which format 0.5.10 still allows.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import yaml

#: JDLL's ``TileCalculator`` shrinks (and, for parameterised sizes, hangs) above this many voxels per tile.
JDLL_MAX_TILE_VOXELS = 4096 * 4096 * 3
#: A finite upper bound for ``clip``: outputs are in target-normalised units (about 0 to 1.5), so it never binds.
#: Written without an exponent: YAML 1.1 readers (PyYAML, SnakeYAML in Fiji) take ``1e+30`` for a string.
CLIP_MAX = 1000000.0
#: Voxels of one fixed input tile: about 64 x 192 x 192 for a 3D U-Net (a few hundred MB of activations in
#: JDLL's engine at 32 base filters), 1024 x 1024 for 2D.
TILE_VOXELS = {3: 64 * 192 * 192, 2: 1024 * 1024}
#: The rdf format deepImageJ 3 reads (documentation and covers as strings).
FORMAT_VERSION = "0.5.10"


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def nickname(name: str) -> str:
    """A stable nickname from the model's name: lower-case words joined by ``-`` (JDLL lists models by it)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "fmc-ij-model"


def fixed_tile(halo: Sequence[int], step: Sequence[int], budget: int) -> list[int]:
    """Fixed input tile sizes: each a multiple of ``step`` with a core of at least ``2 * halo`` (so at most half of
    every tile is context), grown evenly until ``budget`` voxels (within :data:`JDLL_MAX_TILE_VOXELS`)."""
    budget = min(budget, JDLL_MAX_TILE_VOXELS)
    tile = [_round_up(4 * h + s, s) for h, s in zip(halo, step)]
    while True:
        grown = False
        for i in sorted(range(len(tile)), key=lambda k: tile[k]):  # grow the smallest axis first
            bigger = tile[:i] + [tile[i] + step[i]] + tile[i + 1 :]
            vox = 1
            for t in bigger:
                vox *= t
            if vox <= budget:
                tile, grown = bigger, True
                break
        if not grown:
            return tile


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
