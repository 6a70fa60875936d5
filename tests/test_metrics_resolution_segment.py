"""Pixel metrics against skimage, bead FWHM on simulated beads, spectra / FRC physics, IoU and N_IOU."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio

from fmc_ij.errors import FmcInputError
from fmc_ij.metrics import pixel_metrics
from fmc_ij.metrics.resolution import bead_fwhm, frc, frc_resolution, frc_single, radial_power_spectrum
from fmc_ij.metrics.segment import get_segmenter, iou, make_isotropic, n_iou, segment_nuclei
from fmc_ij.synthetic.beads import BeadsConfig, simulate_beads


def test_pixel_metrics_equal_skimage():
    rng = np.random.default_rng(0)
    gt = rng.random((12, 30, 30))
    pred = gt + rng.normal(0, 0.1, gt.shape)
    m = pixel_metrics(pred, gt, data_range=1.0)
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=1.0), rel=1e-9)
    for norm in ("euclidean", "min-max", "mean"):
        ref = normalized_root_mse(gt, pred, normalization=norm)
        assert pixel_metrics(pred, gt, nrmse_norm=norm)["nrmse"] == pytest.approx(ref, rel=1e-9)
    assert m["mae"] == pytest.approx(np.abs(pred - gt).mean())
    assert m["pearson"] == pytest.approx(np.corrcoef(pred.ravel(), gt.ravel())[0, 1], rel=1e-9)
    same = pixel_metrics(gt, gt, data_range=1.0)
    assert same["psnr"] == math.inf and same["pearson"] == pytest.approx(1.0)
    assert math.isnan(pixel_metrics(np.ones_like(gt), gt)["pearson"])  # constant image: documented NaN


@pytest.mark.parametrize("which", ["wide", "narrow"])
def test_bead_fwhm_2d_within_5_percent(which):
    cfg = BeadsConfig()
    beads = simulate_beads(cfg, seed=3)
    psf = cfg.fwhm_wide_nm if which == "wide" else cfg.fwhm_narrow_nm
    res = bead_fwhm(
        beads[which], spacing=(cfg.pixel_nm, cfg.pixel_nm), half_width=max(5, int(psf / cfg.pixel_nm * 1.2))
    )
    assert len(res["fwhm"]) >= 5
    expected = cfg.effective_fwhm_nm(psf)
    assert np.median(res["fwhm"], axis=0) == pytest.approx([expected, expected], rel=0.05)


def test_bead_fwhm_3d_lateral_and_axial():
    cfg = BeadsConfig(shape=(32, 128, 128), n_beads=15)
    beads = simulate_beads(cfg, seed=2)
    res = bead_fwhm(beads["wide"], spacing=(cfg.z_step_nm, cfg.pixel_nm, cfg.pixel_nm), half_width=(5, 10, 10))
    assert len(res["fwhm"]) >= 3
    med = np.median(res["fwhm"], axis=0)
    assert med[0] == pytest.approx(cfg.effective_fwhm_nm(cfg.axial_fwhm_wide_nm), rel=0.05)
    assert med[1:] == pytest.approx([cfg.effective_fwhm_nm(cfg.fwhm_wide_nm)] * 2, rel=0.05)


def test_spectrum_and_frc_see_the_blur():
    rng = np.random.default_rng(1)
    signal = ndimage.gaussian_filter(rng.random((256, 256)), 1.0) * 1000
    blurred = ndimage.gaussian_filter(signal, 3.0)
    f, p_sharp = radial_power_spectrum(signal)
    _, p_blur = radial_power_spectrum(blurred)
    hi = f > 0.25
    assert p_blur[hi].mean() < 0.01 * p_sharp[hi].mean()
    assert f[-1] == pytest.approx(0.5, abs=0.01)
    # Two noisy acquisitions of each: FRC resolution is worse (larger) for the blurred object.
    res = {}
    for name, img in (("sharp", signal), ("blurred", blurred)):
        a, b = (rng.poisson(np.clip(img, 0, None)).astype(float) for _ in range(2))
        res[name] = frc_resolution(*frc(a, b))
        res[name + "_single"] = frc_resolution(*frc_single(a))
    assert res["sharp"] < res["blurred"]
    assert res["sharp_single"] < res["blurred_single"]
    assert 2.0 <= res["sharp"] < 6.0  # pixels: between Nyquist and the blur scale


def test_iou_modes():
    a = np.zeros((20, 20), int)
    a[2:8, 2:8] = 1
    a[10:16, 10:16] = 2
    assert iou(a, a) == 1.0 and iou(a, a, "instance") == 1.0
    merged = (a > 0).astype(int)  # same foreground, two objects merged into one label
    assert iou(a, merged) == 1.0
    assert iou(a, merged, "instance") < 0.6
    shifted = np.roll(a, 1, axis=0)
    assert 0.6 < iou(a, shifted) < 1.0
    assert iou(np.zeros_like(a), np.zeros_like(a), "instance") == 1.0
    assert iou(a, np.zeros_like(a), "instance") == 0.0


def _nuclei_volume(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    vol = np.zeros((32, 64, 64), np.float32)
    centres = [(8 + 16 * (i % 2), 10 + 14 * (i // 4), 10 + 14 * (i % 4)) for i in range(16)]
    zz, yy, xx = np.mgrid[:32, :64, :64]
    for c in centres:
        vol[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < 25] = 1.0
    return ndimage.gaussian_filter(vol, 1.0) * 100 + rng.normal(0, 3, vol.shape).astype(np.float32), len(centres)


def test_classical_segmenter_counts_nuclei():
    img, n = _nuclei_volume(np.random.default_rng(2))
    labels = segment_nuclei(img, radius=5)
    assert labels.max() == n


def test_n_iou_definition():
    rng = np.random.default_rng(3)
    gt, _ = _nuclei_volume(rng)
    inp = ndimage.gaussian_filter(gt, (3, 1, 1)) + rng.normal(0, 5, gt.shape).astype(np.float32)
    seg = get_segmenter("nucleus", radius=5)
    perfect = n_iou(gt, gt, inp, segmenter=seg)
    assert perfect["n_iou"] == pytest.approx(1.0) and perfect["best_iou"] == 1.0
    ident = n_iou(inp, gt, inp, segmenter=seg)
    assert ident["n_iou"] == pytest.approx(0.0) and ident["reference_iou"] < 1.0
    # With verified labels the spec's three IoUs are used.
    labels = seg(gt)
    verified = n_iou(gt, gt, inp, segmenter=seg, gt_labels=labels, input_labels=labels)
    assert math.isnan(verified["n_iou"])  # best == reference: the ratio is undefined, reported as NaN
    # Anisotropic spacing is resampled to isotropic voxels first.
    iso = make_isotropic(gt, (2.0, 1.0, 1.0))
    assert iso.shape == (32, 32, 32)


def test_cellpose_missing_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    # Behave as on a machine without the package, whether or not this one has it.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cellpose" else real(name, *a))
    with pytest.raises(FmcInputError, match="Cellpose is not installed"):
        get_segmenter("nucleus", "cellpose")
