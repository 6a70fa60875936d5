"""SSIM equals skimage's (Gaussian, sigma 1.5, population covariance) and N_SSIM behaves as the challenge defines it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import structural_similarity

from fmc_ij.errors import FmcInputError
from fmc_ij.metrics import n_ssim, percentile_normalize, ssim

SK = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


@pytest.mark.parametrize("shape", [(40, 50), (23, 37, 41), (12, 64, 48)])
@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_equals_skimage(shape, data_range):
    rng = np.random.default_rng(1)
    a = ndimage.gaussian_filter(rng.random(shape), 1.0) * data_range
    b = np.clip(a + rng.normal(0, 0.05 * data_range, shape), 0, None)
    ref = structural_similarity(a, b, data_range=data_range, **SK)
    assert ssim(a, b, data_range=data_range) == pytest.approx(ref, abs=1e-6)


def test_slabs_do_not_change_the_result():
    rng = np.random.default_rng(2)
    a, b = rng.random((30, 40, 40)), rng.random((30, 40, 40))
    whole = ssim(a, b, data_range=1.0)
    for slab in (1600, 5000, 17_000):  # one plane per slab, a few, most of the volume
        assert ssim(a, b, data_range=1.0, tile_voxels=slab) == pytest.approx(whole, abs=1e-12)


def test_uint16_inputs_and_identity():
    rng = np.random.default_rng(3)
    a = rng.integers(100, 4000, (16, 32, 32)).astype(np.uint16)
    assert ssim(a, a, data_range=4000.0) == pytest.approx(1.0)
    ref = structural_similarity(a.astype(float), (a // 2).astype(float), data_range=4000.0, **SK)
    assert ssim(a, a // 2, data_range=4000.0) == pytest.approx(ref, abs=1e-6)


def test_percentile_normalize_like_the_organisers():
    x = np.arange(1000, dtype=np.uint16).reshape(10, 100)
    lo, hi = np.percentile(x, (2, 99.8))
    np.testing.assert_allclose(percentile_normalize(x), (x - lo) / (hi - lo), rtol=1e-6, atol=1e-6)
    assert percentile_normalize(x).min() < 0 and percentile_normalize(x).max() > 1  # unclipped
    c = percentile_normalize(x, clip=True)
    assert c.min() == 0 and c.max() == 1
    flat = np.full((5, 5), 7, np.uint16)
    np.testing.assert_array_equal(percentile_normalize(flat), flat)


def test_n_ssim_definition():
    rng = np.random.default_rng(4)
    gt = ndimage.gaussian_filter(rng.random((16, 48, 48)), 2.0)
    inp = gt + rng.normal(0, 0.02, gt.shape)
    better = gt + rng.normal(0, 0.005, gt.shape)
    worse = gt + rng.normal(0, 0.05, gt.shape)
    assert n_ssim(inp, gt, inp) == pytest.approx(0.0, abs=1e-12)  # identity scores exactly 0
    assert n_ssim(gt, gt, inp) == pytest.approx(1.0)  # perfect scores 1
    assert 0 < n_ssim(better, gt, inp) < 1
    assert n_ssim(worse, gt, inp) < 0
    g, i, p = (percentile_normalize(v) for v in (gt, inp, better))
    s_in, s_p = (structural_similarity(v, g, data_range=1.0, **SK) for v in (i, p))
    assert n_ssim(better, gt, inp) == pytest.approx((s_p - s_in) / (1 - s_in), abs=1e-5)
    assert math.isnan(n_ssim(inp, gt, gt))  # input == gt: the guard


def test_bad_input():
    with pytest.raises(FmcInputError, match="same shape"):
        ssim(np.zeros((20, 20)), np.zeros((20, 21)), data_range=1.0)
    with pytest.raises(FmcInputError, match="too small"):
        ssim(np.zeros((8, 20)), np.zeros((8, 20)), data_range=1.0)
    with pytest.raises(FmcInputError, match="data_range"):
        ssim(np.zeros((20, 20)), np.zeros((20, 20)), data_range=0.0)


def test_published_reference_value():
    """IPOL 'imdiff -m mssim' (Gaussian SSIM, Wang et al. 2004) on skimage's camera + sigma-20 noise: 0.357959."""
    from skimage import data

    rs = np.random.RandomState(5)
    cam = data.camera()
    noisy = np.clip(cam + 20.0 * rs.randn(*cam.shape), 0, 255).astype(np.uint8)
    assert ssim(cam, noisy, data_range=255.0) == pytest.approx(0.357959091663361, abs=5e-4)


def test_compiled_engine_equals_eager():
    """torch.compile fuses the stencil; float32 tiles with float64 sums stay within 1e-6 of skimage."""
    rng = np.random.default_rng(7)
    a = ndimage.gaussian_filter(rng.random((24, 40, 44)), 1.0).astype(np.float32) * 3000 + 200
    b = (a + rng.normal(0, 30, a.shape)).astype(np.float32)
    ref = structural_similarity(a.astype(float), b.astype(float), data_range=3000.0, **SK)
    assert ssim(a, b, data_range=3000.0, engine="compiled", tile_voxels=9000) == pytest.approx(ref, abs=1e-6)


def test_normalise_on_the_fly_equals_normalised_copy():
    rng = np.random.default_rng(8)
    a = (rng.random((20, 30, 30)) * 1000).astype(np.uint16)
    b = (a * 0.5 + rng.random(a.shape) * 100).astype(np.uint16)
    na, nb = percentile_normalize(a), percentile_normalize(b)
    ref = structural_similarity(na.astype(float), nb.astype(float), data_range=1.0, **SK)
    lo_hi = (tuple(np.percentile(a, (2, 99.8))), tuple(np.percentile(b, (2, 99.8))))
    assert ssim(a, b, data_range=1.0, normalize=lo_hi) == pytest.approx(ref, abs=1e-6)
    ca, cb = percentile_normalize(a, clip=True), percentile_normalize(b, clip=True)
    ref_c = structural_similarity(ca.astype(float), cb.astype(float), data_range=1.0, **SK)
    assert ssim(a, b, data_range=1.0, normalize=lo_hi, clip=True) == pytest.approx(ref_c, abs=1e-6)


def test_constant_and_nan_images():
    flat = np.full((16, 16, 16), 5.0)
    rng = np.random.default_rng(9)
    x = rng.random((16, 16, 16))
    # Constant images: a documented finite value, no crash (SSIM of two equal constants is 1).
    assert ssim(flat, flat, data_range=1.0) == pytest.approx(1.0)
    assert math.isfinite(n_ssim(x, flat, x))
    bad = x.copy()
    bad[3, 3, 3] = np.nan
    with pytest.raises(FmcInputError, match="NaN"):
        n_ssim(bad, x, x)
    with pytest.raises(FmcInputError, match="differ in shape"):
        n_ssim(x, x[:-1], x)
