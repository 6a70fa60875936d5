"""A curved epithelial sheet in a noisy volume, and the high-SNR image of the sheet (CARE's surface projection,
Weigert et al. 2018, Fig. 3: the Drosophila wing epithelium, E-cadherin at the cell junctions).

1. **Sheet.** A smooth height field ``h(y, x)`` (Gaussian-filtered noise, ``height_amplitude_um`` peak to
   peak) carries a Voronoi tessellation of cells; the junctions (cell outlines, ``junction_um`` wide) are the
   signal, confined to a layer ``sheet_um`` thick around the surface.
2. **Volume** (input): the sheet blurred by an anisotropic PSF, with out-of-sheet debris (bright blobs above
   and below it, which a maximum projection picks up), haze, low photon counts and camera noise.
3. **Projection** (ground truth): the junction pattern blurred by the lateral PSF only, at high photon counts,
   as a high-SNR acquisition of the flattened surface would show it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from fmc_ij.synthetic.optics import camera, fwhm_to_sigma


@dataclasses.dataclass
class SurfaceConfig:
    """Parameters of :func:`simulate_surface`. Lengths in micrometres."""

    shape: tuple[int, int, int] = (32, 192, 192)
    spacing: tuple[float, float, float] = (1.0, 0.2, 0.2)
    cell_diameter: float = 3.0
    junction_um: float = 0.25
    sheet_um: float = 0.8
    height_amplitude_um: float = 12.0
    height_scale_um: float = 12.0
    psf_fwhm_um: tuple[float, float, float] = (2.5, 0.35, 0.35)  # ZYX
    n_debris: int = 40
    debris_um: float = 1.5
    photons: float = 20.0
    photons_gt: float = 600.0
    haze: float = 0.15
    background_photons: float = 1.0
    read_noise: float = 1.5
    offset: float = 100.0


def _height(cfg: SurfaceConfig, rng: np.random.Generator) -> np.ndarray:
    """Smooth surface height (um) over YX, centred in the stack with a margin of a PSF length."""
    dz, dy, dx = cfg.spacing
    ny, nx = cfg.shape[1:]
    field = ndimage.gaussian_filter(rng.standard_normal((ny, nx)), cfg.height_scale_um / dy, mode="wrap")
    field = (field - field.min()) / (np.ptp(field) + 1e-12) - 0.5
    depth = cfg.shape[0] * dz
    amp = min(cfg.height_amplitude_um, depth - 2 * cfg.psf_fwhm_um[0])
    return depth / 2 + amp * field


def _junctions(cfg: SurfaceConfig, rng: np.random.Generator) -> np.ndarray:
    """Cell outlines of a jittered-lattice Voronoi tessellation, as a smooth [0, 1] YX image."""
    ny, nx = cfg.shape[1:]
    dy = cfg.spacing[1]
    step = cfg.cell_diameter / dy
    gy, gx = np.meshgrid(np.arange(-step, ny + step, step * 0.866), np.arange(-step, nx + step, step), indexing="ij")
    gx = gx + (np.arange(gx.shape[0])[:, None] % 2) * step / 2  # hexagonal packing
    seeds = np.stack([gy.ravel(), gx.ravel()], 1) + rng.normal(0, 0.18 * step, (gy.size, 2))
    yy, xx = np.mgrid[0:ny, 0:nx]
    d, _ = cKDTree(seeds).query(np.stack([yy.ravel(), xx.ravel()], 1), k=2)
    gap = (d[:, 1] - d[:, 0]).reshape(ny, nx)  # 0 on a junction: equidistant to two cells
    width = cfg.junction_um / dy
    return np.exp(-0.5 * (gap / width) ** 2).astype(np.float32)


def simulate_surface(cfg: SurfaceConfig | None = None, *, seed: int = 0) -> dict[str, np.ndarray]:
    """One specimen: ``volume`` (ZYX uint16, the cheap acquisition), ``projection`` (YX uint16, the ground
    truth), ``height`` (YX float32, um)."""
    cfg = cfg or SurfaceConfig()
    rng = np.random.default_rng(seed)
    dz, dy, dx = cfg.spacing
    h = _height(cfg, rng)
    junc = _junctions(cfg, rng)
    z = (np.arange(cfg.shape[0], dtype=np.float32) * dz)[:, None, None]
    sheet = junc[None] * np.exp(-0.5 * ((z - h[None]) / (cfg.sheet_um / 2.355)) ** 2)
    # Debris: bright blobs away from the sheet (a max projection keeps them; the surface does not).
    sig = [fwhm_to_sigma(f) / s for f, s in zip(cfg.psf_fwhm_um, cfg.spacing)]
    sheet_b = ndimage.gaussian_filter(sheet, sig)
    sheet_b /= sheet_b.max() + 1e-12
    # Debris: blobs 2-5x as bright as the junctions, away from the sheet (a max projection keeps them).
    points = np.zeros(cfg.shape, np.float32)
    for _ in range(cfg.n_debris):
        y, x = rng.integers(0, cfg.shape[1]), rng.integers(0, cfg.shape[2])
        off = rng.choice([-1, 1]) * rng.uniform(3 * cfg.sheet_um, 3 * cfg.sheet_um + 6.0)
        zi = int(np.clip(round((h[y, x] + off) / dz), 0, cfg.shape[0] - 1))
        points[zi, y, x] = rng.uniform(2.0, 5.0)
    sig_d = [float(np.hypot(fwhm_to_sigma(cfg.debris_um) / s, g)) for s, g in zip(cfg.spacing, sig)]
    unit = np.zeros([2 * int(3 * g) + 1 for g in sig_d], np.float32)
    unit[tuple(n // 2 for n in unit.shape)] = 1.0
    debris = ndimage.gaussian_filter(points, sig_d) / ndimage.gaussian_filter(unit, sig_d).max()
    signal = sheet_b + debris
    haze = ndimage.gaussian_filter(signal, [4 * g for g in sig])
    photons = cfg.photons * (signal + cfg.haze * haze / (haze.max() + 1e-12)) + cfg.background_photons
    volume = camera(photons, rng, read_noise=cfg.read_noise, offset=cfg.offset)
    clean = ndimage.gaussian_filter(junc, sig[1:])
    gt = camera(cfg.photons_gt * clean / (clean.max() + 1e-12) + cfg.background_photons, rng,
                read_noise=cfg.read_noise, offset=cfg.offset)  # fmt: skip
    return {"volume": volume, "projection": gt, "height": h.astype(np.float32)}
