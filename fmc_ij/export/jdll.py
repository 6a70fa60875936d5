"""What deepImageJ 3.1 (through JDLL dl-modelrunner 0.6.1) needs from a bioimage.io bundle, from their sources.

- **Tiles.** A bundle whose spatial input sizes are all fixed runs as tiles of exactly that size, cut with the
  output halo as overlap: ceil(image / (tile - 2 halo)) per axis (:func:`tile_grid`), each tile at most 3x the
  image per axis (:func:`min_image_size`). Parametrised sizes make one tile of the whole image plus halo, and
  JDLL's ``TileCalculator`` loops forever once that exceeds 4096 x 4096 x 3 voxels. :func:`choose_tile` picks a
  fixed tile from the halo and a memory budget (:func:`tile_budget`).
- **The rest** (clip with both bounds, a nickname, plain-string documentation and covers, the processing JDLL
  has): :func:`bundle_problems`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: JDLL's TileCalculator.OPTIMAL_MAX_NUMBER_PIXELS: above it, parametrised sizes hang (dl-modelrunner 0.6.1).
JDLL_MAX_TILE_VOXELS = 4096 * 4096 * 3
JDLL_MAX_TILE_TO_IMAGE = 3  # TileMaker.validateTileVsImageSize: tile <= 3 x image, per axis


def _space_axes(tensor: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [a for a in tensor.get("axes", []) if isinstance(a, Mapping) and a.get("type") == "space"]


def _fixed_size(axis: Mapping[str, Any]) -> int | None:
    size = axis.get("size")
    return int(size) if isinstance(size, int) else None


def tile_shape(rdf: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The fixed input tile (spatial axes, in rdf order) of a single-input bundle, or None when sizes vary."""
    sizes = [_fixed_size(a) for a in _space_axes(rdf["inputs"][0])]
    return None if not sizes or None in sizes else tuple(int(s) for s in sizes)  # type: ignore[arg-type]


def min_image_size(rdf: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The smallest image (per spatial axis) deepImageJ runs a fixed-tile bundle on: ceil(tile / 3).

    Below it JDLL refuses ("cannot be bigger than 3 times the image size") and deepImageJ writes no output.
    """
    tile = tile_shape(rdf)
    return None if tile is None else tuple(math.ceil(t / JDLL_MAX_TILE_TO_IMAGE) for t in tile)


def tile_grid(rdf: Mapping[str, Any], image: Sequence[int]) -> tuple[int, ...]:
    """How many tiles JDLL cuts ``image`` (spatial sizes, rdf order) into per axis: ceil(image / (tile - 2 halo))."""
    tile = tile_shape(rdf)
    if tile is None:
        return tuple(1 for _ in image)
    halo = _halo(rdf)
    return tuple(math.ceil(n / (t - 2 * h)) for n, t, h in zip(image, tile, halo))


def _halo(rdf: Mapping[str, Any]) -> list[int]:
    ids = [a.get("id") for a in _space_axes(rdf["inputs"][0])]
    halo = dict.fromkeys(ids, 0)
    for out in rdf.get("outputs", []):
        for a in _space_axes(out):
            if a.get("id") in halo:
                halo[a["id"]] = max(halo[a["id"]], int(a.get("halo", 0)))
    return [halo[i] for i in ids]


#: Peak memory of the fmc-ij U-Net per tile voxel and base channel (float32, PyTorch on CPU, depth 2): 300-340
#: bytes per voxel measured for base 16 on tiles of 0.8-4.8 M voxels (issue 24).
BYTES_PER_VOXEL_PER_BASE = 22


def tile_budget(memory_bytes: int, base_channels: int) -> int:
    """How many voxels a tile may have for the network to fit ``memory_bytes`` (peak activations)."""
    return int(memory_bytes // (BYTES_PER_VOXEL_PER_BASE * base_channels))


def choose_tile(halo: Sequence[int], step: Sequence[int], mins: Sequence[int], max_voxels: int) -> tuple[int, ...]:
    """The fixed input tile to write for deepImageJ: as large as ``max_voxels`` allows, shaped like the halo.

    A tile's useful share, prod((t - 2h) / t), is largest for a given volume when every axis is proportional to its
    halo, t = k h with k = (max_voxels / prod(h)) ** (1 / n). Each axis is rounded down to a multiple of *twice*
    its step (and kept at least ``min`` and 2 h + step): JDLL centres a tile on an image smaller than it, shifting
    it by (tile - image) / 2, and the network's pooling grid (the step) survives that shift for every image size
    that is a multiple of twice the step. While the tile is too large, the axis with the largest t / h loses two
    steps. The smallest image deepImageJ then runs the bundle on is ceil(t / 3) per axis. A budget below the
    smallest valid tile gives that tile (the budget is an estimate; the network cannot run smaller tiles).
    """
    n = len(halo)
    grid = [2 * s for s in step]
    k = (max_voxels / math.prod(max(h, 1) for h in halo)) ** (1 / n)
    lowest = [max(m, 2 * h + s) for h, s, m in zip(halo, step, mins)]
    lowest = [math.ceil(lo / g) * g for lo, g in zip(lowest, grid)]
    tile = [max(lo, int(k * max(h, 1)) // g * g) for h, g, lo in zip(halo, grid, lowest)]
    while math.prod(tile) > max_voxels:
        shrinkable = [i for i in range(n) if tile[i] - grid[i] >= lowest[i]]
        if not shrinkable:
            break
        i = max(shrinkable, key=lambda j: tile[j] / max(halo[j], 1))
        tile[i] -= grid[i]
    return tuple(tile)


def bundle_problems(rdf: Mapping[str, Any]) -> list[str]:
    """What stops deepImageJ 3.1 / JDLL 0.6.1 running this bundle (an empty list: nothing found).

    Checks, from JDLL's sources: one input; ``format_version`` 0.4/0.5; ``documentation`` and ``covers`` as plain
    strings; a ``config.bioimageio.nickname`` (or ``id``) without two slashes; every ``clip`` with both ``min``
    and ``max``; only processing JDLL implements; ``channel_names``; fixed spatial input sizes (parametrised
    ones hang above 50,331,648 voxels); tiles larger than twice the halo; ``config.deepimagej.allow_tiling``
    not false; TorchScript weights.
    """
    problems: list[str] = []
    if not str(rdf.get("format_version", "")).startswith(("0.4", "0.5")):
        problems.append(f"format_version {rdf.get('format_version')!r}: JDLL reads 0.4.x and 0.5.x only")
    if not isinstance(rdf.get("documentation", ""), str):
        problems.append("documentation must be a plain string (JDLL casts it to String); write format 0.5.10")
    if any(not isinstance(c, str) for c in rdf.get("covers", [])):
        problems.append("covers must be plain strings (JDLL reads List<String>); write format 0.5.10")
    nickname = ((rdf.get("config") or {}).get("bioimageio") or {}).get("nickname") or rdf.get("id")
    if not nickname:
        problems.append("no config.bioimageio.nickname: JDLL names the model friend-N, a name that changes")
    elif str(nickname).count("/") >= 2:
        problems.append(f"nickname {nickname!r}: JDLL shortens ids with two slashes; use a plain name")
    if ((rdf.get("config") or {}).get("deepimagej") or {}).get("allow_tiling", True) is False:
        problems.append("config.deepimagej.allow_tiling is false: JDLL cannot run size-varying axes untiled")
    if len(rdf.get("inputs", [])) != 1:
        problems.append("deepImageJ runs models with exactly one input")
        return problems
    for kind in ("inputs", "outputs"):
        for t in rdf.get(kind, []):
            problems += _tensor_problems(t, kind)
    tile = tile_shape(rdf)
    if tile is None:
        problems.append(
            "parametrised input sizes: JDLL makes one tile of the whole image and loops forever above "
            f"{JDLL_MAX_TILE_VOXELS} voxels; give every spatial input axis a fixed size (the tile)"
        )
    else:
        for t, h, a in zip(tile, _halo(rdf), _space_axes(rdf["inputs"][0])):
            if t - 2 * h <= 0:
                problems.append(f"axis {a.get('id')}: tile {t} is not larger than twice the halo {h}")
    if "torchscript" not in (rdf.get("weights") or {}):
        problems.append("no torchscript weights: deepImageJ runs PyTorch models only as TorchScript")
    return problems


_JDLL_OPS = {"binarize", "clip", "scale_linear", "scale_range", "sigmoid", "zero_mean_unit_variance",
             "fixed_zero_mean_unit_variance", "ensure_dtype"}  # fmt: skip


def _tensor_problems(tensor: Mapping[str, Any], kind: str) -> list[str]:
    problems = []
    tid = tensor.get("id", tensor.get("name", "?"))
    for a in tensor.get("axes", []):
        if isinstance(a, Mapping) and a.get("type") == "channel" and not a.get("channel_names"):
            problems.append(f"{kind} {tid}: the channel axis needs channel_names (JDLL reads their count)")
    for step in list(tensor.get("preprocessing", [])) + list(tensor.get("postprocessing", [])):
        op, kw = step.get("id", step.get("name")), step.get("kwargs") or {}
        if op not in _JDLL_OPS:
            problems.append(f"{kind} {tid}: JDLL has no {op!r} processing")
        if op == "clip" and ("min" not in kw or "max" not in kw):
            problems.append(f"{kind} {tid}: clip needs both min and max in deepImageJ (give a large finite max)")
        if op == "scale_range" and kw.get("reference_tensor"):
            problems.append(f"{kind} {tid}: JDLL ignores scale_range's reference_tensor")
    return problems
