"""A light-sheet specimen (organoid / early embryo) seen by one view and by the fused multiview.

Physics, in the order it happens:

1. **Specimen.** An ellipsoidal ball of cells: seeds on a jittered lattice, cells as their Voronoi
   regions (nearest seed, in micrometres). The *nucleus* channel holds a textured ellipsoidal nucleus
   per cell; the *membrane* channel the cell boundaries and the specimen surface. Both channels share
   the geometry, as two stains of one sample do. Rendered on a grid that is fine along Z (about the
   lateral voxel size), then sampled at the axial step.
2. **Single view** (``angle``): detection from the top (Z=0). With the depth below the specimen
   surface the signal is attenuated (scattering/absorption, ``attenuation_um``), the PSF widens
   laterally and axially (``blur_*``), and scattered light adds a diffuse haze. Axial resolution is
   poor from the start (light-sheet thickness). Few photons, Poisson + read noise, camera offset.
3. **Fused view** (``fused``): the multiview fusion is nearly isotropic and the same through the
   whole depth, with more photons and no depth-dependent loss.

Every step is local, so large volumes (the challenge's 309x1920x1920) are rendered in lateral tiles
with a halo wider than the widest blur: memory follows the tile, and the result does not depend on
the tiling (the noise-free images are identical, the noise is drawn per tile).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy.special import expit

from fmc_ij.progress import track
from fmc_ij.synthetic.optics import broad_blur, camera, depth_varying_blur, gaussian_blur

CHANNELS = ("nucleus", "membrane")


@dataclasses.dataclass
class LightSheetConfig:
    """Parameters of :func:`simulate_lightsheet`. Lengths in micrometres.

    The defaults run in seconds on 2 CPU cores; the challenge's sizes (e.g. 309x1920x1920 at
    1.01/0.388/0.388 um) are reachable through ``shape`` and ``spacing``.
    """

    shape: tuple[int, int, int] = (64, 256, 256)
    spacing: tuple[float, float, float] = (1.0, 0.4, 0.4)
    cell_diameter: float = 9.0
    nucleus_fraction: float = 0.7  # nucleus radius / cell radius
    specimen_fill: tuple[float, float, float] = (0.8, 0.85, 0.85)  # ball semi-axes / half the field
    # Single view
    attenuation_um: float = 45.0
    blur_lateral_um: tuple[float, float] = (0.25, 1.6)  # PSF sigma at the surface and at depth_max_um
    blur_axial_um: tuple[float, float] = (1.1, 3.5)
    depth_max_um: float = 50.0
    haze: float = 0.25
    # Photon budgets calibrated so that, over whole volumes, SSIM(single, fused) after 2/99.8 normalisation
    # is ~0.74 (nucleus) / ~0.64 (membrane): near the challenge's identity baseline of 0.78 / 0.70 (Wodzinski
    # & Mueller 2025, internal validation), so the synthetic task is about as hard as the real one.
    photons_single: float = 1500.0
    # Fused view
    fused_sigma_um: tuple[float, float, float] = (0.45, 0.3, 0.3)  # ZYX
    haze_sigma_um: float = 6.0
    photons_fused: float = 4000.0
    background_photons: float = 2.0
    read_noise: float = 2.0
    offset: float = 100.0
    #: Light-sheet stripes of the single view: relative depth of the shadows cast along X (0: none).
    stripes: float = 0.0
    #: Largest rendering region in fine-grid voxels (memory: about 50 bytes each).
    max_region_voxels: int = 60_000_000

    @classmethod
    def randomized(cls, rng: np.random.Generator, shape: tuple[int, int, int] = (48, 160, 160)) -> LightSheetConfig:
        """A specimen and microscope drawn from ranges that span the Fuse My Cells studies: voxel sizes 1-3 um
        axially and 0.2-0.45 um laterally, cells 6-14 um, shallow to deep attenuation, thin to thick PSFs, dim to
        bright, with or without stripes (domain randomisation: one model for many studies)."""
        u = rng.uniform
        lat = float(u(0.2, 0.45))
        return cls(
            shape=shape,
            spacing=(float(u(1.0, 3.0)), lat, lat),
            cell_diameter=float(u(6.0, 14.0)),
            nucleus_fraction=float(u(0.5, 0.8)),
            attenuation_um=float(u(20.0, 120.0)),
            blur_lateral_um=(float(u(0.15, 0.45)), float(u(0.8, 2.4))),
            blur_axial_um=(float(u(0.8, 2.0)), float(u(2.0, 5.0))),
            depth_max_um=float(u(30.0, 80.0)),
            haze=float(u(0.05, 0.5)),
            photons_single=float(np.exp(u(np.log(300.0), np.log(6000.0)))),
            photons_fused=float(np.exp(u(np.log(2000.0), np.log(10000.0)))),
            read_noise=float(u(1.0, 4.0)),
            offset=float(round(u(60.0, 400.0))),
            stripes=float(u(0.0, 0.3)) if u() < 0.5 else 0.0,
        )

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        if len(self.shape) != 3 or min(self.shape) < 8:
            raise ValueError(f"shape must be 3 sizes of at least 8 voxels (ZYX), got {self.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be 3 positive voxel sizes (ZYX, um), got {self.spacing}")


@dataclasses.dataclass
class Geometry:
    """The specimen, globally: ellipsoid, cell seeds and per-cell parameters (cheap; no voxels)."""

    fine_spacing: tuple[float, float, float]
    z_factor: int
    fine_shape: tuple[int, int, int]
    center: np.ndarray
    radii: np.ndarray
    seeds: np.ndarray  # (n, 3) um, row i is cell label i + 1
    level_nuc: np.ndarray  # (n + 1,) per label; label 0 is outside
    level_mem: np.ndarray
    nuc_radii: np.ndarray  # (n + 1, 3) um
    waves: np.ndarray  # (n + 1, 3, 4): three plane waves per cell, (kz, ky, kx, phase)


def make_geometry(cfg: LightSheetConfig, rng: np.random.Generator) -> Geometry:
    sz, sy, sx = cfg.spacing
    k = max(1, round(sz / min(sy, sx)))
    fine_spacing = (sz / k, sy, sx)
    fshape = (cfg.shape[0] * k, cfg.shape[1], cfg.shape[2])
    extent = np.array(fshape) * np.array(fine_spacing)
    center = extent / 2.0 + rng.uniform(-0.03, 0.03, 3) * extent
    radii = extent / 2.0 * np.array(cfg.specimen_fill) * rng.uniform(0.92, 1.0, 3)
    # Keep the top of the ball inside the field: the single view needs a surface to look through.
    radii[0] = min(radii[0], center[0] - 2 * fine_spacing[0], extent[0] - center[0] - 2 * fine_spacing[0])
    # Cells: a jittered cubic lattice inside the ellipsoid (packed like tissue; O(n) for any size).
    d = cfg.cell_diameter
    axes = [np.arange(c - r, c + r + d, d) for c, r in zip(center, radii)]
    lattice = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    seeds = lattice + rng.uniform(-0.22, 0.22, lattice.shape) * d
    seeds = seeds[np.sum(((seeds - center) / (radii * 0.95)) ** 2, axis=1) <= 1.0]
    n = len(seeds) + 1
    nfrac = cfg.nucleus_fraction
    direction = rng.standard_normal((n, 3, 3))
    direction /= np.linalg.norm(direction, axis=2, keepdims=True)
    wavelength = rng.uniform(1.2, 2.5, (n, 3, 1))
    waves = np.concatenate([2 * np.pi * direction / wavelength, rng.uniform(0, 2 * np.pi, (n, 3, 1))], axis=2)
    return Geometry(
        fine_spacing=fine_spacing,
        z_factor=k,
        fine_shape=fshape,
        center=center,
        radii=radii,
        seeds=seeds,
        level_nuc=rng.uniform(0.55, 1.0, n).astype(np.float32),
        level_mem=rng.uniform(0.6, 1.0, n).astype(np.float32),
        nuc_radii=(d / 2.0 * nfrac * rng.uniform(0.85, 1.15, (n, 3))).astype(np.float32),
        waves=waves.astype(np.float32),
    )


@dataclasses.dataclass
class Specimen:
    """Ground truth of one region on the fine grid: densities, cell labels, depth below the surface."""

    nucleus: np.ndarray
    membrane: np.ndarray
    labels: np.ndarray
    depth_um: np.ndarray
    #: The lateral rows of the region (stripes are a function of the absolute row).
    ys: slice = dataclasses.field(default_factory=lambda: slice(0, 0))


def _cell_labels(geo: Geometry, ys: slice, xs: slice, margin: int) -> np.ndarray:
    """Nearest-seed labels of a region: an exact EDT over the region grown by ``margin`` voxels."""
    fs, fz = geo.fine_spacing, geo.fine_shape[0]
    y0, y1 = max(ys.start - margin, 0), min(ys.stop + margin, geo.fine_shape[1])
    x0, x1 = max(xs.start - margin, 0), min(xs.stop + margin, geo.fine_shape[2])
    shape = (fz, y1 - y0, x1 - x0)
    idx = np.round(geo.seeds / fs).astype(int)
    idx[:, 0] = np.clip(idx[:, 0], 0, fz - 1)
    sel = (idx[:, 1] >= y0) & (idx[:, 1] < y1) & (idx[:, 2] >= x0) & (idx[:, 2] < x1)
    if not sel.any():
        return np.zeros((fz, ys.stop - ys.start, xs.stop - xs.start), np.int32)
    local = idx[sel] - [0, y0, x0]
    seed_img = np.ones(shape, bool)
    seed_img[tuple(local.T)] = False
    label_of = np.zeros(shape, np.int32)
    label_of[tuple(local.T)] = np.flatnonzero(sel) + 1
    nearest = ndimage.distance_transform_edt(seed_img, sampling=fs, return_distances=False, return_indices=True)
    labels = label_of[tuple(nearest)]
    return labels[:, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]


def _within(outer_y: slice, outer_x: slice, ys: slice, xs: slice) -> tuple[slice, slice, slice]:
    """Index of the region ``ys`` x ``xs`` inside an array covering ``outer_y`` x ``outer_x``."""
    return (
        slice(None),
        slice(ys.start - outer_y.start, ys.stop - outer_y.start),
        slice(xs.start - outer_x.start, xs.stop - outer_x.start),
    )


def make_specimen(geo: Geometry, cfg: LightSheetConfig, ys: slice, xs: slice) -> Specimen:
    """Render the ground truth (both channels) of the lateral region ``ys`` x ``xs`` on the fine grid."""
    fs = geo.fine_spacing
    # One extra voxel around the region so membrane boundaries at its edge see their neighbours.
    ye = slice(max(ys.start - 1, 0), min(ys.stop + 1, geo.fine_shape[1]))
    xe = slice(max(xs.start - 1, 0), min(xs.stop + 1, geo.fine_shape[2]))
    margin = int(np.ceil(1.5 * cfg.cell_diameter / min(fs[1:])))
    labels_e = _cell_labels(geo, ye, xe, margin)
    zz = (np.arange(geo.fine_shape[0], dtype=np.float32) * fs[0])[:, None, None]
    yy = (np.arange(ye.start, ye.stop, dtype=np.float32) * fs[1])[None, :, None]
    xx = (np.arange(xe.start, xe.stop, dtype=np.float32) * fs[2])[None, None, :]
    c, r = geo.center.astype(np.float32), geo.radii.astype(np.float32)
    lateral = ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2
    inside = ((zz - c[0]) / r[0]) ** 2 + lateral <= 1.0
    labels_e[~inside] = 0

    # Membranes: voxels whose neighbour belongs to another cell (or outside), with per-cell brightness.
    boundary = np.zeros(labels_e.shape, bool)
    for ax in range(3):
        diff = np.diff(labels_e, axis=ax) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        boundary[tuple(lo)] |= diff
        boundary[tuple(hi)] |= diff
    inner = (
        slice(None),
        slice(ys.start - ye.start, ys.stop - ye.start),
        slice(xs.start - xe.start, xs.stop - xe.start),
    )
    labels, boundary = labels_e[inner], boundary[inner]
    boundary &= ndimage.binary_dilation(inside[inner], iterations=1)
    yy, xx = yy[:, inner[1]], xx[:, :, inner[2]]

    # Position relative to the cell's seed drives the nucleus shape and both textures.
    seed = np.vstack([np.zeros((1, 3)), geo.seeds]).astype(np.float32)
    rel = [coord - seed[labels, ax] for ax, coord in enumerate((zz, yy, xx))]
    q = sum((rel[ax] / geo.nuc_radii[labels, ax]) ** 2 for ax in range(3))
    edge_um = 0.35
    nucleus = expit((1.0 - np.sqrt(q)) * (cfg.cell_diameter * cfg.nucleus_fraction / 2.0) / edge_um)
    del q
    w = geo.waves[labels]  # (..., 3 waves, 4)
    phase = sum(w[..., ax] * rel[ax][..., None] for ax in range(3)) + w[..., 3]
    texture = 0.65 + 0.35 * (0.5 + 0.5 * np.cos(phase)).mean(axis=-1)
    del w, phase, rel
    nucleus = (nucleus * texture * geo.level_nuc[labels]).astype(np.float32)
    nucleus[labels == 0] = 0.0
    membrane = boundary * geo.level_mem[labels] * (0.8 + 0.2 * texture)
    membrane = gaussian_blur(membrane.astype(np.float32), (0.15, 0.15, 0.15), fs)

    # Depth below the specimen surface along the detection axis (Z, objective on top): analytic.
    ztop = c[0] - r[0] * np.sqrt(np.clip(1.0 - lateral[:, inner[1], inner[2]], 0.0, None))
    depth = np.where(lateral[:, inner[1], inner[2]] <= 1.0, np.clip(zz - ztop, 0.0, None), 0.0).astype(np.float32)
    return Specimen(nucleus, membrane.astype(np.float32), labels, depth, ys)


def _sample_z(vol: np.ndarray, k: int) -> np.ndarray:
    """Point-sample every k-th fine slice, offset to the middle of each axial step."""
    return vol[k // 2 :: k] if k > 1 else vol


def _stripes(ny: int, depth: float, period_px: float, rng: np.random.Generator) -> np.ndarray:
    noise = ndimage.gaussian_filter1d(rng.standard_normal(ny), period_px / 2.0)
    noise /= np.abs(noise).max() + 1e-12
    return np.clip(1.0 - depth * np.abs(noise), 0.0, 1.0).astype(np.float32).reshape(1, ny, 1)


def render_views(
    density: np.ndarray, spec: Specimen, geo: Geometry, cfg: LightSheetConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Expected photons (noise-free) of the single view and of the fused view, on the output Z grid."""
    fs = geo.fine_spacing
    att = np.exp(-spec.depth_um / cfg.attenuation_um).astype(np.float32)
    if cfg.stripes > 0:  # shadows cast along the illumination axis (X): constant along X, random along Y
        profile = _stripes(geo.fine_shape[1], cfg.stripes, 8.0 / fs[1], np.random.default_rng(int(geo.seeds.size)))
        att = att * profile[:, spec.ys]
    single = depth_varying_blur(
        density * att,
        spec.depth_um / cfg.depth_max_um,
        (cfg.blur_axial_um[0], cfg.blur_lateral_um[0], cfg.blur_lateral_um[0]),
        (cfg.blur_axial_um[1], cfg.blur_lateral_um[1], cfg.blur_lateral_um[1]),
        fs,
    )
    # Scattered light: a broad halo that grows as the ballistic signal is lost.
    single += cfg.haze * broad_blur(density * (1.0 - att), (cfg.haze_sigma_um,) * 3, fs)
    fused = gaussian_blur(density, cfg.fused_sigma_um, fs)
    single, fused = _sample_z(single, geo.z_factor), _sample_z(fused, geo.z_factor)
    # A unit fluorophore density gives photons_* photons: the scale does not depend on the region.
    return single * cfg.photons_single + cfg.background_photons, fused * cfg.photons_fused + cfg.background_photons


def _halo(cfg: LightSheetConfig, geo: Geometry) -> int:
    """Lateral halo (fine voxels, a multiple of 4) wider than the widest blur kernel."""
    widest = max(cfg.haze_sigma_um, cfg.blur_lateral_um[1], max(cfg.fused_sigma_um[1:]))
    h = int(np.ceil(3.6 * widest / min(geo.fine_spacing[1:])))
    return h + (-h) % 4


def tiles(cfg: LightSheetConfig, geo: Geometry) -> list[tuple[slice, slice]]:
    """Lateral tiles (multiples of 4 voxels) whose halo-grown regions fit ``max_region_voxels``."""
    fz, ny, nx = geo.fine_shape
    h = _halo(cfg, geo)
    if fz * ny * nx <= cfg.max_region_voxels:
        return [(slice(0, ny), slice(0, nx))]
    side = int(np.sqrt(cfg.max_region_voxels / fz)) - 2 * h
    side = max(32, side - side % 4)
    return [
        (slice(y, min(y + side, ny)), slice(x, min(x + side, nx)))
        for y in range(0, ny, side)
        for x in range(0, nx, side)
    ]


def simulate_lightsheet(
    cfg: LightSheetConfig | None = None,
    *,
    seed: int = 0,
    channels: tuple[str, ...] = CHANNELS,
    noise: bool = True,
    truth: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """Simulate one specimen: ``{channel: {"angle": uint16, "fused": uint16, "truth": float32}}``, all ZYX.

    ``truth`` is the noise-free fluorophore density sampled on the output grid (no PSF), the
    reference against which both views can be scored.

    Parameters
    ----------
    cfg : LightSheetConfig, optional
        Geometry and optics; the defaults give a 64x256x256 volume at 1.0/0.4/0.4 um.
    seed : int
        Everything is reproducible from the seed.
    channels : tuple of str
        Any of ``"nucleus"`` and ``"membrane"``.
    noise : bool
        If false, ``angle`` and ``fused`` are the expected photon counts (float32), without camera noise.
    truth : bool
        If false, no ``truth`` is kept (saves 4 bytes per voxel and channel on large volumes).
    """
    cfg = cfg or LightSheetConfig()
    unknown = set(channels) - set(CHANNELS)
    if unknown:
        raise ValueError(f"unknown channel(s) {sorted(unknown)}: use {CHANNELS}")
    geo = make_geometry(cfg, np.random.default_rng(seed))
    dtype = np.uint16 if noise else np.float32
    kinds = ("angle", "fused", "truth") if truth else ("angle", "fused")
    out = {ch: {k: np.zeros(cfg.shape, np.float32 if k == "truth" else dtype) for k in kinds} for ch in channels}
    h = _halo(cfg, geo)
    parts = tiles(cfg, geo)
    for t, (ys, xs) in enumerate(track(parts, "render tiles", total=len(parts)) if len(parts) > 1 else parts):
        yr = slice(max(ys.start - h, 0), min(ys.stop + h, geo.fine_shape[1]))
        xr = slice(max(xs.start - h, 0), min(xs.stop + h, geo.fine_shape[2]))
        spec = make_specimen(geo, cfg, yr, xr)
        crop = (
            slice(None),
            slice(ys.start - yr.start, ys.stop - yr.start),
            slice(xs.start - xr.start, xs.stop - xr.start),
        )
        for ch in channels:
            density = spec.nucleus if ch == "nucleus" else spec.membrane
            single, fused = render_views(density, spec, geo, cfg)
            single, fused = single[crop], fused[crop]
            if noise:
                rng = np.random.default_rng([seed, CHANNELS.index(ch), t])
                kw = {"read_noise": cfg.read_noise, "offset": cfg.offset}
                single, fused = camera(single, rng, **kw), camera(fused, rng, **kw)
            out[ch]["angle"][:, ys, xs] = single
            out[ch]["fused"][:, ys, xs] = fused
            if truth:
                out[ch]["truth"][:, ys, xs] = _sample_z(density, geo.z_factor)[crop]
    return out
