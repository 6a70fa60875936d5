"""Single-view light-sheet physics applied to any good volume: training pairs from a user's own data, and the
randomised physics that lets one model cover many studies.

A fused multiview volume or a confocal stack is taken as the expensive acquisition. Its single view is rendered
the way :mod:`fmc_ij.synthetic.lightsheet` renders the built-in organoid: detection from one side, signal
attenuated with the depth below the specimen surface, a PSF that widens with depth, a haze of scattered light,
light-sheet stripes, few photons, Poisson and read noise and a camera offset. The specimen surface is found from
the volume itself (the first foreground voxel along Z from the detection side).

:class:`SingleViewPhysics` holds one physics; :meth:`SingleViewPhysics.random` draws one from ranges wide enough to
span the Fuse My Cells studies (voxel sizes 0.2-0.4 um laterally, 1-3 um axially; shallow to deep specimens;
dim to bright), so a model trained on many draws sees many studies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from fmc_ij.errors import FmcInputError
from fmc_ij.synthetic.optics import broad_blur, camera, depth_varying_blur

#: Files :func:`simulate_from` reads from a folder.
VOLUME_SUFFIXES = (".tif", ".tiff", ".h5", ".hdf5")
#: Ranges :meth:`SingleViewPhysics.random` draws from (uniform, or log-uniform for the photon budget).
RANGES: dict[str, tuple[float, float]] = {
    "attenuation_um": (20.0, 120.0),
    "blur_lateral_start": (0.15, 0.45),
    "blur_lateral_end": (0.8, 2.4),
    "blur_axial_start": (0.8, 2.0),
    "blur_axial_end": (2.0, 5.0),
    "depth_max_um": (30.0, 80.0),
    "haze": (0.05, 0.5),
    "haze_sigma_um": (3.0, 10.0),
    "photons": (300.0, 6000.0),
    "read_noise": (1.0, 4.0),
    "offset": (60.0, 400.0),
    "stripes": (0.0, 0.3),
    "stripe_period_um": (4.0, 16.0),
}


@dataclasses.dataclass
class SingleViewPhysics:
    """One single-view light-sheet acquisition (lengths in micrometres; PSF widths are Gaussian sigmas)."""

    attenuation_um: float = 45.0
    blur_lateral_um: tuple[float, float] = (0.25, 1.6)  # at the surface, at depth_max_um
    blur_axial_um: tuple[float, float] = (1.1, 3.5)
    depth_max_um: float = 50.0
    haze: float = 0.25
    haze_sigma_um: float = 6.0
    photons: float = 1500.0
    background_photons: float = 2.0
    read_noise: float = 2.0
    offset: float = 100.0
    #: Relative amplitude of light-sheet stripes (shadows cast along the illumination axis, X).
    stripes: float = 0.0
    stripe_period_um: float = 8.0

    @classmethod
    def random(
        cls, rng: np.random.Generator, ranges: dict[str, tuple[float, float]] | None = None
    ) -> SingleViewPhysics:
        """A physics drawn from ``ranges`` (default :data:`RANGES`)."""
        r = {**RANGES, **(ranges or {})}

        def u(key: str) -> float:
            return float(rng.uniform(*r[key]))

        lo, hi = r["photons"]
        return cls(
            attenuation_um=u("attenuation_um"),
            blur_lateral_um=(u("blur_lateral_start"), u("blur_lateral_end")),
            blur_axial_um=(u("blur_axial_start"), u("blur_axial_end")),
            depth_max_um=u("depth_max_um"),
            haze=u("haze"),
            haze_sigma_um=u("haze_sigma_um"),
            photons=float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
            read_noise=u("read_noise"),
            offset=float(round(u("offset"))),
            stripes=u("stripes"),
            stripe_period_um=u("stripe_period_um"),
        )


def density(volume: np.ndarray) -> np.ndarray:
    """A good image as fluorophore density: background (2nd percentile) removed, 99.8th percentile at 1."""
    v = np.asarray(volume, np.float32)
    lo, hi = np.percentile(v, (2.0, 99.8))
    if not hi > lo:
        raise FmcInputError("the volume is flat (no structure between its 2nd and 99.8th percentiles)")
    return np.clip((v - lo) / (hi - lo), 0.0, None)


def depth_below_surface(dens: np.ndarray, spacing: Sequence[float], smooth_um: float = 2.0) -> np.ndarray:
    """Depth (um) of every voxel below the specimen surface seen from Z = 0: the first voxel of each (y, x)
    column whose smoothed density passes Otsu's level; columns without specimen are at depth 0."""
    from skimage.filters import threshold_otsu

    sig = [smooth_um / s for s in spacing]
    sm = ndimage.gaussian_filter(dens, sig)
    if float(sm.max()) <= float(sm.min()):
        return np.zeros(dens.shape, np.float32)
    inside = sm > threshold_otsu(sm)
    any_fg = inside.any(axis=0)
    top = np.where(any_fg, inside.argmax(axis=0), dens.shape[0])
    z = np.arange(dens.shape[0], dtype=np.float32)[:, None, None]
    return (np.clip(z - top[None], 0.0, None) * float(spacing[0])).astype(np.float32)


def stripes(shape: Sequence[int], spacing: Sequence[float], physics: SingleViewPhysics,
            rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Multiplicative light-sheet stripes: shadows constant along X (the illumination axis), random along Y."""
    ny = shape[-2]
    period_px = max(2.0, physics.stripe_period_um / float(spacing[-2]))
    noise = ndimage.gaussian_filter1d(rng.standard_normal(ny), period_px / 2.0)
    noise /= np.abs(noise).max() + 1e-12
    profile = np.clip(1.0 - physics.stripes * np.abs(noise), 0.0, 1.0).astype(np.float32)
    return profile.reshape((1,) * (len(shape) - 2) + (ny, 1))


def single_view(
    volume: np.ndarray,
    spacing: Sequence[float],
    physics: SingleViewPhysics | None = None,
    *,
    rng: np.random.Generator | None = None,
    noise: bool = True,
) -> np.ndarray:
    """The single light-sheet view (uint16 camera counts, or expected photons when ``noise`` is off) of the sample
    whose good ZYX image is ``volume`` (voxel size ``spacing`` in um)."""
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise FmcInputError(f"a single view is rendered from a ZYX volume; got {vol.ndim} dimensions")
    p = physics or SingleViewPhysics()
    rng = rng or np.random.default_rng(0)
    sp = [float(s) for s in spacing]
    d = density(vol)
    depth = depth_below_surface(d, sp)
    att = np.exp(-depth / p.attenuation_um).astype(np.float32)
    if p.stripes > 0:
        att = att * stripes(d.shape, sp, p, rng)
    out = depth_varying_blur(d * att, depth / p.depth_max_um,
                             (p.blur_axial_um[0], p.blur_lateral_um[0], p.blur_lateral_um[0]),
                             (p.blur_axial_um[1], p.blur_lateral_um[1], p.blur_lateral_um[1]), sp)  # fmt: skip
    out += p.haze * broad_blur(d * (1.0 - att), (p.haze_sigma_um,) * 3, sp)
    photons = out * p.photons + p.background_photons
    if not noise:
        return photons.astype(np.float32)
    return camera(photons, rng, read_noise=p.read_noise, offset=p.offset)


def simulate_from(
    src: str | Path,
    out: str | Path,
    *,
    n: int = 1,
    seed: int = 0,
    channel: str | None = None,
    spacing: Sequence[float] | None = None,
    ranges: dict[str, tuple[float, float]] | None = None,
    start_index: int = 0,
    overwrite: bool = False,
) -> list[Path]:
    """Training pairs from good volumes: each ZYX volume in ``src`` (a file or a folder) becomes ``n`` pairs
    ``image_{N}_{channel}_{angle,fused}.tif``, the single view rendered with a physics drawn from ``ranges``
    (:meth:`SingleViewPhysics.random`), the fused view the volume itself (as uint16, its voxel size kept).

    Parameters
    ----------
    channel : str, optional
        ``nucleus`` or ``membrane`` for every volume (default: from each file's metadata or name, else
        ``nucleus``); it decides which model a pair trains.
    spacing : (dz, dy, dx), optional
        Voxel size (um) for volumes without a calibration (required for them: the physics is in micrometres).
    """
    from fmc_ij.io import imread, imwrite
    from fmc_ij.synthetic.dataset import _prepare

    src, out = Path(src), Path(out)
    if not src.exists():
        raise FmcInputError(f"{src}: no such file or folder")
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.suffix.lower() in VOLUME_SUFFIXES)
    if not files:
        raise FmcInputError(f"{src}: no TIFF or HDF5 volumes to render single views from")
    if out.resolve() == (src if src.is_dir() else src.parent).resolve():
        raise FmcInputError(f"--out {out} is the input folder; inputs are never modified, choose another --out")
    _prepare(out, overwrite)
    written: list[Path] = []
    index = start_index
    for f in files:
        img = imread(f)
        if img.axes != "ZYX":
            raise FmcInputError(f"{f.name}: single views are rendered from ZYX volumes, got axes {img.axes}")
        calibrated = img.meta.unit not in ("pixel", "", None)
        if not calibrated and spacing is None:
            raise FmcInputError(f"{f.name}: no voxel size in its metadata; give one (--spacing Z,Y,X in um)")
        sp = list(spacing) if spacing is not None and not calibrated else img.meta.voxel_size("ZYX")
        ch = channel or img.meta.channel or ("membrane" if "membrane" in f.name.lower() else "nucleus")
        fused = _as_uint16(img.data)
        meta = img.meta.replace(spacing=dict(zip("ZYX", sp)), unit="µm", channel=ch)
        for k in range(n):
            rng = np.random.default_rng([seed, index, k])
            view = single_view(fused, sp, SingleViewPhysics.random(rng, ranges), rng=rng)
            for kind, data in (("angle", view), ("fused", fused)):
                written.append(imwrite(out / f"image_{index}_{ch}_{kind}.tif", data, meta))
            index += 1
    return written


def _as_uint16(volume: np.ndarray) -> np.ndarray:
    """A good volume as uint16 counts (floats and 8-bit scaled so the 99.99th percentile sits near 30000)."""
    v = np.asarray(volume)
    if v.dtype == np.uint16:
        return v
    v = v.astype(np.float32)
    lo, hi = float(v.min()), float(np.percentile(v, 99.99))
    scale = 30000.0 / (hi - lo) if hi > lo else 1.0
    return np.clip((v - lo) * scale + 100.0, 0, 65535).astype(np.uint16)
