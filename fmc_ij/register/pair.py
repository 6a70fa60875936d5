"""Register one LR/HR pair (resample, global shift, elastic pyramid) and a whole dataset, with QC.

The moving image is the cheap acquisition (LR); it is resampled onto the reference (HR) grid when the
voxel sizes differ, then aligned: registered[p] = moving_on_hr_grid[p + field[:, p]].
"""

from __future__ import annotations

import csv
import io as _io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fmc_ij.errors import FmcInputError
from fmc_ij.io import (
    Image,
    ImageMeta,
    discover,
    imagej_dtype,
    imread,
    imwrite,
    read_manifest,
    to_dtype,
    write_manifest,
    write_text_atomic,
)
from fmc_ij.io.atomic import atomic_path
from fmc_ij.io.meta import unit_to_um
from fmc_ij.progress import track
from fmc_ij.register.elastic import LevelInfo, elastic_register, ncc, valid_region, warp
from fmc_ij.register.shift import check_pair, estimate_shift


@dataclass
class RegistrationResult:
    """A registered image with everything needed to judge and reuse the registration."""

    registered: np.ndarray  # moving on the reference grid, aligned
    moving: np.ndarray  # moving resampled onto the reference grid, before alignment (for QC)
    field: np.ndarray  # (ndim, *shape) voxels, registered[p] = resampled_moving[p + field[:, p]]
    shift: np.ndarray  # global part (voxels)
    valid: np.ndarray  # bool overlap: voxels whose source lies inside what the moving image covers
    ncc_before: float
    ncc_rigid: float
    ncc_after: float
    levels: list[LevelInfo] = field(default_factory=list)

    def crop_box(self) -> tuple[slice, ...]:
        """A large axis-aligned box inside the valid region: peel the worst face until no voxel is invalid."""
        v = self.valid
        lo, hi = [0] * v.ndim, list(v.shape)
        while True:
            box = tuple(slice(a, b) for a, b in zip(lo, hi))
            sub = v[box]
            if sub.size == 0:
                raise FmcInputError("registration left no overlapping region; check that the pair shows one sample")
            if sub.all():
                return box
            worst, which = -1.0, (0, 0)
            for ax in range(v.ndim):
                for side, idx in ((0, 0), (1, -1)):
                    bad = 1.0 - float(np.take(sub, idx, axis=ax).mean())
                    if bad > worst:
                        worst, which = bad, (ax, side)
            ax, side = which
            if side == 0:
                lo[ax] += 1
            else:
                hi[ax] -= 1


def resample(image: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float], shape: Sequence[int]):
    """Resample ``image`` (voxel size ``spacing``) onto a grid of ``shape`` with ``target_spacing``.

    Voxel centres are aligned at the first voxel; trilinear (3D) or bicubic (2D) interpolation.
    """
    img = torch.as_tensor(np.asarray(image, np.float32))
    nd = img.dim()
    if all(abs(a - b) < 1e-9 for a, b in zip(spacing, target_spacing)) and tuple(img.shape) == tuple(shape):
        return img.numpy()
    coords = []
    for ax in range(nd):
        p = torch.arange(shape[ax], dtype=torch.float32) * (target_spacing[ax] / spacing[ax])
        coords.append(p * 2.0 / max(img.shape[ax] - 1, 1) - 1.0)
    grid = torch.stack(torch.meshgrid(*coords, indexing="ij")[::-1], -1)[None]
    mode = "bicubic" if nd == 2 else "bilinear"
    out = F.grid_sample(img[None, None], grid, mode=mode, padding_mode="border", align_corners=True)
    return out[0, 0].numpy()


def register_pair(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    spacing_ref: Sequence[float] | None = None,
    spacing_mov: Sequence[float] | None = None,
    elastic: bool = True,
    min_block: int = 64,
    min_similarity: float = 0.5,
    max_shift: float | None = None,
    refine: bool | None = None,
    device: str | None = None,
    progress: bool = False,
) -> RegistrationResult:
    """Align ``moving`` (e.g. the single view, widefield) onto ``reference`` (the fused view, STED).

    Parameters
    ----------
    reference, moving : ndarray
        2D or 3D images; ``moving`` may have a different voxel size (give both spacings).
    spacing_ref, spacing_mov : sequence of float, optional
        Voxel sizes in the same unit; the moving image is resampled onto the reference grid.
    elastic : bool
        Run the pyramidal elastic step after the global shift.
    min_block, min_similarity, max_shift, refine
        See :func:`fmc_ij.register.elastic.elastic_register` and :func:`estimate_shift`.
    """
    ref = np.asarray(reference, np.float32)
    mov = np.asarray(moving, np.float32)
    if ref.ndim != mov.ndim or ref.ndim not in (2, 3):
        raise FmcInputError(
            f"registration: the reference is {ref.ndim}D {ref.shape} and the moving image {mov.ndim}D {mov.shape}; "
            "give two 2D images or two 3D volumes"
        )
    extent = None
    if spacing_ref is not None and spacing_mov is not None:
        sr, sm = list(spacing_ref)[-ref.ndim :], list(spacing_mov)[-mov.ndim :]
        # The last reference coordinate the moving image covers: beyond it resampling only repeats its edge.
        extent = [(n - 1) * b / a for n, a, b in zip(mov.shape, sr, sm)]
        mov = resample(mov, sm, sr, ref.shape)
    elif mov.shape != ref.shape and all(m <= r for m, r in zip(mov.shape, ref.shape)):
        extent = [n - 1 for n in mov.shape]
        mov = resample(mov, [1.0] * ref.ndim, [1.0] * ref.ndim, ref.shape)
    if extent is not None and any(e < 7 and e < n - 1.5 for e, n in zip(extent, ref.shape)):
        raise FmcInputError(
            f"registration: the moving image covers only {min(extent) + 1:.1f} reference voxels along one axis; "
            "check the voxel sizes and units of both files"
        )
    check_pair(ref, mov)
    g = estimate_shift(ref, mov, max_shift=max_shift, device=device)
    shape = ref.shape
    rigid_field = np.broadcast_to(g.shift.reshape(-1, *[1] * ref.ndim), (ref.ndim, *shape)).astype(np.float32)
    fld = rigid_field.copy()
    rigid = warp(mov, fld).numpy()
    levels: list[LevelInfo] = []
    if elastic and min(shape[-2:]) >= 2 * min_block:
        res = elastic_register(
            ref, mov, init_field=fld, min_block=min_block, min_similarity=min_similarity, device=device,
            progress=progress, refine=refine,
        )  # fmt: skip
        fld, levels = res.field, res.levels
    registered = warp(mov, fld).numpy()
    valid = valid_region(fld, extent)
    ncc_rigid, ncc_after = ncc(ref, rigid, valid), ncc(ref, registered, valid)
    if levels and ncc_after < ncc_rigid:
        # The pair holds no elastic misalignment the blocks can see (or the images differ too much): the
        # elastic field would only fit noise, so keep the rigid result.
        fld, registered, valid, ncc_after = rigid_field, rigid, valid_region(rigid_field, extent), ncc_rigid
    return RegistrationResult(
        registered=registered,
        moving=mov,
        field=fld,
        shift=g.shift,
        valid=valid,
        ncc_before=ncc(ref, mov),
        ncc_rigid=ncc_rigid,
        ncc_after=ncc_after,
        levels=levels,
    )


def _pair_spacings(low: Image, high: Image) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """LR's and HR's voxel sizes in one unit (HR's): nm, µm, mm, ... are converted; a file without a calibration
    (unit "pixel") is taken to share its partner's grid (pixels are not microns)."""
    sp_ref, sp_mov = high.meta.voxel_size(), low.meta.voxel_size()
    lo_u, hi_u = unit_to_um(low.meta.unit), unit_to_um(high.meta.unit)
    if low.meta.unit == "pixel" and high.meta.unit != "pixel":
        return sp_ref, sp_ref
    if high.meta.unit == "pixel" and low.meta.unit != "pixel":
        return sp_mov, sp_mov
    if low.meta.unit == high.meta.unit:
        return sp_ref, sp_mov
    if lo_u is None or hi_u is None:
        bad = low.meta.unit if lo_u is None else high.meta.unit
        raise FmcInputError(
            f"unknown length unit {bad!r} (LR in {low.meta.unit}, HR in {high.meta.unit}); use nm, µm or mm"
        )
    return sp_ref, tuple(v * lo_u / hi_u for v in sp_mov)


def register_images(low: Image, high: Image, **kwargs: Any) -> RegistrationResult:
    """:func:`register_pair` on two :class:`~fmc_ij.io.Image` s, their voxel sizes taken from the metadata and
    converted to one unit."""
    for img, role in ((low, "LR"), (high, "HR")):
        if img.meta.axes not in ("YX", "ZYX"):
            raise FmcInputError(
                f"the {role} image has axes {img.meta.axes}; registration takes single-channel YX or ZYX"
            )
    if len(low.meta.axes) != len(high.meta.axes):
        raise FmcInputError(
            f"the LR image is {low.meta.axes} {tuple(low.shape)} and the HR image {high.meta.axes} "
            f"{tuple(high.shape)}; register two YX images or two ZYX volumes"
        )
    sp_ref, sp_mov = _pair_spacings(low, high)
    return register_pair(high.data, low.data, spacing_ref=sp_ref, spacing_mov=sp_mov, **kwargs)


def registered_meta(low: Image, high: Image) -> ImageMeta:
    """Metadata of the registered LR image: LR's channel, study and keys on HR's grid (HR's voxel size and unit;
    LR's calibration when only LR has one)."""
    grid = low.meta if high.meta.unit == "pixel" and low.meta.unit != "pixel" else high.meta
    return low.meta.replace(spacing=dict(grid.spacing), axes=high.meta.axes, unit=grid.unit, note="")


def write_registered(path: str | os.PathLike, result: RegistrationResult, low: Image, high: Image, box=None) -> Path:
    """Write the registered LR image (optionally cropped to ``box``) in LR's dtype with HR's grid metadata
    (:func:`registered_meta`); voxels outside the valid region (what LR never saw) are written as 0."""
    data = np.where(result.valid, result.registered, 0.0)
    data = data if box is None else data[box]
    imwrite(path, to_dtype(data, imagej_dtype(low.data.dtype)), registered_meta(low, high))
    return Path(path)


def qc_figure(ref: np.ndarray, result: RegistrationResult, path: str | os.PathLike) -> Path:
    """Before/after overlays (magenta = reference, green = moving) and a quiver plot of the field."""
    from fmc_ij import report

    mov = result.moving
    plt = report.plt
    sl = (ref.shape[0] // 2,) if ref.ndim == 3 else ()

    def norm(x: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(x, (1, 99.7))
        return np.clip((x - lo) / (hi - lo + 1e-12), 0, 1)

    def overlay(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = norm(a), norm(b)
        return np.stack([a, b, a], -1)

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
    axes[0].imshow(overlay(ref[sl], mov[sl]))
    axes[0].set_title(f"before (NCC {result.ncc_before:.3f})")
    axes[1].imshow(overlay(ref[sl], result.registered[sl]))
    axes[1].set_title(f"after (NCC rigid {result.ncc_rigid:.3f}, elastic {result.ncc_after:.3f})")
    f = result.field[(slice(None), *sl)][-2:] if ref.ndim == 3 else result.field
    step = max(1, min(f.shape[1:]) // 16)
    yy, xx = np.mgrid[0 : f.shape[1] : step, 0 : f.shape[2] : step]
    mag = np.hypot(f[0], f[1])
    im = axes[2].imshow(mag, cmap="viridis")
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.03, label="|displacement| (px)")
    axes[2].quiver(xx, yy, f[1][::step, ::step], -f[0][::step, ::step], color="w", angles="xy")
    axes[2].set_title(f"field |d| (max {mag.max():.2f} px)")
    for ax in axes[:2]:
        ax.text(0.01, 0.99, "magenta: reference (HR)\ngreen: moving (LR)", transform=ax.transAxes, va="top",
                fontsize=7, color="w", bbox={"facecolor": "k", "alpha": 0.5, "pad": 2})  # fmt: skip
    for ax in axes:
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    return report.save_figure(fig, path)


@dataclass
class DatasetRow:
    name: str
    shift: list[float]
    ncc_before: float
    ncc_rigid: float
    ncc_after: float
    crop: list[list[int]]
    extra: dict[str, Any] = field(default_factory=dict)


def _write_pair(out: Path, root: str | os.PathLike, pair: Any, lo: Any, hi: Any, res: Any, box: tuple[slice, ...],
                rows: list[DatasetRow]) -> None:  # fmt: skip
    """Write one registered pair (cropped to ``box``), its field and QC figure; append its CSV row."""
    write_registered(out / pair.low.relative_to(root), res, lo, hi, box)
    imwrite(out / pair.high.relative_to(root), to_dtype(hi.data[box], imagej_dtype(hi.data.dtype)), hi.meta)
    with atomic_path(out / "fields" / f"{pair.name}.npy") as tmp:
        np.save(tmp, res.field[(slice(None), *box)])
    qc_figure(hi.data, res, out / "qc" / f"{pair.name}.png")
    rows.append(DatasetRow(pair.name, [round(float(v), 4) for v in res.shift], res.ncc_before, res.ncc_rigid,
                           res.ncc_after, [[s.start, s.stop] for s in box]))  # fmt: skip


def register_dataset(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    low: str | None = None,
    high: str | None = None,
    elastic: bool = True,
    min_block: int = 64,
    min_similarity: float = 0.5,
    overwrite: bool = False,
    refine: bool | None = None,
) -> list[DatasetRow]:
    """Register every pair of a dataset and write the registered pairs cropped to their common valid
    region (same file names, metadata kept), the fields (``fields/NAME.npy``), a QC PNG per pair and
    ``registration.csv``. The HR image is the reference; the LR image moves.
    """
    out = Path(out)
    if out.resolve() == Path(root).resolve():
        raise FmcInputError(f"--out {out} is the input dataset; registered pairs go to another folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FmcInputError(f"{out} exists and is not empty; pass --overwrite or choose another folder")
    pairs = discover(root, low=low, high=high)
    rows: list[DatasetRow] = []
    # The channels of one specimen (image_N_nucleus / image_N_membrane) share the target grid: they are cropped
    # to one common box, so they stay on one grid (a multi-channel model stacks them).
    groups: dict[str, list[Any]] = {}
    for pair in pairs:
        groups.setdefault(f"image_{pair.index}" if pair.index is not None else pair.name, []).append(pair)
    for group in track(list(groups.values()), "register", total=len(groups)):
        regs = []
        for pair in group:
            lo, hi = imread(pair.low), imread(pair.high)
            res = register_images(lo, hi, elastic=elastic, min_block=min_block, min_similarity=min_similarity,
                                  refine=refine)  # fmt: skip
            regs.append((pair, lo, hi, res, res.crop_box()))
        if len(regs) > 1 and len({tuple(r[2].shape) for r in regs}) == 1:
            common = tuple(slice(max(r[4][a].start for r in regs), min(r[4][a].stop for r in regs))
                           for a in range(len(regs[0][4])))  # fmt: skip
            if all(sl.stop > sl.start for sl in common):
                regs = [(*r[:4], common) for r in regs]
        for pair, lo, hi, res, box in regs:
            _write_pair(out, root, pair, lo, hi, res, box, rows)
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "shift", "ncc_before", "ncc_rigid", "ncc_after", "crop"])
    for r in rows:
        w.writerow([r.name, " ".join(map(str, r.shift)), f"{r.ncc_before:.5f}", f"{r.ncc_rigid:.5f}",
                    f"{r.ncc_after:.5f}", " ".join(f"{a}:{b}" for a, b in r.crop)])  # fmt: skip
    write_text_atomic(out / "registration.csv", buf.getvalue())
    manifest = read_manifest(root)
    globs = (low, high) if low and high else ((manifest["low"], manifest["high"]) if manifest else None)
    if globs:
        write_manifest(out, kind="registered", low=globs[0], high=globs[1])
    return rows
