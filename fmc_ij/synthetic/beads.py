"""Sub-diffraction beads seen with a wide (confocal-like) and a narrow (STED-like) PSF.

Each bead is a sphere of ``bead_diameter_nm`` (second moment matched by a Gaussian, sigma = r/sqrt(5))
convolved with a Gaussian PSF and integrated exactly over each pixel (error functions), so bead
FWHM measurements on these images have a known answer: sqrt(FWHM_psf^2 + (2.355 r/sqrt(5))^2).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.special import erf

from fmc_ij.synthetic.optics import camera, fwhm_to_sigma


@dataclasses.dataclass
class BeadsConfig:
    """Parameters of :func:`simulate_beads`. Lengths in nanometres."""

    shape: tuple[int, ...] = (256, 256)  # YX, or ZYX for 3D
    pixel_nm: float = 25.0
    z_step_nm: float = 100.0
    n_beads: int = 40
    bead_diameter_nm: float = 40.0
    fwhm_wide_nm: float = 290.0  # confocal-like
    fwhm_narrow_nm: float = 110.0  # STED-like
    axial_fwhm_wide_nm: float = 700.0
    axial_fwhm_narrow_nm: float = 600.0
    photons_wide: float = 400.0
    photons_narrow: float = 120.0  # STED trades signal for resolution
    background_photons: float = 3.0
    read_noise: float = 1.5
    offset: float = 100.0

    def effective_fwhm_nm(self, psf_fwhm_nm: float) -> float:
        """The FWHM a perfect fit should find: PSF and bead size combined in quadrature."""
        bead_sigma = self.bead_diameter_nm / 2.0 / math.sqrt(5.0)
        return math.hypot(psf_fwhm_nm, bead_sigma * 2.0 * math.sqrt(2.0 * math.log(2.0)))


def _pixel_integrated_1d(n: int, centers: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """(n_beads, n) fraction of a unit 1D Gaussian falling in each pixel [i-0.5, i+0.5)."""
    edges = np.arange(n + 1, dtype=np.float64) - 0.5
    z = (edges[None, :] - centers[:, None]) / (np.sqrt(2.0) * sigma[:, None])
    return 0.5 * np.diff(erf(z), axis=1)


def render_points(
    shape: tuple[int, ...], positions_px: np.ndarray, sigma_px: tuple[float, ...], amplitude: np.ndarray
) -> np.ndarray:
    """Sum of pixel-integrated Gaussians (total intensity ``amplitude`` each), 2D or 3D, separable."""
    n = positions_px.shape[0]
    profiles = [
        _pixel_integrated_1d(size, positions_px[:, ax], np.full(n, sigma_px[ax])) for ax, size in enumerate(shape)
    ]
    if len(shape) == 2:
        return np.einsum("b,by,bx->yx", amplitude, *profiles).astype(np.float32)
    return np.einsum("b,bz,by,bx->zyx", amplitude, *profiles).astype(np.float32)


def simulate_beads(cfg: BeadsConfig | None = None, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Simulate one field of beads.

    Returns
    -------
    dict
        ``"wide"`` and ``"narrow"`` (uint16 images on the same grid) and ``"positions"``: an
        (n, ndim + 1) float array of bead centres in pixels (axis order of ``shape``) and their
        relative brightness.
    """
    cfg = cfg or BeadsConfig()
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in cfg.shape)
    ndim = len(shape)
    if ndim not in (2, 3):
        raise ValueError(f"beads are 2D (YX) or 3D (ZYX), got shape {shape}")
    spacing = (cfg.z_step_nm, cfg.pixel_nm, cfg.pixel_nm)[-ndim:]
    margin = np.array([fwhm_to_sigma(cfg.fwhm_wide_nm) * 3 / s for s in spacing])
    margin = np.minimum(margin, np.array(shape) / 4)
    pos = rng.uniform(margin, np.array(shape) - 1 - margin, (cfg.n_beads, ndim))
    brightness = rng.uniform(0.7, 1.3, cfg.n_beads)
    bead_sigma = cfg.bead_diameter_nm / 2.0 / math.sqrt(5.0)
    out: dict[str, np.ndarray] = {"positions": np.column_stack([pos, brightness])}
    for name, lat, ax, photons in (
        ("wide", cfg.fwhm_wide_nm, cfg.axial_fwhm_wide_nm, cfg.photons_wide),
        ("narrow", cfg.fwhm_narrow_nm, cfg.axial_fwhm_narrow_nm, cfg.photons_narrow),
    ):
        sig_nm = [math.hypot(fwhm_to_sigma(f), bead_sigma) for f in (ax, lat, lat)[-ndim:]]
        sig_px = tuple(s / d for s, d in zip(sig_nm, spacing))
        # Peak photons for a centred bead: total = peak * (2 pi)^(ndim/2) * prod(sigma).
        total = photons * (2 * math.pi) ** (ndim / 2) * float(np.prod(sig_px))
        img = render_points(shape, pos, sig_px, brightness * total)
        out[name] = camera(img + cfg.background_photons, rng, read_noise=cfg.read_noise, offset=cfg.offset)
    return out
