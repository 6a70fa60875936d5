"""The safety gate (issue 23): it keeps the input where the network removed or invented structure or is out of
its depth, it is the same on tiles, streams and Dask as on whole images, and its map is written."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from fmc_ij.io import ImageMeta, imread, imwrite
from fmc_ij.model_io import GateCalibration
from fmc_ij.nn.factory import ModelConfig, build_model
from fmc_ij.predict import gate as G
from fmc_ij.predict import load_predictor, predict_file
from fmc_ij.train.checkpoint import save_model


def _blobs(shape=(24, 96, 96), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    idx = tuple(rng.integers(0, n, 120) for n in shape)
    img[idx] = 1.0
    return ndimage.gaussian_filter(img, (1.0, 2.0, 2.0)) * 40


def test_the_gate_keeps_the_input_where_structure_was_removed_or_invented():
    """Where the prediction removed structure the input shows, or added structure the input does not support, the
    gate keeps the input; where the prediction explains the input (and in empty background, where there is nothing
    to contradict) it trusts the prediction."""
    truth = _blobs()
    rng = np.random.default_rng(1)
    x = ndimage.gaussian_filter(truth, (1.0, 1.5, 1.5)) + rng.normal(0, 0.01, truth.shape).astype(np.float32)
    y = truth.copy()
    y[:, 10:40, 10:40] = 0.0  # removed: the input shows structure there
    invented = _blobs(seed=5)[:, 60:80, 60:80] * 3
    y[:, 60:80, 60:80] += invented  # invented: the input does not support it
    w = np.asarray(G.gate(x, y).weight)
    removed, added = np.zeros(x.shape, bool), np.zeros(x.shape, bool)
    removed[:, 15:35, 15:35] = truth[:, 15:35, 15:35] > np.percentile(truth, 95)
    added[:, 64:76, 64:76] = invented[:, 4:16, 4:16] > np.percentile(invented, 95)
    assert removed.sum() > 50 and added.sum() > 50
    kept = w[removed].mean(), w[added].mean()
    trusted = w[:, 45:55, 45:55].mean(), w[:, 10:40, 60:90].mean()
    assert max(kept) < 0.1 and min(trusted) > 0.6, (kept, trusted)
    out = G.blend(x, y, w)
    assert np.abs(out - x)[removed].mean() < 0.1 * np.abs(y - x)[removed].mean()


def test_out_of_domain_images_keep_the_input():
    cal = GateCalibration(feature_mean=[1.0, 1.0], feature_std=[1.0, 1.0], in_domain=[1.0, 1.2])
    near = np.array([0.0, 4e6, 1e6])  # one channel's moments (sum, sum of squares, count): mean 0, sd 2: z 1, 1
    far = np.array([6e6, 4e7, 1e6])  # mean 6, sd 2: z 5, 1: score 3 = 2.5 x the highest in-domain score
    assert G.competence(G.image_ood(near, cal), cal) == 1.0
    assert G.competence(G.image_ood(far, cal), cal) == 0.0
    x, y = _blobs(seed=2), _blobs(seed=3)
    verdict = G.gate(x, y, far, cal)
    assert verdict.competence == 0.0 and float(np.asarray(verdict.weight).max()) == 0.0
    np.testing.assert_array_equal(G.blend(x, y, verdict.weight), x)  # exactly the input: N_SSIM exactly 0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny 3D model with a gate calibration whose in-domain scores put the test image half-way out."""
    import torch

    tmp = tmp_path_factory.mktemp("gate")
    torch.manual_seed(0)
    mc = ModelConfig(ndim=3, depth=2, base=4).resolve_pool((1.0, 0.4, 0.4))
    net = build_model(mc).eval()
    cfg = {"model": mc.model_dump(mode="json"), "data": {"pmin": 2.0, "pmax": 99.8}}
    save_model(tmp / "run" / "model.pt", net, cfg, step=1)
    vol = (_blobs((20, 72, 64), seed=9) * 30 + 100 + np.random.default_rng(4).normal(0, 3, (20, 72, 64))).astype(
        np.float32
    )
    imwrite(tmp / "in" / "vol.tif", vol, ImageMeta(axes="ZYX", spacing={"Z": 1.0, "Y": 0.4, "X": 0.4}))
    p = load_predictor(tmp / "run")
    out = predict_file(p, tmp / "in" / "vol.tif", tmp / "probe" / "vol.tif", output="normalized", gate=False,
                       progress=False)  # fmt: skip
    from fmc_ij.model_io import read_model, write_model

    m = read_model(tmp / "run")
    from fmc_ij.nn.infer import moments_summary

    other = (_blobs((20, 72, 64), seed=10) * 20 + 100).astype(np.float32)  # an "in-domain" reference volume
    mean = moments_summary(_features(p, other))
    std = 0.1 * np.abs(mean) + 1e-3
    stats = GateCalibration(feature_mean=mean.tolist(), feature_std=std.tolist())
    score = G.image_ood(_features(p, imread(tmp / "in" / "vol.tif").data), stats)
    half_way = 0.5 * (G.OOD_FULL + G.OOD_ZERO)
    cal = GateCalibration(feature_mean=mean.tolist(), feature_std=std.tolist(), in_domain=[score / half_way])
    contract = m.contract.model_copy(update={"calibration": m.contract.calibration.model_copy(update={"gate": cal})})
    write_model(tmp / "run" / "model.pt", m.networks()[0], contract, training=m.training)
    del out
    return tmp


def _features(p, vol: np.ndarray, tile=None) -> np.ndarray:
    """The channel moments of the network's deepest activations over ``vol``."""
    from fmc_ij.predict import predict_array

    return predict_array(p, vol, tile=tile, progress=False).features


def test_the_gate_is_the_same_on_tiles_streams_and_dask(run, tmp_path):
    p = load_predictor(run / "run")
    src = run / "in" / "vol.tif"
    kw = {"output": "normalized", "progress": False}
    whole = predict_file(p, src, tmp_path / "whole" / "vol.tif", **kw)
    assert [f.name for f in whole] == ["vol.tif", "vol_gate.tif"]
    w = imread(whole[1]).data
    assert 0.0 < w.max() < 1.0  # half-way out of domain: partly trusted
    variants = {
        "tiles": predict_file(p, src, tmp_path / "tiles" / "vol.tif", tile=[36, 80, 80], **kw),
        "stream": predict_file(p, src, tmp_path / "stream" / "vol.tif", stream=True, **kw),
    }
    pytest.importorskip("distributed", reason="the dask extra is not installed (pip install 'fmc-ij[dask]')")
    from fmc_ij.predict.distributed import dask_client, predict_file_dask

    with dask_client(workers=1) as client:
        variants["dask"] = predict_file_dask(client, run / "run", src, tmp_path / "dask" / "vol.tif", tile=[36, 80, 80],
                                             **kw)  # fmt: skip
    for name, files in variants.items():
        np.testing.assert_allclose(imread(files[1]).data, w, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(imread(files[0]).data, imread(whole[0]).data, atol=1e-4, err_msg=name)
    off = predict_file(p, src, tmp_path / "off" / "vol.tif", gate=False, **kw)
    assert len(off) == 1 and not np.allclose(imread(off[0]).data, imread(whole[0]).data)


def test_structure_density_outside_the_training_range_keeps_the_input():
    """A model trained on volumes with 10-30 % structure trusts 7-37 % fully and nothing from 2x beyond (a sparse
    neuron at 4 %, a dense tissue crop at 70 %); the gate reports the density."""
    cal = GateCalibration(foreground=[0.1, 0.2, 0.3])
    assert G.density_competence(0.2, cal) == G.density_competence(0.09, cal) == G.density_competence(0.36, cal) == 1
    assert G.density_competence(0.04, cal) == G.density_competence(0.7, cal) == 0.0
    assert 0 < G.density_competence(0.065, cal) < 1 and G.density_competence(0.2, GateCalibration()) == 1.0
    sparse = _blobs(seed=4)
    sparse[:, :, 24:] = 0.0  # a quarter of the field holds structure
    sparse = sparse / np.percentile(sparse, 99.8)
    frac = float(np.mean(sparse > 0.1))
    assert frac < 0.05
    verdict = G.gate(sparse, sparse * 0.5, cal=cal)
    assert verdict.competence == 0.0 and float(np.asarray(verdict.weight).max()) == 0.0
    assert verdict.density == pytest.approx(frac) and "structure density" in verdict.describe()


def test_a_network_that_drops_most_of_the_input_light_is_not_trusted():
    """Trained volumes kept 50-80 % of their light above the background: an output that keeps a quarter (the
    widefield glow of a sparse neuron called background) is outside the model's experience, one that keeps
    45 % is within the margin; the share is measured the same in slabs as whole."""
    cal = GateCalibration(kept_light=[0.5, 0.65, 0.8])
    assert G.light_competence(0.45, cal) == G.light_competence(0.9, cal) == 1.0
    assert G.light_competence(0.24, cal) == G.light_competence(1.7, cal) == 0.0
    assert 0.0 < G.light_competence(0.3, cal) < 1.0 and G.light_competence(0.24, GateCalibration()) == 1.0
    x = _blobs(seed=5)
    x = x / np.percentile(x, 99.8)
    glow = ndimage.gaussian_filter(x, 4.0)
    xn = x + 4.0 * glow  # what the input shows: the structure in a broad glow
    kept = G.gate(xn, x, cal=cal)  # the network removed the glow: most of the light
    share = float(np.clip(x, 0, None).sum() / np.clip(xn, 0, None).sum())
    assert share < 0.3 and kept.kept == pytest.approx(share, rel=1e-5)
    assert kept.competence == 0.0
    assert f"light kept {share:.2f}, beyond its training range: trust x0.00" in kept.describe()
    mild = G.gate(xn, 0.8 * xn, cal=cal)
    assert mild.kept == pytest.approx(0.8, rel=1e-5) and mild.competence == 1.0 and "beyond" not in mild.describe()
    big = np.concatenate([xn] * 5)  # more planes than one slab: the sums add up to the same share
    assert G.gate(big, np.concatenate([x] * 5), cal=cal).kept == pytest.approx(share, rel=1e-5)


def test_training_calibrates_the_gate_and_recalibrate_measures_it_again(tmp_path):
    """A trained run carries its gate calibration (activation statistics from training patches, in-domain scores
    and structure densities of its volumes); ``recalibrate`` measures the same again from the run's own data."""
    from fmc_ij.model_io import read_model
    from fmc_ij.synthetic.dataset import simulate_lightsheet_dataset
    from fmc_ij.synthetic.lightsheet import LightSheetConfig
    from fmc_ij.train import TrainConfig, recalibrate, train

    ls = simulate_lightsheet_dataset(tmp_path / "ls", n=2, cfg=LightSheetConfig(shape=(24, 48, 48)), seed=4)
    cfg = TrainConfig.from_preset("care3d", data={"root": str(ls), "patch": [4, 16, 16], "batch": 2,
                                                  "val_crop": [24, 48, 48]},
                                  model={"base": 4, "depth": 1}, steps=2, val_every=2, threads=1)  # fmt: skip
    train(cfg, tmp_path / "run")
    first = read_model(tmp_path / "run").contract.calibration.gate
    assert first is not None and len(first.in_domain) == len(first.foreground) == 4  # 2 specimens x 2 channels
    assert all(0.0 < f < 1.0 for f in first.foreground) and len(first.feature_mean) == len(first.feature_std)
    assert len(first.kept_light) == 4 and all(0.0 < k < 5.0 for k in first.kept_light)
    recalibrate(tmp_path / "run", device="cpu")
    again = read_model(tmp_path / "run").contract.calibration.gate
    np.testing.assert_allclose(again.foreground, first.foreground)
    np.testing.assert_allclose(again.kept_light, first.kept_light, rtol=1e-4)
    np.testing.assert_allclose(again.in_domain, first.in_domain, rtol=1e-4)
