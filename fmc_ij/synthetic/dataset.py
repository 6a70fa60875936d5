"""Write simulated datasets to disk in the layouts that :func:`fmc_ij.io.discover` reads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fmc_ij.errors import FmcInputError
from fmc_ij.io import ImageMeta, imwrite, write_manifest, write_text_atomic
from fmc_ij.io.tiff import TiffFlavour
from fmc_ij.progress import track
from fmc_ij.synthetic.beads import BeadsConfig, simulate_beads
from fmc_ij.synthetic.filaments import FilamentsConfig, simulate_filaments
from fmc_ij.synthetic.lightsheet import CHANNELS, LightSheetConfig, simulate_lightsheet
from fmc_ij.synthetic.surface import SurfaceConfig, simulate_surface
from fmc_ij.synthetic.warp import apply_displacement, random_displacement

Kind = Literal["lightsheet", "beads", "filaments"]
KINDS: tuple[str, ...] = ("lightsheet", "beads", "filaments", "surface")
#: Study number written into simulated light-sheet files (the challenge's studies are 1-5).
SYNTHETIC_STUDY = 0
#: Above this, a dense displacement field and its interpolation no longer fit a 24 GiB machine.
MAX_MISREGISTER_VOXELS = 2**26


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FmcInputError(f"{out}: exists and is a file; choose another --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FmcInputError(f"{out}: folder is not empty; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)


def _misregister(
    img: np.ndarray, rng: np.random.Generator, spacing: tuple[float, ...]
) -> tuple[np.ndarray, dict, np.ndarray]:
    # Elastic correlation length ~3 NanoJ blocks laterally; axially scaled by the anisotropy.
    lat = spacing[-1]
    smooth = [max(4.0, 192.0 * lat / s) if i < img.ndim - 2 else 192.0 for i, s in enumerate(spacing)]
    shift, disp = random_displacement(
        img.shape, rng, shift_px=[1.0] * (img.ndim - 2) + [3.0, 3.0], elastic_px=1.5, smoothness_px=smooth
    )
    return apply_displacement(img, disp), {"shift_px": shift.round(4).tolist()}, disp


def simulate_lightsheet_dataset(
    out: str | Path,
    *,
    n: int = 2,
    cfg: LightSheetConfig | None = None,
    seed: int = 0,
    channels: tuple[str, ...] = CHANNELS,
    misregister: bool = False,
    flavour: TiffFlavour = "imagej",
    start_index: int = 0,
    overwrite: bool = False,
    randomize: bool = False,
) -> Path:
    """Write ``n`` specimens as ``image_{N}_{channel}_{angle|fused}.tif`` with the challenge's metadata.

    With ``randomize`` every specimen gets its own specimen, voxel size and optics
    (:meth:`LightSheetConfig.randomized`, of ``cfg``'s shape): training data for a model that covers many studies.

    With ``misregister`` the angle view is shifted and elastically warped relative to the fused one;
    the displacement (``truth/image_{N}_{channel}_displacement.ome.tif``, axes CZYX with C = the Z, Y, X
    components in voxels) and the global shifts (``truth/misregistration.json``) are saved.
    """
    out = Path(out)
    cfg = cfg or LightSheetConfig()
    voxels = int(np.prod(cfg.shape))
    if misregister and voxels > MAX_MISREGISTER_VOXELS:
        need = voxels * 4 * 7 / 2**30  # displacement field (3 x float32), coordinates and spline coefficients
        raise FmcInputError(
            f"--misregister on {voxels / 1e6:.0f} M voxels needs about {need:.0f} GiB; "
            f"use at most {MAX_MISREGISTER_VOXELS / 1e6:.0f} M voxels (e.g. --shape 64,1024,1024)"
        )
    _prepare(out, overwrite)
    truth: dict[str, Any] = {}
    for i in track(range(start_index, start_index + n), "simulate light-sheet", total=n):
        spec_cfg = LightSheetConfig.randomized(np.random.default_rng([seed, i, 11]), cfg.shape) if randomize else cfg
        views = simulate_lightsheet(spec_cfg, seed=seed * 100_003 + i, channels=channels, truth=False)
        for ch, v in views.items():
            meta = ImageMeta(
                axes="ZYX", spacing=dict(zip("ZYX", spec_cfg.spacing)), unit="µm", channel=ch, study=SYNTHETIC_STUDY
            )
            angle = v["angle"]
            if misregister:
                rng = np.random.default_rng([seed, i, CHANNELS.index(ch), 7])
                angle, info, disp = _misregister(angle, rng, spec_cfg.spacing)
                truth[f"image_{i}_{ch}"] = info
                imwrite(
                    out / "truth" / f"image_{i}_{ch}_displacement.ome.tif",
                    disp,
                    meta.replace(axes="CZYX", extra={"components": "ZYX", "convention": "warped[p]=aligned[p+d(p)]"}),
                )
            imwrite(out / f"image_{i}_{ch}_angle.tif", angle, meta, flavour=flavour)
            imwrite(out / f"image_{i}_{ch}_fused.tif", v["fused"], meta, flavour=flavour)
    if truth:
        write_text_atomic(out / "truth" / "misregistration.json", json.dumps(truth, indent=2) + "\n")
    _record(out, "lightsheet", cfg, seed=seed, n=n, channels=list(channels), misregister=misregister,
            randomize=randomize)  # fmt: skip
    return out


def simulate_beads_dataset(
    out: str | Path,
    *,
    n: int = 2,
    cfg: BeadsConfig | None = None,
    seed: int = 0,
    flavour: TiffFlavour = "imagej",
    overwrite: bool = False,
) -> Path:
    """Write ``n`` bead fields as ``confocal/bead_{i}.tif`` / ``sted/bead_{i}.tif`` and their positions."""
    out = Path(out)
    cfg = cfg or BeadsConfig()
    _prepare(out, overwrite)
    ndim = len(cfg.shape)
    axes = "YX" if ndim == 2 else "ZYX"
    spacing = dict(zip("ZYX"[-ndim:], [s / 1000.0 for s in (cfg.z_step_nm, cfg.pixel_nm, cfg.pixel_nm)[-ndim:]]))
    for i in track(range(n), "simulate beads", total=n):
        b = simulate_beads(cfg, seed=seed * 100_003 + i)
        for name, folder, fwhm in (("wide", "confocal", cfg.fwhm_wide_nm), ("narrow", "sted", cfg.fwhm_narrow_nm)):
            meta = ImageMeta(
                axes=axes,
                spacing=spacing,
                unit="µm",
                channel="beads",
                extra={
                    "modality": folder,
                    "psf_fwhm_nm": fwhm,
                    "expected_fwhm_nm": round(cfg.effective_fwhm_nm(fwhm), 2),
                },
            )
            imwrite(out / folder / f"bead_{i}.tif", b[name], meta, flavour=flavour)
        cols = [f"{a.lower()}_px" for a in axes] + [f"{a.lower()}_um" for a in axes] + ["brightness"]
        pos = b["positions"]
        um = pos[:, :ndim] * np.array([spacing[a] for a in axes])
        rows = [",".join(cols)] + [",".join(f"{v:.5f}" for v in (*p[:ndim], *u, p[ndim])) for p, u in zip(pos, um)]
        write_text_atomic(out / "truth" / f"bead_{i}_positions.csv", "\n".join(rows) + "\n")
    write_manifest(out, kind="beads", low="confocal/*.tif", high="sted/*.tif", channel="beads")
    _record(out, "beads", cfg, seed=seed, n=n)
    return out


def simulate_filaments_dataset(
    out: str | Path,
    *,
    n: int = 2,
    cfg: FilamentsConfig | None = None,
    seed: int = 0,
    flavour: TiffFlavour = "imagej",
    overwrite: bool = False,
) -> Path:
    """Write ``n`` filament fields as ``low_na/filament_{i}.tif`` / ``high_na/filament_{i}.tif``."""
    out = Path(out)
    cfg = cfg or FilamentsConfig()
    _prepare(out, overwrite)
    spacing = {"Y": cfg.pixel_nm / 1000.0, "X": cfg.pixel_nm / 1000.0}
    for i in track(range(n), "simulate filaments", total=n):
        f = simulate_filaments(cfg, seed=seed * 100_003 + i)
        for name, folder, na in (("low", "low_na", cfg.na_low), ("high", "high_na", cfg.na_high)):
            meta = ImageMeta(
                axes="YX", spacing=spacing, unit="µm", channel="filaments", extra={"modality": f"widefield NA {na}"}
            )
            imwrite(out / folder / f"filament_{i}.tif", f[name], meta, flavour=flavour)
    write_manifest(out, kind="filaments", low="low_na/*.tif", high="high_na/*.tif", channel="filaments")
    _record(out, "filaments", cfg, seed=seed, n=n)
    return out


def simulate_surface_dataset(
    out: str | Path,
    *,
    n: int = 2,
    cfg: SurfaceConfig | None = None,
    seed: int = 0,
    flavour: TiffFlavour = "imagej",
    overwrite: bool = False,
) -> Path:
    """Write ``n`` curved epithelia as ``volume/surface_{i}.tif`` (ZYX input) / ``projection/surface_{i}.tif``
    (YX target: the high-SNR surface image) and ``truth/surface_{i}_height.tif`` (the surface's Z, um)."""
    out = Path(out)
    cfg = cfg or SurfaceConfig()
    _prepare(out, overwrite)
    sp = dict(zip("ZYX", cfg.spacing))
    for i in track(range(n), "simulate surfaces", total=n):
        s = simulate_surface(cfg, seed=seed * 100_003 + i)
        meta = ImageMeta(axes="ZYX", spacing=sp, unit="µm", channel="junctions")
        imwrite(out / "volume" / f"surface_{i}.tif", s["volume"], meta, flavour=flavour)
        flat = meta.replace(axes="YX", spacing={"Y": sp["Y"], "X": sp["X"]})
        imwrite(out / "projection" / f"surface_{i}.tif", s["projection"], flat, flavour=flavour)
        imwrite(out / "truth" / f"surface_{i}_height.tif", s["height"], flat, flavour=flavour)
    write_manifest(out, kind="surface", low="volume/*.tif", high="projection/*.tif", channel="junctions")
    _record(out, "surface", cfg, seed=seed, n=n)
    return out


def _record(out: Path, kind: str, cfg: Any, **info: Any) -> None:
    doc = {"kind": kind, **info, "config": dataclasses.asdict(cfg)}
    write_text_atomic(out / "simulation.json", json.dumps(doc, indent=2) + "\n")


def simulate(out: str | Path, kind: str = "lightsheet", *, overwrite: bool = False, **kwargs: Any) -> list[Path]:
    """Write one kind of dataset into ``out``, or every kind into ``out/<kind>`` with ``kind="all"``."""
    out = Path(out)
    writers = {
        "lightsheet": simulate_lightsheet_dataset,
        "beads": simulate_beads_dataset,
        "filaments": simulate_filaments_dataset,
        "surface": simulate_surface_dataset,
    }
    if kind not in (*KINDS, "all"):
        raise FmcInputError(f"unknown dataset kind {kind!r}: use one of {', '.join(KINDS)} or all")
    if kind != "all":
        return [writers[kind](out, overwrite=overwrite, **kwargs)]
    _prepare(out, overwrite)
    common = {k: v for k, v in kwargs.items() if k in ("n", "seed", "flavour")}
    ls_only = {k: v for k, v in kwargs.items() if k not in common}
    return [
        simulate_lightsheet_dataset(out / "lightsheet", overwrite=overwrite, **common, **ls_only),
        simulate_beads_dataset(out / "beads", overwrite=overwrite, **common),
        simulate_filaments_dataset(out / "filaments", overwrite=overwrite, **common),
        simulate_surface_dataset(out / "surface", overwrite=overwrite, **common),
    ]
