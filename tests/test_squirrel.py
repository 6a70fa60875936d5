"""SQUIRREL vs NanoJ's own figures on the real Figure-3 data, known-sigma pairs, ImageJ ops, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmc_ij.errors import FmcInputError
from fmc_ij.io import imread
from fmc_ij.register import ij_ops as ij
from fmc_ij.squirrel import error_map, error_map_per_slice, forward_model, fuse
from fmc_ij.synthetic.optics import sparse_texture


def _find_fig3() -> Path:
    """NanoJ's Figure-3 data (GPL, not copied into this repo): $FMC_IJ_SQUIRREL_DATA, ../shared, /work/shared."""
    import os

    env = os.environ.get("FMC_IJ_SQUIRREL_DATA")
    cands = [Path(env)] if env else []
    cands += [Path(__file__).resolve().parents[2] / "shared" / "data" / "squirrel-fig3"]
    cands += [Path("/work/shared/data/squirrel-fig3")]
    return next((c for c in cands if (c / "widefield_reference.tif").is_file()), cands[-1])


FIG3 = _find_fig3()
needs_fig3 = pytest.mark.skipif(
    not FIG3.is_dir(),
    reason=f"NanoJ's Figure-3 test data (GPL, not shipped here) not found at {FIG3}; set FMC_IJ_SQUIRREL_DATA",
)


@pytest.fixture(scope="module")
def fig3():
    return imread(FIG3 / "widefield_reference.tif").data, imread(FIG3 / "super_resolution_stack.tif").data


@needs_fig3
def test_fig3_sigma_held_matches_nanoj(fig3):
    ref, sr = fig3
    r = error_map(ref, sr[0], rsf=2.0)[0]
    for got, want in ((r.alpha, 1.49791), (r.beta, 1870.12), (r.rse, 34.12404), (r.rsp, 0.865659)):
        assert got == pytest.approx(want, rel=1e-3)
    assert r.shift == pytest.approx((-0.4273, -0.7993), abs=2e-3) and r.crop == (-1, -1)


@needs_fig3
def test_fig3_full_optimisation_matches_nanoj(fig3):
    ref, sr = fig3
    want = [
        (2.0000, 1.4977, 1870.1, 34.12, 0.8657),
        (2.0765, 6.0591, 1949.2, 29.26, 0.9032),
        (2.6000, 0.1281, 1953.9, 43.73, 0.7671),
    ]
    for r, w in zip(error_map(ref, sr), want):
        assert (r.sigma, r.alpha, r.beta, r.rse, r.rsp) == pytest.approx(w, rel=5e-3)


def synthetic(n_ref, m, sigma, rng, noise=0.01):
    img = sparse_texture((n_ref * m, n_ref * m), rng, n_ref * 6)
    ref = forward_model(img, sigma, m, alpha=2.0, beta=50.0)
    return ref + rng.normal(0, noise * ref.std(), ref.shape), img


@pytest.mark.parametrize("m,sigma", [(4, 1.7), (2, 2.3), (1, 1.4)])
@pytest.mark.parametrize("method", ["binned", "nanoj"])
def test_known_sigma_recovered(m, sigma, method):
    ref, img = synthetic(48, m, sigma, np.random.default_rng(m))
    r = error_map(ref, img, method=method, register=False)[0]
    assert r.sigma == pytest.approx(sigma, rel=0.02)
    assert r.alpha == pytest.approx(2.0, rel=0.02)


def _pair(shape, m, seed):
    rng = np.random.default_rng(seed)
    img = sparse_texture((shape[0] * m, shape[1] * m), rng, shape[0] * 3) * 500 + 300
    img += np.linspace(0, 80, img.shape[1])[None]  # a gradient: the clamped edges then matter
    return rng.random(shape) * 50 + 900, img


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize(
    "shape,m,sigma_max,kind",
    [
        ((40, 52), 1, 3.0, "_EdgeMoments"),
        ((8, 9), 1, 10.0, "_EdgeMoments"),  # the kernel is wider than the image
        ((12, 11), 1, 25.0, "_FoldedMoments"),  # radius above EDGE_MAX_PAD
        ((20, 16), 2, 3.0, "_FoldedMoments"),
        ((12, 15), 5, 2.0, "_FoldedMoments"),
    ],
)
def test_objective_moments_equal_direct_blur_and_bin(shape, m, sigma_max, kind, backend, monkeypatch):
    """Sum, sum of squares and cross sum of bin_m(K * S) from the lag tables / folded spectra equal those of the
    direct edge-clamped blur and block mean (forward_model), on every piece of the sigma range."""
    import torch

    from fmc_ij.squirrel import objective

    if backend == "torch":  # the accelerator code path, run on CPU tensors
        monkeypatch.setattr(objective, "_on", lambda x, dev: torch.as_tensor(x))
    ref, img = _pair(shape, m, 0)
    obj = objective.Objective(ref, img, m, torch.device("cpu"), sigma_max)
    assert type(obj.moments).__name__ == kind
    rc = ref - ref.mean()
    for sigma in np.linspace(0.5, sigma_max, 9):
        b = forward_model(img - obj.offset, sigma, m)
        want = np.array([b.sum(), (b * b).sum(), (b * rc).sum()])
        got = np.array(obj.moments(objective.rsf_kernel_1d(float(np.float32(sigma * m)))))
        scale = np.array([np.sqrt(b.size * want[1]), want[1], np.sqrt(want[1] * obj.vr)])
        assert (np.abs(got - want) / scale).max() < 1e-11, sigma


@pytest.mark.parametrize("m", [1, 3])
def test_objective_fit_is_least_squares(m):
    """rmse, alpha, beta at a sigma are the ordinary least-squares fit of the reference on the forward model."""
    import torch

    from fmc_ij.squirrel.objective import Objective

    ref, img = _pair((30, 34), m, 1)
    ref = forward_model(img, 1.3, m, alpha=0.7, beta=-40.0) + ref * 0.05
    obj = Objective(ref, img, m, torch.device("cpu"), 4.0)
    for sigma in (0.8, 1.3, 2.2):
        b = forward_model(img, sigma, m).ravel()
        (alpha, beta), *_ = np.linalg.lstsq(np.stack([b, np.ones_like(b)], 1), ref.ravel(), rcond=None)
        rmse = np.sqrt(np.mean((alpha * b + beta - ref.ravel()) ** 2))
        assert obj.fit(sigma) == pytest.approx((rmse, alpha, beta), rel=1e-7)  # sse: a difference of moments


def test_per_slice_3d_and_fusion():
    rng = np.random.default_rng(9)
    pairs = [synthetic(32, 2, s, rng) for s in (1.5, 2.5)]
    ref = np.stack([p[0] for p in pairs])
    img = np.stack([p[1] for p in pairs])
    res = error_map_per_slice(ref, img, method="binned", register=False)
    assert [r.sigma for r in res] == pytest.approx([1.5, 2.5], rel=0.02)
    a, b = np.ones((8, 8)), np.full((8, 8), 3.0)
    ea, eb = np.full((8, 8), 1.0), np.full((8, 8), 3.0)
    # Error 3x higher -> weight 3x lower: (3*1 + 1*3) / (3 + 1) = 1.5
    np.testing.assert_allclose(fuse([a, b], [ea, eb]), 1.5)


@pytest.mark.imagej
def test_imagej_ops_against_imagej(tmp_path):
    """Gaussian blur (incl. the downscaled path above sigma 8.5), bicubic resize and translate equal ImageJ 1's."""
    import tifffile

    from fmc_ij.fiji import run_imagej1_macro

    a = (np.random.default_rng(0).random((40, 50)) * 1000).astype(np.float32)
    tifffile.imwrite(tmp_path / "a.tif", a)
    macro = tmp_path / "m.ijm"
    macro.write_text(
        "\n".join(
            f'open("{tmp_path}/a.tif"); {cmd}; saveAs("Tiff", "{tmp_path}/{name}.tif"); close();'
            for name, cmd in (
                ("b10", 'run("Gaussian Blur...", "sigma=10")'),
                ("b2", 'run("Gaussian Blur...", "sigma=2.5")'),
                ("up", 'run("Size...", "width=200 height=160 depth=1 interpolation=Bicubic")'),
                ("tr", 'run("Translate...", "x=-0.4273 y=-0.7993 interpolation=Bicubic")'),
            )
        )
    )
    run_imagej1_macro(macro)
    x = a.astype(np.float64)
    pairs = {
        "b10": ij.gaussian_blur(x, 10),
        "b2": ij.gaussian_blur(x, 2.5),
        "up": ij.resize_bicubic_up(x, 4),
        "tr": ij.translate_bicubic(x, -0.4273, -0.7993),
    }
    for name, ours in pairs.items():
        theirs = tifffile.imread(tmp_path / f"{name}.tif")
        assert np.abs(ours - theirs).max() < 1e-3, name


@pytest.mark.parametrize(
    "ref,img,needle",
    [
        (np.ones((20, 20)), np.random.default_rng(0).random((50, 50)), "constant"),
        (np.random.default_rng(0).random((20, 20)), np.random.default_rng(1).random((50, 50)), "integer multiple"),
        (np.random.default_rng(0).random((20, 20)), np.random.default_rng(1).random((60, 40)), "aspect ratios"),
    ],
)
def test_bad_input(ref, img, needle):
    with pytest.raises(FmcInputError, match=needle):
        error_map(ref, img)


def test_anisotropic_3d_sigmas_recovered():
    from fmc_ij.squirrel import error_map_3d

    rng = np.random.default_rng(0)
    sz, sxy, m = 2.5, 1.5, 2
    img = sparse_texture((16, 32 * m, 32 * m), rng, 400)
    ref = forward_model(img, (sz, sxy, sxy), (1, m, m), alpha=2.0, beta=50.0)
    r = error_map_3d(ref + rng.normal(0, 0.01 * ref.std(), ref.shape), img)
    assert r.sigma_z == pytest.approx(sz, rel=0.02) and r.sigma_xy == pytest.approx(sxy, rel=0.02)
    assert r.magnification == (1, 2, 2) and r.error_map.shape == img.shape


@pytest.mark.imagej
def test_fiji_engine_contract(fake_fiji, tmp_path, monkeypatch):
    """Our macro string goes through ImageJ 1's real option parsing; the results table comes back parsed."""
    import tifffile

    from fmc_ij.fiji import run_nanoj_squirrel

    tifffile.imwrite(tmp_path / "wf.tif", np.random.default_rng(0).random((20, 20)).astype(np.float32))
    tifffile.imwrite(tmp_path / "sr.tif", np.random.default_rng(1).random((100, 100)).astype(np.float32))
    monkeypatch.setenv("FMC_IJ_FIJI", str(fake_fiji))
    rows = run_nanoj_squirrel(tmp_path / "wf.tif", tmp_path / "sr.tif", tmp_path / "out")
    assert rows == [{"frame": 1, "rsp": pytest.approx(0.865659), "rse": pytest.approx(34.12404)}]
    assert (tmp_path / "out" / "errormap.tif").is_file()


def test_fiji_engine_without_squirrel(tmp_path, monkeypatch):
    from fmc_ij.fiji import run_nanoj_squirrel

    (tmp_path / "Fiji.app" / "plugins").mkdir(parents=True)
    (tmp_path / "Fiji.app" / "jars").mkdir()
    monkeypatch.setenv("FMC_IJ_FIJI", str(tmp_path / "Fiji.app"))
    with pytest.raises(FmcInputError, match="NanoJ-SQUIRREL is not installed"):
        run_nanoj_squirrel(tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "o")
