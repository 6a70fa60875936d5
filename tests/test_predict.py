"""Prediction: tiled = whole-array (2D, 3D), uncertainty, fallback, files with metadata, the challenge layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from fmc_ij.cli import main
from fmc_ij.data import Normalizer
from fmc_ij.errors import FmcInputError
from fmc_ij.io import ImageMeta, imread, imwrite
from fmc_ij.nn.factory import ModelConfig, build_model
from fmc_ij.predict import Predictor, fallback_blend, load_predictor, predict_array, predict_files, restore, tile_grid
from fmc_ij.train.checkpoint import save_model


def _predictor(ndim: int, seed: int = 0, members: int = 1, probabilistic: bool = False, **kw) -> Predictor:
    mc = ModelConfig(ndim=ndim, depth=2, base=4, probabilistic=probabilistic, **kw)
    if ndim == 3:
        mc = mc.resolve_pool((1.0, 0.4, 0.4))
    nets = []
    for k in range(members):
        torch.manual_seed(seed + k)
        nets.append(build_model(mc).eval())
    return Predictor(nets, mc)


@pytest.mark.parametrize(("ndim", "shape", "tile"), [(2, (150, 173), (64, 80)), (3, (21, 90, 77), (6, 30, 30))])
def test_tiled_equals_whole_array(ndim, shape, tile):
    rng = np.random.default_rng(0)
    img = (rng.random(shape) * 1000).astype(np.float32)
    p = _predictor(ndim, output_floor=None)
    big = [n + 2 * 64 for n in shape]
    whole = predict_array(p, img, tile=big, progress=False).image
    assert len(tile_grid(shape, big, p.radius, p.multiple, [8] * ndim)) == 1
    small = [t + 2 * h for t, h in zip(tile, p.radius)]
    assert len(tile_grid(shape, small, p.radius, p.multiple, [8] * ndim)) >= 4
    tiled = predict_array(p, img, tile=small, batch=3, progress=False).image
    assert np.abs(tiled - whole).max() <= 1e-4  # tile borders included: no seams


@pytest.mark.parametrize(("ndim", "shape", "tile"), [(2, (90, 77), (32, 48)), (3, (12, 60, 52), (6, 30, 30))])
def test_test_time_flips_tile_seam_free_and_give_an_uncertainty(ndim, shape, tile):
    img = (np.random.default_rng(5).random(shape) * 100).astype(np.float32)
    p = _predictor(ndim, output_floor=None)
    plain = predict_array(p, img, progress=False)
    p.tta = True
    whole = predict_array(p, img, tile=[n + 128 for n in shape], progress=False)
    tiled = predict_array(p, img, tile=[t + 2 * h for t, h in zip(tile, p.radius)], batch=2, progress=False)
    assert np.abs(tiled.image - whole.image).max() <= 1e-4
    assert np.abs(tiled.uncertainty - whole.uncertainty).max() <= 1e-4
    # The flip average of an untrained (not flip-equivariant) network differs from the plain pass, and its
    # spread is the uncertainty.
    assert plain.uncertainty is None and whole.uncertainty.max() > 0
    assert np.abs(whole.image - plain.image).max() > 1e-4


def test_plane_wise_2d_model_on_a_volume():
    img = np.random.default_rng(1).random((3, 40, 50)).astype(np.float32)
    p = _predictor(2)
    vol = predict_array(p, img, progress=False).image
    one = predict_array(p, img[1], normalizer=Normalizer.fit(img), progress=False).image
    np.testing.assert_allclose(vol[1], one, atol=1e-6)
    assert (vol >= 0).all()  # output floor


def test_ensemble_and_laplace_uncertainty():
    img = np.random.default_rng(2).random((40, 40)).astype(np.float32)
    ens = _predictor(2, members=3)
    res = predict_array(ens, img, progress=False)
    assert res.uncertainty is not None and res.uncertainty.shape == img.shape and res.uncertainty.max() > 0
    single = predict_array(_predictor(2), img, progress=False)
    assert single.uncertainty is None
    lap = predict_array(_predictor(2, probabilistic=True), img, progress=False)
    assert lap.uncertainty is not None and (lap.uncertainty > 0).all()


def test_fallback_keeps_untouched_regions():
    rng = np.random.default_rng(3)
    inp = rng.random((64, 64)).astype(np.float32)
    pred = inp.copy()
    pred[20:40, 20:40] += 1.0  # the network changed one region a lot
    out = fallback_blend(inp, pred)
    assert np.abs(out[:8, :8] - inp[:8, :8]).max() < 1e-3  # far away: the input is kept
    assert np.abs(out[28:32, 28:32] - pred[28:32, 28:32]).max() < 1e-3  # changed region: the prediction
    with pytest.raises(FmcInputError, match="uncertainty fallback needs"):
        fallback_blend(inp, pred, None, mode="uncertainty")


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    p = _predictor(3)
    cfg = {"model": p.model.model_dump(mode="json"), "data": {"pmin": 2.0, "pmax": 99.8}}
    save_model(tmp_path / "run" / "model.pt", p.nets[0], cfg, step=1)
    return tmp_path / "run"


def test_challenge_layout_keeps_names_metadata_and_dtype(run_dir, tmp_path):
    src = tmp_path / "input" / "images" / "fluorescence-lightsheet-3D-microscopy"
    meta = ImageMeta(axes="ZYX", spacing={"Z": 1.0, "Y": 0.4, "X": 0.4}, unit="µm", channel="nucleus", study=2)
    img = (np.random.default_rng(4).random((12, 40, 40)) * 3000 + 100).astype(np.uint16)
    imwrite(src / "image_7_nucleus_angle.tif", img, meta)
    before = (src / "image_7_nucleus_angle.tif").read_bytes()
    dst = tmp_path / "output" / "images" / "fused-fluorescence-lightsheet-3D-microscopy"
    main(["predict", "--model", str(run_dir), "--input", str(src), "--output", str(dst)])
    out = imread(dst / "image_7_nucleus_angle.tif")
    assert out.dtype == np.uint16 and out.shape == img.shape
    assert out.meta.spacing == meta.spacing and out.meta.channel == "nucleus" and out.meta.study == 2
    assert (src / "image_7_nucleus_angle.tif").read_bytes() == before  # input untouched
    pred = predict_files(load_predictor(run_dir), [src], tmp_path / "f32", output="float32", progress=False)
    assert imread(pred[0]).dtype == np.float32


def test_cli_predict_errors(run_dir, tmp_path, capsys):
    for argv, msg in [
        (["predict", "--model", str(tmp_path / "none"), str(tmp_path), "--out", str(tmp_path / "o")], "no such model"),
        (["predict", "--model", str(run_dir), str(tmp_path / "missing.tif"), "--out", str(tmp_path / "o")], "no such"),
        (["predict", "--model", str(run_dir), "--out", str(tmp_path / "o")], "no input"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and msg in err and len(err.splitlines()) == 1, err


def test_streamed_prediction_equals_in_memory(tmp_path):
    """Streaming (tile reads through fresh mappings, zarr store, plane-by-plane TIFF) changes no voxel."""
    from fmc_ij.predict import predict_file

    p = _predictor(3, members=2)
    meta = ImageMeta(axes="ZYX", spacing={"Z": 1.0, "Y": 0.4, "X": 0.4}, channel="membrane")
    img = (np.random.default_rng(6).random((9, 90, 100)) * 4000).astype(np.uint16)
    imwrite(tmp_path / "v.tif", img, meta)
    tile = [32, 80, 80]
    a = predict_file(p, tmp_path / "v.tif", tmp_path / "mem" / "v.tif", tile=tile, stream=False, progress=False)
    b = predict_file(p, tmp_path / "v.tif", tmp_path / "str" / "v.tif", tile=tile, stream=True, progress=False)
    assert [x.name for x in a] == [x.name for x in b] == ["v.tif", "v_uncertainty.tif", "v_gate.tif"]
    for x, y in zip(a, b):
        ix, iy = imread(x), imread(y)
        np.testing.assert_array_equal(ix.data, iy.data)
        assert iy.meta.channel == "membrane" and iy.meta.spacing == meta.spacing
    assert not [f for f in (tmp_path / "str").iterdir() if f.name.startswith(".")]  # temporary store removed


def test_upsample_z_reproduces_linear_profiles_and_the_input_planes():
    from fmc_ij.predict.isotropic import upsample_z

    z = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((1, 3, 4), np.float32)
    up = upsample_z(3 * z + 1, 2.5)
    assert up.shape == (11, 3, 4)  # floor(4 * 2.5) + 1 planes, 1 / 2.5 input planes apart
    np.testing.assert_allclose(up[:, 0, 0], 3 * np.arange(11) / 2.5 + 1, rtol=1e-6)
    np.testing.assert_array_equal(up[::5], (3 * z + 1)[::2])  # every 5th new plane is an input plane


def test_isotropic_model_predicts_onto_the_isotropic_grid(tmp_path):
    """A model trained with data.mode isotropic (a 2D network) restores XZ/YZ planes of the Z-upsampled volume:
    `fmc-ij predict` writes floor((Z-1) k) + 1 planes with the Z voxel size set to the lateral one."""
    p = _predictor(2)
    cfg = {"model": p.model.model_dump(mode="json"), "data": {"pmin": 2.0, "pmax": 99.8, "mode": "isotropic"}}
    save_model(tmp_path / "iso" / "model.pt", p.nets[0], cfg, step=1)
    assert load_predictor(tmp_path / "iso").task == "isotropic"
    meta = ImageMeta(axes="ZYX", spacing={"Z": 1.2, "Y": 0.4, "X": 0.4}, unit="µm", channel="membrane")
    img = (np.random.default_rng(5).random((6, 24, 20)) * 3000 + 100).astype(np.uint16)
    imwrite(tmp_path / "in" / "vol.tif", img, meta)
    main(["predict", "--model", str(tmp_path / "iso"), "--out", str(tmp_path / "out"), str(tmp_path / "in")])
    out = imread(tmp_path / "out" / "vol.tif")
    assert out.shape == (16, 24, 20) and out.dtype == np.uint16
    assert out.meta.spacing == pytest.approx({"Z": 0.4, "Y": 0.4, "X": 0.4}) and out.meta.channel == "membrane"
    # a volume that is already isotropic is refused with what to check
    imwrite(tmp_path / "in2" / "iso.tif", img, meta.replace(spacing={"Z": 0.4, "Y": 0.4, "X": 0.4}))
    with pytest.raises(FmcInputError, match="already about isotropic"):
        predict_files(load_predictor(tmp_path / "iso"), [tmp_path / "in2"], tmp_path / "o2", progress=False)


def test_inputs_are_brought_to_the_training_voxel_size_and_back(tmp_path, capsys):
    """A model trained at 1.0 / 0.4 / 0.4 um sees an input at 0.2 um laterally at its own scale: the input is
    resampled (anti-aliased) to the training grid, scaled by its own percentiles, restored, and the result brought
    back to the input grid; units convert (nm); a far-off scale warns, or stops with --strict; the CLI says so."""
    from fmc_ij.model_io import TrainingData
    from fmc_ij.predict.resample import plan, zoom_to

    p = _predictor(3, output_floor=None)
    cfg = {"model": p.model.model_dump(mode="json"), "data": {"pmin": 2.0, "pmax": 99.8}}
    data = TrainingData(axes="ZYX", voxel_size=[1.0, 0.4, 0.4], unit="µm")
    save_model(tmp_path / "run" / "model.pt", p.nets[0], cfg, data=data, step=1)
    model = load_predictor(tmp_path / "run")
    rng = np.random.default_rng(3)
    fine = ndimage.gaussian_filter(rng.random((12, 80, 80)) * 1000, (1, 4, 4)).astype(np.float32)
    got = restore(model, fine, axes="ZYX", spacing={"Z": 1.0, "Y": 0.2, "X": 0.2}, unit="µm", gate=False,
                  progress=False)  # fmt: skip
    small = zoom_to(fine, (1, 0.5, 0.5))
    assert small.shape == (12, 40, 40)
    at_model = predict_array(model, small, normalizer=Normalizer.fit(fine), progress=False).image
    np.testing.assert_allclose(np.asarray(got.image), zoom_to(at_model, (), shape=fine.shape), atol=1e-5)
    assert got.normalizer == Normalizer.fit(fine)  # the output maps back to the input's own intensities
    from fmc_ij.predict import gate as G

    gated = restore(model, fine, axes="ZYX", spacing={"Z": 1.0, "Y": 0.2, "X": 0.2}, unit="µm", progress=False)
    norm = Normalizer.fit(fine)  # the gate judges the network where it ran (the model's grid); its map comes back
    w_model = np.asarray(G.gate(norm(small), at_model).weight)
    w = np.asarray(gated.gate.weight)
    assert w.shape == fine.shape and gated.gate.trusted == pytest.approx(float(w.mean()))
    np.testing.assert_allclose(w, np.clip(zoom_to(w_model, (), shape=fine.shape), 0, 1), atol=1e-5)
    np.testing.assert_allclose(np.asarray(gated.image), G.blend(norm(fine), np.asarray(got.image), w), atol=1e-5)
    same = restore(model, fine, axes="ZYX", spacing={"Z": 1.0, "Y": 0.4, "X": 0.4}, unit="µm", gate=False,
                   progress=False)  # fmt: skip
    np.testing.assert_allclose(np.asarray(same.image), predict_array(model, fine, progress=False).image, atol=1e-6)
    assert plan(model.contract, "ZYX", {"Z": 1000.0, "Y": 200.0, "X": 200.0}, "nm").zoom == pytest.approx((1, 0.5, 0.5))
    assert not plan(model.contract, "ZYX", {"Z": 1.0, "Y": 0.2, "X": 0.2}, "pixel").needed  # uncalibrated: as is
    with pytest.raises(FmcInputError, match="more than 2.5x"):
        restore(model, fine, axes="ZYX", spacing={"Z": 1.0, "Y": 0.1, "X": 0.1}, unit="µm", strict=True)
    imwrite(tmp_path / "in" / "fine.tif", fine, ImageMeta(axes="ZYX", spacing={"Z": 1.0, "Y": 0.2, "X": 0.2}))
    main(["predict", "--model", str(tmp_path / "run"), str(tmp_path / "in"), "--out", str(tmp_path / "o")])
    assert "resampled by 1.00 x 0.50 x 0.50 to the model's training grid" in capsys.readouterr().err
