"""Tiles whose stitched result equals whole-array inference.

Each tile has a *core* (the voxels it writes) and reads the core plus ``halo`` voxels of context on every side,
mirrored where it crosses the array border. With ``halo`` at least the network's receptive radius and every
core starting on a multiple of the network's pooling product, each written voxel sees exactly the context it
would see in one whole-array pass, so tile borders leave no seams (only float rounding differs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fmc_ij.errors import FmcInputError


@dataclass(frozen=True)
class Tile:
    core: tuple[slice, ...]  # written region, array coordinates
    read: tuple[slice, ...]  # region read from the array (inside it)
    pad: tuple[tuple[int, int], ...]  # mirrored padding added to ``read`` (before, after) per axis
    offset: tuple[int, ...]  # where the core starts inside the padded tile

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start + a + b for s, (a, b) in zip(self.read, self.pad))


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def tile_grid(
    shape: Sequence[int],
    tile: Sequence[int],
    halo: Sequence[int],
    multiple: Sequence[int],
    border: Sequence[int] | None = None,
) -> list[Tile]:
    """Tiles covering ``shape``; ``tile`` is the largest padded tile (core + 2 halo) per axis.

    Every tile is a window of one virtual array: the image mirrored by ``border`` voxels on each side (default
    ``halo``) and extended to a multiple of the pooling product. A tile's window edges either coincide with that
    array's edges or lie at least ``halo`` from its core, so with ``halo`` >= the receptive radius the stitched
    result equals one pass over the whole virtual array, whatever the tiling.
    """
    border = list(border) if border is not None else list(halo)
    axes = []
    for n, t, h, m, b in zip(shape, tile, halo, multiple, border):
        h, b = _round_up(h, m), _round_up(b, m)
        end = -b + _round_up(n + 2 * b, m)  # the virtual array spans [-b, end)
        if end + b <= t:  # the whole axis fits one window
            core = _round_up(n, m)
        elif t - 2 * h < m:
            raise FmcInputError(f"tile {t} leaves no core after a halo of {h} on each side; use a tile >= {2 * h + m}")
        else:
            core = (t - 2 * h) // m * m
        spans = []
        for s in range(0, n, core):
            e = min(n, s + core)
            lo, hi = max(s - h, -b), min(s + _round_up(e - s, m) + h, end)
            read = slice(max(lo, 0), min(hi, n))
            spans.append((slice(s, e), read, (read.start - lo, hi - read.stop), s - lo))
        axes.append(spans)
    tiles = []
    for combo in np.ndindex(*[len(a) for a in axes]):
        parts = [axes[i][j] for i, j in enumerate(combo)]
        tiles.append(Tile(tuple(p[0] for p in parts), tuple(p[1] for p in parts), tuple(p[2] for p in parts),
                          tuple(p[3] for p in parts)))  # fmt: skip
    return tiles


def pad_tile(block: np.ndarray, pad: Sequence[tuple[int, int]]) -> np.ndarray:
    """Mirror-pad a block read from the array (symmetric-free 'reflect', as torch's reflect; edge beyond)."""
    out = block
    for ax, (a, b) in enumerate(pad):
        if not (a or b):
            continue
        n = out.shape[ax]
        ra, rb = min(a, n - 1), min(b, n - 1)
        widths = [(0, 0)] * out.ndim
        widths[ax] = (ra, rb)
        if ra or rb:
            out = np.pad(out, widths, mode="reflect")
        if a - ra or b - rb:  # deeper than the array itself: repeat the edge
            widths[ax] = (a - ra, b - rb)
            out = np.pad(out, widths, mode="edge")
    return out


def auto_tile(
    shape: Sequence[int], halo: Sequence[int], border: Sequence[int], multiple: Sequence[int], max_voxels: int
) -> list[int]:
    """The padded tile size that covers ``shape`` with the fewest computed voxels, each tile <= ``max_voxels``.

    Splitting an axis into k tiles costs ``2 * halo`` extra voxels per tile along it, so large halos favour few,
    long tiles; the search tries 1..32 tiles per axis.
    """
    options = []
    for n, h, b, m in zip(shape, halo, border, multiple):
        h, b = _round_up(h, m), _round_up(b, m)
        axis = [(1, _round_up(n + 2 * b, m), _round_up(n + 2 * b, m))]  # (tiles, tile size, computed length)
        for k in range(2, 33):
            core = _round_up(-(-n // k), m)
            if core < m or (k - 1) * core >= n:
                continue
            tiles = -(-n // core)
            axis.append((tiles, core + 2 * h, tiles * (core + 2 * h)))
        options.append(axis)
    best, best_cost = None, None
    for combo in np.ndindex(*[len(o) for o in options]):
        picks = [options[i][j] for i, j in enumerate(combo)]
        if int(np.prod([p[1] for p in picks])) > max_voxels:
            continue
        cost = int(np.prod([p[2] for p in picks]))
        if best_cost is None or cost < best_cost:
            best, best_cost = [p[1] for p in picks], cost
    if best is None:  # even the smallest tiles exceed the budget: take them anyway
        best = [min(o, key=lambda p: p[1])[1] for o in options]
    return best
