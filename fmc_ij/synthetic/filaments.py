"""2D filaments (actin / microtubule-like) imaged at low NA (widefield) and at high NA.

Filaments are worm-like chains (persistence length ``persistence_um``) drawn as dense point chains
on a 4x supersampled grid, blurred with each objective's PSF (FWHM = 0.51 lambda / NA) and binned
to camera pixels. The low-NA view also picks up out-of-focus haze.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from fmc_ij.synthetic.optics import camera, fwhm_to_sigma, widefield_fwhm


@dataclasses.dataclass
class FilamentsConfig:
    """Parameters of :func:`simulate_filaments`."""

    shape: tuple[int, int] = (256, 256)
    pixel_nm: float = 65.0
    wavelength_nm: float = 520.0
    na_low: float = 0.4
    na_high: float = 1.4
    n_filaments: int = 30
    length_um: tuple[float, float] = (4.0, 14.0)
    persistence_um: float = 8.0
    photons_low: float = 150.0
    photons_high: float = 300.0
    haze: float = 0.3
    background_photons: float = 5.0
    read_noise: float = 2.0
    offset: float = 100.0


def _chains(cfg: FilamentsConfig, rng: np.random.Generator, extent_um: np.ndarray) -> list[np.ndarray]:
    step = 0.02
    chains = []
    for _ in range(cfg.n_filaments):
        n = int(rng.uniform(*cfg.length_um) / step)
        # Worm-like chain: tangent angle diffuses with variance step / persistence length.
        dtheta = rng.normal(0.0, np.sqrt(step / cfg.persistence_um), n)
        theta = rng.uniform(0, 2 * np.pi) + np.cumsum(dtheta)
        start = rng.uniform(0.05, 0.95, 2) * extent_um
        pts = start + np.cumsum(step * np.column_stack([np.sin(theta), np.cos(theta)]), axis=0)
        chains.append(pts)
    return chains


def simulate_filaments(cfg: FilamentsConfig | None = None, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Simulate one field of filaments: ``{"low": uint16, "high": uint16, "truth": float32}`` (YX)."""
    cfg = cfg or FilamentsConfig()
    rng = np.random.default_rng(seed)
    ss = 4
    fine_px = cfg.pixel_nm / ss / 1000.0  # um
    fshape = (cfg.shape[0] * ss, cfg.shape[1] * ss)
    extent = np.array(fshape) * fine_px
    density = np.zeros(fshape, np.float32)
    for pts in _chains(cfg, rng, extent):
        idx = np.round(pts / fine_px).astype(int)
        ok = np.all((idx >= 0) & (idx < np.array(fshape)), axis=1)
        np.add.at(density, (idx[ok, 0], idx[ok, 1]), rng.uniform(0.7, 1.0))
    out: dict[str, np.ndarray] = {}
    for name, na, photons in (("low", cfg.na_low, cfg.photons_low), ("high", cfg.na_high, cfg.photons_high)):
        sigma = fwhm_to_sigma(widefield_fwhm(cfg.wavelength_nm, na)) / (cfg.pixel_nm / ss)
        img = ndimage.gaussian_filter(density, sigma, mode="constant")
        img = img.reshape(cfg.shape[0], ss, cfg.shape[1], ss).sum(axis=(1, 3))
        if name == "low":
            img += cfg.haze * ndimage.gaussian_filter(img, 12.0, mode="reflect")
        img = img / (np.percentile(img, 99.9) + 1e-9) * photons
        out[name] = camera(img + cfg.background_photons, rng, read_noise=cfg.read_noise, offset=cfg.offset)
    out["truth"] = density.reshape(cfg.shape[0], ss, cfg.shape[1], ss).sum(axis=(1, 3))
    return out
