"""Registration against known truth: sub-pixel global shifts, smooth elastic warps, NanoJ's rules, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from fmc_ij.errors import FmcInputError
from fmc_ij.register import (
    apply_nanoj_mask,
    cross_correlation_map,
    elastic_register,
    estimate_shift,
    nanoj_elastic_mask,
    nanoj_shift,
    ncc,
    register_pair,
    resample,
    subpixel_peak,
    valid_region,
    warp,
)
from fmc_ij.register.nanoj import bicubic
from fmc_ij.synthetic.warp import apply_displacement, random_displacement


def shifted_pair(shape, d, rng, snr=20.0, blur=2.0):
    """A periodic smooth texture and its copy moved so that moving[p + (-d)] = reference[p]; noise at SNR."""
    big = [n + 64 for n in shape]
    base = ndimage.gaussian_filter(rng.random(big), blur, mode="wrap")
    k = np.meshgrid(*[np.fft.fftfreq(n) for n in big], indexing="ij")
    moved = np.fft.ifftn(np.fft.fftn(base) * np.exp(2j * np.pi * sum(ki * di for ki, di in zip(k, d)))).real
    sl = tuple(slice(32, 32 + n) for n in shape)
    a, b = base[sl], moved[sl]
    s = a.std() / snr
    return a + rng.normal(0, s, shape), b + rng.normal(0, s, shape)


@pytest.mark.parametrize("shape,n", [((128, 160), 6), ((40, 64, 72), 3)])
def test_global_shift_subpixel(shape, n):
    rng = np.random.default_rng(len(shape))
    errs = []
    for _ in range(n):
        d = rng.uniform(-20, 20, len(shape)) * np.array([0.5 if s < 64 else 1.0 for s in shape])
        ref, mov = shifted_pair(shape, d, rng)
        errs.append(estimate_shift(ref, mov).shift + d)  # moving[p - d] = ref[p]: the answer is -d
    rms = float(np.sqrt(np.mean(np.square(errs))))
    assert rms <= 0.02, rms


def test_global_shift_matches_skimage_sign():
    from skimage.registration import phase_cross_correlation

    rng = np.random.default_rng(5)
    ref, mov = shifted_pair((96, 96), (3.3, -1.7), rng)
    ours = estimate_shift(ref, mov).shift
    theirs = phase_cross_correlation(ref, mov, upsample_factor=100, normalization=None)[0]
    np.testing.assert_allclose(ours, -theirs, atol=0.1)  # skimage returns minus our displacement
    assert np.abs(ours - (-3.3, 1.7)).max() < 0.01 < np.abs(-theirs - (-3.3, 1.7)).max()


@pytest.mark.parametrize("sigma", [0.6, 3.0])
def test_large_images_refined_coarse_to_fine_without_aliasing_bias(sigma, monkeypatch):
    """Large images are refined on binned copies only while binning cannot alias: a sharp texture (content up
    to the Nyquist frequency) must climb to full resolution, a smooth one may stop early; both stay exact."""
    import fmc_ij.register.shift as sh

    levels = []
    orig = sh._refine_on_overlap
    monkeypatch.setattr(sh, "_refine_on_overlap", lambda r, *a, **k: levels.append(r.shape) or orig(r, *a, **k))
    rng = np.random.default_rng(6)
    d = np.array([7.37, -12.81])
    ref, mov = shifted_pair((1024, 1024), d, rng, blur=sigma)
    err = np.abs(estimate_shift(ref, mov).shift + d).max()
    assert levels[0] == (512, 512)  # the integer peak and first refinement on the 2x-binned copy
    if sigma < 1:
        assert levels[-1] == (1024, 1024) and err < 0.01, (levels, err)  # aliasing seen: full resolution
    else:
        assert levels == [(512, 512)] and err < 0.005, (levels, err)  # oversampled: the binned copy suffices


def test_anisotropic_volume_unbins_only_its_sharp_axis(monkeypatch):
    """A volume sharp along z and smooth in y, x goes back to full resolution along z only."""
    import fmc_ij.register.shift as sh

    levels = []
    orig = sh._refine_on_overlap
    monkeypatch.setattr(sh, "_refine_on_overlap", lambda r, *a, **k: levels.append(r.shape) or orig(r, *a, **k))
    rng = np.random.default_rng(7)
    d = np.array([2.3, -5.6, 9.15])
    ref, mov = shifted_pair((64, 160, 160), d, rng, blur=(0.6, 3.0, 3.0))  # sharp along z only
    err = np.abs(estimate_shift(ref, mov).shift + d).max()
    assert err < 0.02, err
    assert levels[0] == (32, 80, 80) and levels[-1][0] == 64 and levels[-1][1:] == (80, 80), levels


def test_fft_sizes_and_binning():
    import torch

    from fmc_ij.register.shift import bin2, fft_size

    assert [fft_size(n) for n in (2035, 2048, 13, 1)] == [2025, 2048, 12, 1]
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(2, 5, 7)
    np.testing.assert_allclose(bin2(x, 2).numpy(), x[:, :4, :6].reshape(2, 2, 2, 3, 2).mean((2, 4)).numpy())
    np.testing.assert_allclose(bin2(x, 3, [0]).numpy(), x.mean(0, keepdim=True).numpy())


def smooth_warp_pair(shape, rng, amplitude=3.0, smooth=160.0):
    img = ndimage.gaussian_filter(rng.random(shape), 2.0, mode="wrap").astype(np.float32)
    img = (img - img.mean()) / img.std()
    _, d = random_displacement(shape, rng, shift_px=0.0, elastic_px=amplitude, smoothness_px=smooth)
    mov = apply_displacement(img, -d)
    truth = d.copy()
    for _ in range(10):  # registered[p] = mov[p + t(p)] = img[p] needs t(p) = d(p + t(p))
        coords = np.indices(shape) + truth
        truth = np.stack([ndimage.map_coordinates(d[a], coords, order=1, mode="nearest") for a in range(len(shape))])
    noise = 0.05
    return (
        img + rng.normal(0, noise, shape).astype(np.float32),
        mov + rng.normal(0, noise, shape).astype(np.float32),
        truth,
    )


def test_elastic_recovers_smooth_warp_2d():
    rng = np.random.default_rng(0)
    ref, mov, truth = smooth_warp_pair((384, 384), rng)
    res = register_pair(ref, mov)
    v = res.valid
    err = np.sqrt(((res.field - truth) ** 2).sum(0))[v]
    assert float(np.sqrt((err**2).mean())) <= 0.15
    assert res.ncc_after > res.ncc_rigid > res.ncc_before
    assert [lv.block for lv in res.levels][:2] == [(128, 128), (64, 64)]


def test_elastic_3d_runs_and_improves():
    rng = np.random.default_rng(1)
    ref, mov, truth = smooth_warp_pair((64, 128, 128), rng, amplitude=2.0, smooth=128.0)
    g = estimate_shift(ref, mov)
    init = np.broadcast_to(g.shift.reshape(3, 1, 1, 1), (3, *ref.shape)).copy()
    res = elastic_register(ref, mov, init_field=init, min_block=32)
    rigid_err = np.sqrt(((init - truth) ** 2).sum(0)).mean()
    err = np.sqrt(((res.field - truth) ** 2).sum(0))[valid_region(res.field)].mean()
    assert err < 0.5 * rigid_err
    assert ncc(ref, warp(mov, res.field)) > ncc(ref, warp(mov, init))


def test_resample_onto_reference_grid():
    y, x = np.mgrid[0:40, 0:60].astype(np.float32)
    lo = x * 2.0 + y  # a plane sampled at 2 units
    out = resample(lo, (2.0, 2.0), (1.0, 1.0), (79, 119))
    yy, xx = np.mgrid[0:79, 0:119] / 2.0
    np.testing.assert_allclose(out[2:-2, 2:-2], (xx * 2 + yy)[2:-2, 2:-2], atol=1e-3)


def test_nanoj_bicubic_is_imagej_catmull_rom():
    yy, xx = np.mgrid[0:12, 0:12].astype(float)
    quad = 0.3 * xx**2 - 0.2 * xx * yy + yy + 4  # Catmull-Rom reproduces quadratics exactly
    for y, x in ((4.25, 5.5), (6.9, 3.1)):
        assert bicubic(quad, y, x) == pytest.approx(0.3 * x**2 - 0.2 * x * y + y + 4, abs=1e-9)
    assert np.isnan(bicubic(quad, 0.5, 5.0))  # NaN within 1 px of the border, as ImageJ


def test_nanoj_rigid_worked_example():
    """(+3.3, -1.7) displacement -> about (-3.3, +1.7) in NanoJ's translate convention (x first)."""
    img = np.exp(-((np.mgrid[:64, :64] - 32.0) ** 2).sum(0) / (2 * 3.0**2))
    ky, kx = np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij")
    mov = np.fft.ifft2(np.fft.fft2(img) * np.exp(-2j * np.pi * (kx * 3.3 + ky * -1.7))).real
    sx, sy = nanoj_shift(img, mov)
    assert sx == pytest.approx(-3.3, abs=0.05) and sy == pytest.approx(1.7, abs=0.05)
    ccm = cross_correlation_map(img, mov)
    assert ccm.shape == (63, 63) and ccm.max() == pytest.approx(1.0, abs=0.02)  # normalised to Pearson


def test_nanoj_elastic_mask_rules():
    rng = np.random.default_rng(3)
    ref, mov = shifted_pair((200, 200), (2.0, -1.0), rng)
    mask = nanoj_elastic_mask(ref, mov)  # pure translation: every block agrees, the mask is nearly flat
    assert mask.shape == (2, 200, 200)
    # Each 40 px block is estimated like NanoJ does (no window: edges pull towards 0); the mask is their blend.
    blocks = [subpixel_peak(cross_correlation_map(mov[y : y + 40, x : x + 40], ref[y : y + 40, x : x + 40]))[:2]
              for y in range(0, 200, 40) for x in range(0, 200, 40)]  # fmt: skip
    np.testing.assert_allclose(mask.mean(axis=(1, 2)), np.mean(blocks, axis=0), atol=0.05)
    assert np.sign(mask.mean(axis=(1, 2))).tolist() == [-1.0, 1.0]  # sample mov at p - d
    # A reference with no structure in any block: nothing passes min similarity, the mask is zero.
    flat_noise = rng.normal(0, 1, (200, 200))
    assert np.abs(nanoj_elastic_mask(flat_noise, rng.normal(0, 1, (200, 200)), min_similarity=0.9)).max() == 0
    out = apply_nanoj_mask(mov, mask)
    assert ncc(ref[20:-20, 20:-20], out[20:-20, 20:-20]) > ncc(ref[20:-20, 20:-20], mov[20:-20, 20:-20])


@pytest.mark.parametrize(
    "a,b,needle",
    [
        (np.zeros((64, 64)), np.ones((64, 64)), "constant"),
        (np.full((64, 64), np.nan), np.ones((64, 64)), "NaN"),
        (np.ones((64, 64)), np.ones((64, 65)), "differ in shape"),
    ],
)
def test_bad_input(a, b, needle):
    with pytest.raises(FmcInputError, match=needle):
        estimate_shift(a, b)


def test_unrelated_images_are_an_error():
    rng = np.random.default_rng(4)
    a, b = (ndimage.gaussian_filter(rng.random((96, 96)), 2) for _ in range(2))
    with pytest.raises(FmcInputError, match="no significant cross-correlation peak"):
        estimate_shift(a, b)  # no common structure (or no overlap): refuse rather than return a shift


def test_no_overlap_left_is_an_error():
    import torch

    from fmc_ij.register.shift import _refine_on_overlap

    t = torch.as_tensor(ndimage.gaussian_filter(np.random.default_rng(5).random((96, 96)), 2), dtype=torch.float32)
    with pytest.raises(FmcInputError, match="no usable overlap"):
        _refine_on_overlap(t, t, torch.tensor([0.0, 92.0], dtype=torch.float64), 0.25)


@pytest.mark.imagej
def test_fiji_engine_contract(fake_fiji, tmp_path, monkeypatch):
    """Our Register Channels option string goes through ImageJ 1's real dialog parsing; outputs come back."""
    import tifffile

    from fmc_ij.fiji import run_nanoj_register

    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "ref.tif", rng.random((64, 64)).astype(np.float32))
    tifffile.imwrite(tmp_path / "mov.tif", rng.random((64, 64)).astype(np.float32))
    monkeypatch.setenv("FMC_IJ_FIJI", str(fake_fiji))
    out = run_nanoj_register(tmp_path / "ref.tif", tmp_path / "mov.tif", tmp_path / "out")
    assert out == tmp_path / "out" / "registered.tif"
    moved = tifffile.imread(out)
    np.testing.assert_array_equal(moved, tifffile.imread(tmp_path / "mov.tif"))  # the stand-in moves nothing
    assert tifffile.imread(tmp_path / "out" / "translation_mask.tif").shape == (64, 128)  # NanoJ's [dx | dy]


def test_dataset_mode_crops_a_specimens_channels_to_one_box(tmp_path):
    """Both channels of a specimen are registered on their own but cropped to one common box, so they stay on
    one grid (what a multi-channel model stacks); the box lies inside both pairs' valid regions."""
    import csv

    from fmc_ij.io import imread
    from fmc_ij.register import register_dataset
    from fmc_ij.synthetic.dataset import simulate_lightsheet_dataset
    from fmc_ij.synthetic.lightsheet import LightSheetConfig

    data = simulate_lightsheet_dataset(tmp_path / "d", n=1, cfg=LightSheetConfig(shape=(16, 128, 128)), seed=4,
                                       misregister=True)  # fmt: skip
    rows = register_dataset(data, tmp_path / "r")
    assert sorted(r.name for r in rows) == ["image_0_membrane", "image_0_nucleus"]
    shapes = {imread(f).shape for f in (tmp_path / "r").glob("image_0_*.tif")}
    assert len(shapes) == 1 and min(next(iter(shapes))[1:]) > 100
    crops = {r["crop"] for r in csv.DictReader((tmp_path / "r" / "registration.csv").open())}
    assert len(crops) == 1
