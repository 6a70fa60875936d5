"""A light-sheet specimen (organoid / early embryo) seen by one view and by the fused multiview.

Physics, in the order it happens:

1. **Specimen.** An ellipsoidal ball of cells: seeds packed with a minimum distance, cells as their
   Voronoi regions (nearest seed, in micrometres). The *nucleus* channel holds a textured ellipsoidal
   nucleus per cell; the *membrane* channel the cell boundaries and the specimen surface. Both
   channels share the geometry, as two stains of one sample do. Rendered on a grid that is fine
   along Z (about the lateral voxel size), then sampled at the axial step.
2. **Single view** (``angle``): detection from the top (Z=0). With the depth below the specimen
   surface the signal is attenuated (scattering/absorption, ``attenuation_um``), the PSF widens
   laterally and axially (``blur_*``), and scattered light adds a diffuse haze. Axial resolution is
   poor from the start (light-sheet thickness). Few photons, Poisson + read noise, camera offset.
3. **Fused view** (``fused``): the multiview fusion is nearly isotropic and the same through the
   whole depth, with more photons and no depth-dependent loss.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage
from scipy.special import expit

from fmc_ij.synthetic.optics import broad_blur, camera, depth_varying_blur, gaussian_blur, smooth_noise

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
    # is ~0.7 (nucleus) / ~0.6 (membrane): near the challenge's identity baseline of 0.78 / 0.70 (Wodzinski
    # & Mueller 2025, internal validation), so the synthetic task is about as hard as the real one.
    photons_single: float = 1000.0
    # Fused view
    fused_sigma_um: tuple[float, float, float] = (0.45, 0.3, 0.3)  # ZYX
    photons_fused: float = 3000.0
    background_photons: float = 2.0
    read_noise: float = 2.0
    offset: float = 100.0

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        if len(self.shape) != 3 or min(self.shape) < 8:
            raise ValueError(f"shape must be 3 sizes of at least 8 voxels (ZYX), got {self.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be 3 positive voxel sizes (ZYX, um), got {self.spacing}")


@dataclasses.dataclass
class Specimen:
    """Ground truth on the fine grid: fluorophore densities, cell labels and depth below the surface."""

    nucleus: np.ndarray
    membrane: np.ndarray
    labels: np.ndarray
    depth_um: np.ndarray
    fine_spacing: tuple[float, float, float]
    z_factor: int
    seeds_um: np.ndarray


def _pack_seeds(radii: np.ndarray, center: np.ndarray, dmin: float, rng: np.random.Generator) -> np.ndarray:
    """Seeds inside an ellipsoid, no two closer than ``dmin`` (greedy dart throwing)."""
    vol = 4.0 / 3.0 * math.pi * float(np.prod(radii))
    target = max(4, int(vol / (dmin**3) * 0.9))
    cand = rng.uniform(-1, 1, (target * 12, 3))
    cand = cand[np.sum(cand**2, axis=1) <= 1.0] * radii + center
    seeds = np.empty((0, 3))
    for p in cand:
        if seeds.shape[0] == 0 or np.min(np.sum((seeds - p) ** 2, axis=1)) >= dmin**2:
            seeds = np.vstack([seeds, p])
            if seeds.shape[0] >= target:
                break
    return seeds


def make_specimen(cfg: LightSheetConfig, rng: np.random.Generator) -> Specimen:
    """Render the ground-truth specimen (both channels) on a grid fine along Z."""
    sz, sy, sx = cfg.spacing
    k = max(1, round(sz / min(sy, sx)))
    fine_spacing = (sz / k, sy, sx)
    fshape = (cfg.shape[0] * k, cfg.shape[1], cfg.shape[2])
    extent = np.array(fshape) * np.array(fine_spacing)
    center = extent / 2.0 + rng.uniform(-0.03, 0.03, 3) * extent
    radii = extent / 2.0 * np.array(cfg.specimen_fill) * rng.uniform(0.92, 1.0, 3)
    # Keep the top of the ball inside the field: the single view needs a surface to look through.
    radii[0] = min(radii[0], center[0] - 2 * fine_spacing[0], extent[0] - center[0] - 2 * fine_spacing[0])
    seeds = _pack_seeds(radii * 0.95, center, cfg.cell_diameter, rng)

    zz, yy, xx = (np.arange(n, dtype=np.float32) * d for n, d in zip(fshape, fine_spacing))
    inside = (
        ((zz[:, None, None] - center[0]) / radii[0]) ** 2
        + ((yy[None, :, None] - center[1]) / radii[1]) ** 2
        + ((xx[None, None, :] - center[2]) / radii[2]) ** 2
    ) <= 1.0

    # Voronoi cells: nearest seed by an exact Euclidean distance transform in micrometres.
    seed_img = np.ones(fshape, bool)
    idx = np.clip(np.round(seeds / fine_spacing).astype(int), 0, np.array(fshape) - 1)
    seed_img[tuple(idx.T)] = False
    label_of = np.zeros(fshape, np.int32)
    label_of[tuple(idx.T)] = np.arange(1, len(seeds) + 1)
    nearest = ndimage.distance_transform_edt(
        seed_img, sampling=fine_spacing, return_distances=False, return_indices=True
    )
    labels = label_of[tuple(nearest)]
    labels[~inside] = 0
    del nearest

    n = len(seeds) + 1
    level_nuc = rng.uniform(0.55, 1.0, n).astype(np.float32)
    level_mem = rng.uniform(0.6, 1.0, n).astype(np.float32)
    nuc_r = cfg.cell_diameter / 2.0 * cfg.nucleus_fraction * rng.uniform(0.85, 1.15, (n, 3))
    seed_pos = np.vstack([np.zeros((1, 3)), seeds]).astype(np.float32)

    # Nuclei: soft-edged ellipsoids around each seed, clipped to their cell, with chromatin texture.
    q = np.zeros(fshape, np.float32)
    for ax, coord in enumerate((zz, yy, xx)):
        shape = [1, 1, 1]
        shape[ax] = -1
        c = coord.reshape(shape)
        q += ((c - seed_pos[labels, ax]) / nuc_r[labels, ax].astype(np.float32)) ** 2
    r = np.sqrt(q)
    del q
    edge_um = 0.35
    nucleus = expit((1.0 - r) * (cfg.cell_diameter * cfg.nucleus_fraction / 2.0) / edge_um)
    texture = 0.65 + 0.35 * smooth_noise(fshape, np.array([0.6, 0.6, 0.6]) / fine_spacing, rng)
    nucleus = (nucleus * texture * level_nuc[labels]).astype(np.float32)
    nucleus[labels == 0] = 0.0

    # Membranes: one-voxel boundaries between labels (the specimen surface included), slightly smoothed.
    boundary = np.zeros(fshape, bool)
    for ax in range(3):
        diff = np.diff(labels, axis=ax) != 0
        sl_a = [slice(None)] * 3
        sl_b = [slice(None)] * 3
        sl_a[ax] = slice(0, -1)
        sl_b[ax] = slice(1, None)
        boundary[tuple(sl_a)] |= diff
        boundary[tuple(sl_b)] |= diff
    dilated = ndimage.binary_dilation(inside, iterations=1)
    membrane = boundary & dilated
    mem_level = np.maximum(level_mem[labels], level_mem[np.roll(labels, 1, axis=2)])
    membrane = membrane.astype(np.float32) * mem_level * (0.75 + 0.25 * smooth_noise(fshape, 3.0, rng))
    membrane = gaussian_blur(membrane, (0.15, 0.15, 0.15), fine_spacing)
    membrane /= max(float(np.percentile(membrane[membrane > 0], 99.5)), 1e-6) if np.any(membrane > 0) else 1.0

    # Depth below the specimen surface along the detection axis (Z, objective on top).
    first = np.where(inside.any(axis=0), inside.argmax(axis=0), fshape[0]).astype(np.float32)
    depth = np.clip(zz[:, None, None] - first[None] * fine_spacing[0], 0.0, None).astype(np.float32)
    return Specimen(nucleus, membrane, labels, depth, fine_spacing, k, seeds)


def _sample_z(vol: np.ndarray, k: int) -> np.ndarray:
    """Point-sample every k-th fine slice, offset to the middle of each axial step."""
    return vol[k // 2 :: k] if k > 1 else vol


def render_views(
    density: np.ndarray, spec: Specimen, cfg: LightSheetConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Image one channel's fluorophore density as the single view and as the fused view (uint16)."""
    fs = spec.fine_spacing
    att = np.exp(-spec.depth_um / cfg.attenuation_um).astype(np.float32)
    t = spec.depth_um / cfg.depth_max_um
    emitted = density * att
    single = depth_varying_blur(
        emitted,
        t,
        (cfg.blur_axial_um[0], cfg.blur_lateral_um[0], cfg.blur_lateral_um[0]),
        (cfg.blur_axial_um[1], cfg.blur_lateral_um[1], cfg.blur_lateral_um[1]),
        fs,
    )
    # Scattered light: a broad halo that grows as the ballistic signal is lost.
    single += cfg.haze * broad_blur(density * (1.0 - att), (6.0, 6.0, 6.0), fs)
    fused = gaussian_blur(density, cfg.fused_sigma_um, fs)

    single, fused = _sample_z(single, spec.z_factor), _sample_z(fused, spec.z_factor)
    scale = float(np.percentile(fused, 99.9)) or 1.0
    single = single / scale * cfg.photons_single + cfg.background_photons
    fused = fused / scale * cfg.photons_fused + cfg.background_photons
    kw = {"read_noise": cfg.read_noise, "offset": cfg.offset}
    return camera(single, rng, **kw), camera(fused, rng, **kw)


def simulate_lightsheet(
    cfg: LightSheetConfig | None = None, *, seed: int = 0, channels: tuple[str, ...] = CHANNELS
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
    """
    cfg = cfg or LightSheetConfig()
    unknown = set(channels) - set(CHANNELS)
    if unknown:
        raise ValueError(f"unknown channel(s) {sorted(unknown)}: use {CHANNELS}")
    rng = np.random.default_rng(seed)
    spec = make_specimen(cfg, rng)
    out: dict[str, dict[str, np.ndarray]] = {}
    for ch in channels:
        density = spec.nucleus if ch == "nucleus" else spec.membrane
        angle, fused = render_views(density, spec, cfg, np.random.default_rng([seed, CHANNELS.index(ch)]))
        out[ch] = {"angle": angle, "fused": fused, "truth": _sample_z(density, spec.z_factor).astype(np.float32)}
    return out
