"""Pyramidal elastic (block-wise) registration, 2D and 3D, in torch (Wang et al. 2019 after NanoJ-Core).

Per level, the current registered image is cut into blocks (not overlapping by default, as NanoJ's) and
each block's sub-pixel shift against the reference is measured by cross-correlation; blocks whose peak NCC
is below ``min_similarity`` are dropped and filled from their neighbours (normalised Gaussian averaging on the
block grid), the block vectors are interpolated into a dense field (bicubic in 2D, trilinear in 3D)
and composed with the field so far. The block size halves per level down to ``min_block`` (64 px). A last,
dense level (:func:`fmc_ij.register.dense.dense_refine`) fits a regularised correction on control points every
16-128 px to the whole image: it bends within blocks and carries the field across blocks without structure, which
matters where blocks are few (small images, strong warps).

Convention: ``registered[p] = moving[p + field[:, p]]`` (voxels, array axis order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fmc_ij.register.shift import MIN_PEAK_Z, estimate_shift


@dataclass
class LevelInfo:
    """What one pyramid level did (``kind`` "dense": the refinement, ``block`` its control-point spacing,
    ``n_blocks`` its control points, ``n_kept`` its Gauss-Newton steps)."""

    block: tuple[int, ...]
    n_blocks: int
    n_kept: int
    ncc: float  # global NCC after the level
    kind: str = "blocks"


@dataclass
class ElasticResult:
    field: np.ndarray  # (ndim, *shape) float32
    levels: list[LevelInfo] = field(default_factory=list)


def _norm_coords(field_t: torch.Tensor, step: int = 1) -> torch.Tensor:
    """Voxel displacement (nd, *shape) sampled every ``step`` voxels -> grid_sample's normalised (x, y[, z])
    sampling grid (1, *shape, nd) over the extent those samples cover."""
    nd = field_t.shape[0]
    shape = tuple(field_t.shape[1:])
    grid = torch.empty((1, *shape, nd), device=field_t.device, dtype=field_t.dtype)
    for a in range(nd):  # written in place, axis by axis: no meshgrid, no stacked copy
        scale = 2.0 / max((shape[a] - 1) * step, 1)
        base = torch.arange(shape[a], device=field_t.device, dtype=field_t.dtype) * (step * scale) - 1.0
        base = base.reshape([shape[a] if i == a else 1 for i in range(nd)])
        grid[0, ..., nd - 1 - a] = torch.add(base, field_t[a], alpha=scale)  # grid_sample wants (x, y, z)
    return grid


def warp(image: torch.Tensor | np.ndarray, field_: torch.Tensor | np.ndarray, *, mode: str = "auto") -> torch.Tensor:
    """``out[p] = image[p + field[:, p]]``: bicubic in 2D, trilinear in 3D, edges clamped."""
    img = torch.as_tensor(np.asarray(image) if not torch.is_tensor(image) else image).float()
    fld = torch.as_tensor(np.asarray(field_) if not torch.is_tensor(field_) else field_).float().to(img.device)
    nd = img.dim()
    if mode == "auto":
        mode = "bicubic" if nd == 2 else "bilinear"
    grid = _norm_coords(fld)
    out = F.grid_sample(img[None, None], grid, mode=mode, padding_mode="border", align_corners=True)
    return out[0, 0]


def valid_region(field_: np.ndarray | torch.Tensor, extent: Sequence[float] | None = None) -> np.ndarray:
    """Voxels whose source ``p + field`` lies inside the moving image (the overlap).

    ``extent``: per axis, the last coordinate the moving image covers on this grid (default ``n - 1``): an image
    resampled from a smaller field of view covers less than the grid, and what lies beyond it was never seen.
    """
    fld = np.asarray(field_.cpu() if torch.is_tensor(field_) else field_)
    shape = fld.shape[1:]
    ok = np.ones(shape, bool)
    for a, n in enumerate(shape):
        hi = (n - 1) if extent is None else min(n - 1, float(extent[a]))
        src = np.arange(n).reshape([n if i == a else 1 for i in range(len(shape))]) + fld[a]
        ok &= (src >= 0) & (src <= hi + 1e-6)
    return ok


def ncc(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of two images (optionally inside ``mask``)."""
    x = torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a).double().flatten()
    y = torch.as_tensor(np.asarray(b) if not torch.is_tensor(b) else b).double().flatten().to(x.device)
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask)).flatten().to(x.device)
        x, y = x[m], y[m]
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum()) / den if den > 0 else float("nan")


def _blocks(
    shape: Sequence[int], block: Sequence[int], overlap: float = 0.0
) -> tuple[list[list[int]], tuple[int, ...]]:
    """Block start positions per axis (``overlap``: fraction shared by neighbours; the last block flush with the
    edge)."""
    starts = []
    for n, b in zip(shape, block):
        step = max(1, int(round(b * (1.0 - overlap))))
        s = list(range(0, max(n - b, 0) + 1, step))
        if s[-1] != n - b:
            s.append(n - b)
        starts.append(s)
    return starts, tuple(len(s) for s in starts)


def _extract(x: torch.Tensor, starts: list[list[int]], block: Sequence[int]) -> torch.Tensor:
    """(n_blocks, *block) stack of blocks at the given starts (all combinations, C order), one copy.

    The regular starts come from a strided ``unfold`` view; the extra edge-flush block (if any) is
    appended along that axis, so the result matches the listed starts exactly.
    """
    nd = x.dim()
    out = x
    for ax in range(nd):
        st, b = starts[ax], block[ax]
        step = st[1] - st[0] if len(st) > 1 else b
        regular = [i for i in range(len(st)) if st[i] == st[0] + i * step]
        n_reg = len(regular)
        view = out.narrow(ax, st[0], (n_reg - 1) * step + b).unfold(ax, b, step)  # (..., n_reg, ..., b)
        if n_reg < len(st):
            extra = torch.stack([out.narrow(ax, s0, b) for s0 in st[n_reg:]], ax).movedim(ax + 1, -1)
            view = torch.cat([view, extra], ax)
        out = view
    # out has axes (n0, n1, ..., b0, b1, ...) already: grid axes first, block axes last.
    return out.reshape(-1, *block)


def _fill_invalid(vec: torch.Tensor, ok: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Normalised Gaussian averaging on the block grid: dropped blocks take their neighbours' vectors."""
    nd = vec.shape[0]
    if bool(ok.all()):
        return vec
    if not bool(ok.any()):
        return torch.zeros_like(vec)
    r = max(1, int(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=vec.dtype, device=vec.device)
    k1 = torch.exp(-0.5 * (t / sigma) ** 2)
    w = ok.to(vec.dtype)
    num, den = vec * w, w[None]
    conv = F.conv3d if nd == 3 else F.conv2d
    for ax in range(nd):
        shape = [1, 1] + [1] * nd
        shape[2 + ax] = k1.numel()
        pad = [0, 0] * nd
        pad[2 * (nd - 1 - ax)] = pad[2 * (nd - 1 - ax) + 1] = r
        num = conv(F.pad(num[:, None], pad, mode="replicate"), k1.reshape(shape))[:, 0]
        den = conv(F.pad(den[:, None], pad, mode="replicate"), k1.reshape(shape))[:, 0]
    filled = num / den.clamp_min(1e-12)
    # Blocks still unreached (den ~ 0) get the mean of the kept vectors.
    mean = (vec * w).flatten(1).sum(1) / w.sum()
    far = den[0] < 1e-6
    filled[:, far] = mean[:, None].expand(-1, int(far.sum()))
    return torch.where(ok[None], vec, filled)


def _dense(
    vec: torch.Tensor, starts: list[list[int]], block: Sequence[int], shape: Sequence[int], step: int
) -> torch.Tensor:
    """Block-centre vectors (nd, *grid) interpolated (bicubic 2D / trilinear 3D, clamped) at every ``step``-th
    voxel of ``shape``: the field on the coarse grid of :func:`_to_full`."""
    nd = len(shape)
    coarse = [(n - 1) // step + 1 for n in shape]
    centres = [torch.tensor(s, dtype=torch.float32, device=vec.device) + (b - 1) / 2 for s, b in zip(starts, block)]
    # Fractional grid index of every coarse voxel along each axis (piecewise linear in the centres, clamped).
    frac = []
    for c, n in zip(centres, coarse):
        p = torch.arange(n, dtype=torch.float32, device=vec.device) * step
        if len(c) == 1:
            frac.append(torch.zeros(n, device=vec.device))
            continue
        i = torch.searchsorted(c, p).clamp(1, len(c) - 1)
        f = (i - 1) + (p - c[i - 1]) / (c[i] - c[i - 1])
        frac.append(f.clamp(0, len(c) - 1))
    grids = torch.meshgrid(*frac, indexing="ij")
    norm = [g * 2.0 / max(len(c) - 1, 1) - 1.0 for g, c in zip(grids, centres)]
    grid = torch.stack(norm[::-1], -1)[None]
    mode = "bicubic" if nd == 2 else "bilinear"
    return F.grid_sample(vec[None].float(), grid, mode=mode, padding_mode="border", align_corners=True)[0]


def _to_full(coarse: torch.Tensor, shape: Sequence[int], step: int) -> torch.Tensor:
    """A field sampled every ``step`` voxels (sample j at voxel j * step) filled in linearly to ``shape``.

    Fields vary on the block scale (>= 64 px): at ``step = min_block // 16`` the linear fill-in is exact to
    ~1e-4 px, and fields are composed on the coarse grid at 1/16 (2D) or 1/64 (3D) of the cost.
    """
    if step == 1:
        return coarse
    nd = len(shape)
    covered = [(n - 1) * step + 1 for n in coarse.shape[1:]]
    mode = "bilinear" if nd == 2 else "trilinear"
    up = F.interpolate(coarse[None], size=covered, mode=mode, align_corners=True)
    pad = []
    for full, cov in zip(reversed(shape), reversed(covered)):
        pad += [0, full - cov]
    return (F.pad(up, pad, mode="replicate") if any(pad) else up)[0]


def _compose(outer: torch.Tensor, inner: torch.Tensor, step: int) -> torch.Tensor:
    """Field of ``warp(warp(m, inner), outer)``, d(p) = outer(p) + inner(p + outer(p)), on the coarse grid."""
    grid = _norm_coords(outer, step)
    # Fields are smooth: bilinear sampling is exact enough and 3-4x cheaper than bicubic.
    sampled = F.grid_sample(inner[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    return outer + sampled


def block_sizes(shape: Sequence[int], min_block: int = 64, max_levels: int = 3) -> list[tuple[int, ...]]:
    """Pyramid block sizes: ``max_levels`` levels (or fewer on small images), halving down to ``min_block``.

    The global shift has already removed the large-scale offset, so the pyramid starts at 4x the smallest
    block rather than at the image size: bigger blocks only re-measure what is known.
    """
    lateral = min(shape[-2:])
    b = min_block
    while b * 2 <= lateral // 2 and b < min_block * 2 ** (max_levels - 1):
        b *= 2
    sizes = []
    while b >= min_block and len(sizes) < max_levels:
        sizes.append(tuple(min(b, n) for n in shape))
        b //= 2
    return sizes or [tuple(min(min_block, n) for n in shape)]


#: Volumes above this many voxels skip the dense refinement unless asked (its cost grows with the voxels).
REFINE_MAX_VOXELS = 2**23


def refine_spacing_for(shape: Sequence[int]) -> int:
    """Control-point spacing of the dense refinement: 1/16 of the smaller lateral side, within 16..128 voxels.

    Measured on smooth 3 px warps: 16 px on 256^2 textures (0.26 -> 0.06 px RMS); on the 2048^2 light-sheet
    plane, whose specimen fills a fraction of the field, 16 px fits the views' differing blur (0.54 px) and
    128 px gives 0.058 px (pyramid alone 0.083).
    """
    return int(max(16, min(128, min(shape[-2:]) // 16)))


def elastic_register(
    ref: np.ndarray | torch.Tensor,
    mov: np.ndarray | torch.Tensor,
    *,
    init_field: np.ndarray | None = None,
    min_block: int = 64,
    min_similarity: float = 0.5,
    max_shift: float | None = None,
    passes_last_level: int | None = None,
    overlap: float = 0.0,
    refine: bool | None = None,
    refine_spacing: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> ElasticResult:
    """Pyramidal block-wise registration of ``mov`` onto ``ref`` (same shape, 2D or 3D).

    Parameters
    ----------
    ref, mov : array
        Reference and moving images on the same grid.
    init_field : ndarray, optional
        Start from this smooth field (e.g. the global shift broadcast); zeros otherwise. It is sampled every
        ``min_block // 16`` voxels like the fields the levels add.
    min_block : int
        Smallest block edge (voxels); 64 as in Wang et al. 2019.
    min_similarity : float
        Blocks whose peak NCC is below this are ignored (NanoJ's default 0.5).
    max_shift : float, optional
        Largest block shift searched per level (default: a quarter of the block).
    passes_last_level : int, optional
        Repeat the finest level this many times (default 1). Windowed block estimates are pulled towards zero
        in proportion to the residual, but after the coarser levels it is small: measured on smooth 3 px warps
        of light-sheet planes and of textures (2D and 3D), more passes only added block noise.
    overlap : float
        Fraction of a block shared with each neighbour (0.5: four times the blocks in 2D, eight in 3D, i.e. that
        much more time). Measured on the same warps, 0.5 helps only where few blocks hold structure (1024^2
        plane: 0.120 -> 0.096 px RMS) and not on 2048^2 planes (0.083 either way).
    refine : bool, optional
        After the pyramid, fit a regularised dense correction on control points every ``refine_spacing`` voxels
        (:func:`fmc_ij.register.dense.dense_refine`): it bends within blocks and carries the field across blocks
        without structure. Measured on 256^2 fluorescence textures warped by up to 3 px: 0.26 -> 0.06 px RMS; on a
        64x128x128 volume (2 px warp) 0.127 -> 0.016 px. Default (None): 2D images, and volumes up to
        :data:`REFINE_MAX_VOXELS` (a 128x512x512 light-sheet pair took 45 s -> 143 s on a loaded 2-core machine).
    refine_spacing : int, optional
        Control-point spacing of the refinement (default :func:`refine_spacing_for`).

    Returns
    -------
    ElasticResult
        The total field and per-level statistics.
    """
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    r = torch.as_tensor(np.asarray(ref, np.float32) if not torch.is_tensor(ref) else ref).float().to(dev)
    m = torch.as_tensor(np.asarray(mov, np.float32) if not torch.is_tensor(mov) else mov).float().to(dev)
    nd = r.dim()
    shape = tuple(r.shape)
    step = max(1, min_block // 16)  # the field lives on a coarse grid (see _to_full)
    coarse = tuple(slice(0, None, step) for _ in range(nd))
    total = (
        torch.as_tensor(init_field, dtype=torch.float32, device=dev)[(slice(None), *coarse)]
        if init_field is not None
        else torch.zeros((nd, *[(n - 1) // step + 1 for n in shape]), device=dev)
    )
    sizes = block_sizes(shape, min_block)
    passes = passes_last_level or 1
    sizes = sizes + [sizes[-1]] * max(0, passes - 1)
    info: list[LevelInfo] = []
    from fmc_ij.progress import track

    sub = tuple(slice(None, None, 4) for _ in range(nd))  # a strided sample is enough to follow progress
    pending: list[tuple[tuple[int, ...], int, int]] = []
    for block in track(sizes, "elastic", total=len(sizes)) if progress else sizes:
        cur = warp(m, _to_full(total, shape, step))
        if pending:  # the previous level's NCC, from the image this level starts from
            info.append(LevelInfo(*pending.pop(), ncc(r[sub], cur[sub])))
        starts, grid_shape = _blocks(shape, block, overlap)
        rb = _extract(r, starts, block)
        mb = _extract(cur, starts, block)
        res = estimate_shift(rb, mb, ndim=nd, max_shift=max_shift or max(2.0, min(block) / 4))
        vec = torch.as_tensor(res.shift, dtype=torch.float32, device=dev).T.reshape(nd, *grid_shape)
        ok = torch.as_tensor(res.ncc, device=dev) >= min_similarity  # flat blocks have no peak: z drops them
        ok &= torch.as_tensor(res.z, device=dev) >= MIN_PEAK_Z  # blocks of background: no real peak
        ok = ok.reshape(grid_shape)
        vec = _fill_invalid(vec, ok)
        total = _compose(_dense(vec, starts, block, shape, step), total, step)
        pending.append((tuple(block), int(ok.numel()), int(ok.sum())))
    full = _to_full(total, shape, step)
    if pending:
        info.append(LevelInfo(*pending.pop(), ncc(r[sub], warp(m, full)[sub])))
    if refine or (refine is None and (nd == 2 or int(np.prod(shape)) <= REFINE_MAX_VOXELS)):
        from fmc_ij.register.dense import dense_refine

        h = refine_spacing or refine_spacing_for(shape)
        refined, steps = dense_refine(r, m, full, spacing=h)
        after = ncc(r[sub], warp(m, refined)[sub])
        nodes = int(np.prod([(n - 1) // h + 2 for n in shape]))
        if not info or after >= info[-1].ncc:  # a refinement that matches worse is dropped (kept: 0 steps)
            full = refined
        info.append(
            LevelInfo(
                (h,) * nd,
                nodes,
                len(steps) if full is refined else 0,
                max(after, info[-1].ncc if info else after),
                "dense",
            )
        )
    return ElasticResult(full.cpu().numpy().astype(np.float32), info)
