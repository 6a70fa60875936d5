"""One stored-model contract (issue 25): every task type x every way to load the model gives the same output.

Task types: CARE 2D (on volumes, plane by plane), CARE 3D (with an output floor of -0.25), probabilistic, ensemble,
isotropic, projection, multi-channel, per-channel and the GAN generator, each trained for two steps by the real
training loop. Ways to load: the run folder, its checkpoint, its fmc-ij bundle read back by fmc-ij, bioimage.io's
own runner on that bundle, and a Dask cluster (by file and by tile). Tolerances: run = checkpoint = Dask exactly
(1e-6, float rounding); fmc-ij bundle 1e-5; bioimageio.core 1e-4 away from the image border (it pads the border
symmetrically by the full halo, fmc-ij mirrors a narrower border by default).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fmc_ij.errors import FmcInputError
from fmc_ij.io import imread, imwrite
from fmc_ij.model_io import ChannelModels, read_model
from fmc_ij.predict import ChannelPredictors, load_predictor, predict_file
from fmc_ij.synthetic.dataset import simulate_lightsheet_dataset, simulate_surface_dataset
from fmc_ij.synthetic.lightsheet import LightSheetConfig
from fmc_ij.train import TrainConfig, train, train_per_channel

BIO = pytest.importorskip("bioimageio.core", reason="needs the bioimageio extra: pip install 'fmc-ij[bioimageio]'")

TASKS = ["care2d", "care3d", "probabilistic", "ensemble", "isotropic", "projection", "multichannel", "perchannel",
         "gan"]  # fmt: skip
SMALL = {"model": {"base": 4, "depth": 1}, "steps": 2, "val_every": 2, "threads": 1, "optim": {"warmup_steps": 0}}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("contract")
    ls = simulate_lightsheet_dataset(root / "ls", n=2, cfg=LightSheetConfig(shape=(24, 48, 48)), seed=4)
    from fmc_ij.synthetic import SurfaceConfig

    surf = simulate_surface_dataset(root / "surf", n=2, cfg=SurfaceConfig(shape=(8, 48, 48)), seed=2)
    return {"ls": ls, "surf": surf, "root": root}


def _config(task: str, data: dict[str, Path]) -> TrainConfig:
    ls = str(data["ls"])
    d3 = {"root": ls, "patch": [4, 16, 16], "batch": 2, "val_crop": [24, 48, 48]}
    if task == "care2d":
        return TrainConfig.from_preset("care2d", data={"root": ls, "patch": [16, 16], "batch": 2,
                                                        "val_crop": [24, 48, 48]}, **SMALL)  # fmt: skip
    if task == "isotropic":
        return TrainConfig.from_preset("isotropic", data={"root": ls, "low": "*_fused.tif", "patch": [16, 16],
                                                          "batch": 2, "val_crop": [1, 48, 48]}, **SMALL)  # fmt: skip
    if task == "projection":
        model = {"base": 4, "depth": 1, "proj_base": 4, "residual": True}  # residual: a 2-step model is not zero
        return TrainConfig.from_preset("projection", data={"root": str(data["surf"]), "patch": [8, 16, 16],
                                                           "batch": 2}, model=model,
                                       **{k: v for k, v in SMALL.items() if k != "model"})  # fmt: skip
    if task == "gan":
        return TrainConfig.from_preset("gan3d", data=d3, model={"base": 4, "depth": 1, "output_floor": None},
                                       **{k: v for k, v in SMALL.items() if k != "model"})  # fmt: skip
    cfg = TrainConfig.from_preset("care3d", data=d3, **SMALL)
    over = {
        "care3d": {"model": {"output_floor": -0.25}},
        "probabilistic": {"model": {"probabilistic": True}, "loss": {"laplace": 1.0}},
        "ensemble": {"ensemble": 2},
        "multichannel": {"data": {"multichannel": True, "channels": ["nucleus", "membrane"]}},
        "perchannel": {},
    }[task]
    return cfg.with_overrides(over)


@pytest.fixture(scope="module")
def runs(data) -> dict[str, Path]:
    out = {}
    for task in TASKS:
        run = data["root"] / "runs" / task
        cfg = _config(task, data)
        if task == "perchannel":
            train_per_channel(cfg, run)
        else:
            train(cfg, run)
        out[task] = run
    return out


def _input(task: str, data: dict[str, Path], tmp: Path) -> Path:
    """The image each task predicts (written into ``tmp``)."""
    if task == "projection":
        img = imread(data["surf"] / "volume" / "surface_1.tif")
        dst = tmp / "in" / "surface_1.tif"
    elif task == "multichannel":
        a, b = (imread(data["ls"] / f"image_1_{c}_angle.tif") for c in ("nucleus", "membrane"))
        imwrite(tmp / "in" / "stack.tif", np.stack([a.data, b.data]), a.meta.replace(axes="CZYX"))
        return tmp / "in" / "stack.tif"
    else:
        img = imread(data["ls"] / "image_1_membrane_angle.tif")
        dst = tmp / "in" / "image_1_membrane_angle.tif"
    imwrite(dst, img.data, img.meta)
    return dst


def _predict(model, src: Path, dst: Path, **kw) -> tuple[np.ndarray, np.ndarray | None, dict]:
    written = predict_file(model, src, dst, output="normalized", progress=False, **kw)
    img = imread(written[0])
    unc = imread(written[1]).data if len(written) > 1 else None
    return img.data, unc, {"axes": img.axes, "spacing": img.meta.spacing, "shape": img.shape}


def _member(task: str, run: Path) -> Path:
    """The single model a bundle or checkpoint holds: an ensemble's first member, a per-channel run's membrane."""
    return run / "member_0" if task == "ensemble" else run / "membrane" if task == "perchannel" else run


@pytest.fixture(scope="module")
def bundles(runs, data) -> dict[str, Path]:
    from fmc_ij.export import export

    out = {}
    for task, run in runs.items():
        member = _member(task, run)
        out[task] = export(member, data["root"] / "bundles" / f"{task}.zip")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_run_checkpoint_and_bundle_predict_the_same(task, runs, bundles, data, tmp_path):
    src = _input(task, data, tmp_path)
    member = _member(task, runs[task])
    ref, ref_unc, ref_meta = _predict(load_predictor(member), src, tmp_path / "run" / src.name)
    ckpt = member / "checkpoints" / "best.pt"  # the model's weights and contract (calibration included)
    got, unc, meta = _predict(load_predictor(ckpt), src, tmp_path / "ckpt" / src.name)
    assert meta == ref_meta and np.abs(got - ref).max() <= 1e-6
    got, unc, meta = _predict(load_predictor(bundles[task]), src, tmp_path / "bundle" / src.name)
    assert meta == ref_meta and np.abs(got - ref).max() <= 1e-5
    if ref_unc is not None:
        assert unc is not None and np.abs(unc - ref_unc).max() <= 1e-5
    # The contract read back from the bundle is the run's.
    a, b = read_model(member), read_model(bundles[task])
    assert not isinstance(a, ChannelModels) and not isinstance(b, ChannelModels)
    assert a.contract == b.contract
    if task == "isotropic":  # the task travels: Z upsampled onto the lateral grid, the new voxel size written
        assert ref_meta["spacing"]["Z"] == pytest.approx(ref_meta["spacing"]["X"])
        assert ref.shape[0] > imread(src).shape[0]
    if task == "projection":
        assert ref_meta["axes"] == "YX"
    if task == "care3d":  # the run's floor of -0.25 (not the default 0) travels into the bundle as its clip
        assert ref.min() >= -0.25 - 1e-6
        rdf = yaml.safe_load(zipfile.ZipFile(bundles[task]).read("rdf.yaml"))
        clip = rdf["outputs"][0]["postprocessing"][0]
        assert clip["id"] == "clip" and clip["kwargs"]["min"] == -0.25 and clip["kwargs"]["max"] >= 1e6


def test_ensemble_and_per_channel_runs_load_whole(runs, data, tmp_path):
    """An ensemble predicts as the mean of its members with their spread; a per-channel folder routes by channel;
    exporting either as one bundle is a one-line error."""
    from fmc_ij.export import export

    ens = load_predictor(runs["ensemble"])
    assert len(ens.nets) == 2 and ens.has_uncertainty
    assert isinstance(load_predictor(runs["perchannel"]), ChannelPredictors)
    for task in ("ensemble", "perchannel"):
        with pytest.raises(FmcInputError, match="ensemble|one model per channel"):
            export(runs[task], tmp_path / f"{task}.zip")


def _interior(bundle: Path) -> tuple:
    """The voxels farther than the halo from the border (there bioimage.io pads its own way)."""
    rdf = yaml.safe_load(zipfile.ZipFile(bundle).read("rdf.yaml"))
    halos = [a.get("halo", 0) for a in rdf["outputs"][0]["axes"] if a["type"] == "space"]
    return (Ellipsis, *[slice(h, -h) if h else slice(None) for h in halos])


def _core_predict(bundle: Path, x: np.ndarray, axes: str) -> np.ndarray:
    """bioimage.io's own runner on an fmc-ij bundle (its pre/post-processing, padding and tiling), in blocks of the
    largest valid size within the image: sample statistics then come from the whole, unpadded sample (without
    blocking, bioimageio.core 0.11 computes them after padding the sample by the halo)."""
    from bioimageio.core import Tensor, load_model_description, predict

    descr = load_model_description(str(bundle))
    inp = descr.inputs[0]
    halo = {str(a.id): int(getattr(a, "halo", 0) or 0) for a in descr.outputs[0].axes if a.type == "space"}
    dims = [str(a.id) for a in inp.axes]
    arr = x.astype(np.float32)
    if "C" not in axes:
        arr = arr[None]
    block = {}
    for a, n in zip([a for a in inp.axes if a.type == "space"], arr.shape[1:]):
        if isinstance(a.size, int):  # deepImageJ's fixed tile
            assert n >= a.size, (a.id, n, a.size)
            block[a.id] = a.size
            continue
        mn, st = a.size.min, a.size.step
        assert n >= mn and n > 2 * halo.get(str(a.id), 0), (a.id, n, mn)
        block[a.id] = mn + (n - mn) // st * st
    sample = predict(model=descr, inputs={inp.id: Tensor.from_numpy(arr[None], dims=dims)},
                     input_block_shape={inp.id: block})  # fmt: skip
    return sample.members[descr.outputs[0].id].data.values[0]


def _enlarged(src: Path, tmp: Path, task: str, bundle: Path) -> Path:
    """The task's input mirrored out to at least 40 x 96 x 96 and the bundle's tile (Z whole for a projection), so
    bioimage.io's blocks fit with an interior left to compare."""
    img = imread(src)
    rdf = yaml.safe_load(zipfile.ZipFile(bundle).read("rdf.yaml"))
    tile = [a["size"] if isinstance(a["size"], int) else 0 for a in rdf["inputs"][0]["axes"] if a["type"] == "space"]
    tile = [0] * (3 - len(tile)) + tile
    lead = 1 if "C" in img.axes else 0
    want = [img.shape[lead]] if task == "projection" else [max(40, tile[0] + 8)]
    want += [max(96, t + 16) for t in tile[1:]]
    pad = [(0, 0)] * lead + [(0, max(0, w - n)) for n, w in zip(img.shape[lead:], want)]
    data = np.pad(img.data, pad, mode="symmetric") if img.axes[0] != "Z" or not lead else img.data
    if "C" in img.axes and img.axes.index("C") == 1:  # ImageJ order ZCYX
        pad = [(0, max(0, want[0] - img.shape[0])), (0, 0), (0, max(0, want[1] - img.shape[2])),
               (0, max(0, want[2] - img.shape[3]))]  # fmt: skip
        data = np.pad(img.data, pad, mode="symmetric")
    dst = tmp / "big" / src.name
    imwrite(dst, data, img.meta)
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("task", ["care2d", "care3d", "probabilistic", "multichannel", "perchannel", "gan",
                                  "projection"])  # fmt: skip
def test_bioimageio_core_on_the_bundle_predicts_like_fmc_ij(task, runs, bundles, data, tmp_path):
    src = _enlarged(_input(task, data, tmp_path), tmp_path, task, bundles[task])
    img = imread(src)
    # The gate needs the whole image and a fitted forward model: it does not travel into a bundle (fmc-ij
    # predict --model bundle.zip applies it; bioimage.io's runner and deepImageJ give the network's output).
    ref, _, _ = _predict(load_predictor(_member(task, runs[task])), src, tmp_path / "run" / src.name, gate=False)
    x = img.data
    if task == "multichannel":
        x, axes = np.moveaxis(x, img.axes.index("C"), 0), "CZYX"
    else:
        axes = img.axes
    out = _core_predict(bundles[task], x, axes)
    oc = 2 if task == "multichannel" else 1
    got = out[:oc] if task == "multichannel" else out[0]
    if task == "multichannel":
        ref = np.moveaxis(ref, 1, 0)  # ImageJ stores ZCYX
    inner = _interior(bundles[task])
    assert got.shape == ref.shape
    assert np.abs(got[inner] - ref[inner]).max() <= 1e-4


def test_a_2d_model_trained_on_volumes_is_scaled_over_the_volume_in_its_bundle(runs, bundles, data, tmp_path):
    """The bundle of a 2D model trained on volumes takes the volume (scale_range over z, y, x as in training),
    so a dim plane is not stretched: bioimage.io's runner equals fmc-ij on every plane. Plane-by-plane scaling
    (what the bundle did before) differs on the dim plane."""
    rdf = yaml.safe_load(zipfile.ZipFile(bundles["care2d"]).read("rdf.yaml"))
    scale = [op for op in rdf["inputs"][0]["preprocessing"] if op["id"] == "scale_range"][0]
    assert scale["kwargs"]["axes"] == ["z", "y", "x"]
    img = imread(_enlarged(_input("care2d", data, tmp_path), tmp_path, "care2d", bundles["care2d"]))
    vol = img.data.astype(np.float32)
    vol[0] *= 0.05  # a dim first plane
    imwrite(tmp_path / "in" / "dim.tif", vol, img.meta)
    ref, _, _ = _predict(load_predictor(runs["care2d"]), tmp_path / "in" / "dim.tif", tmp_path / "o" / "dim.tif",
                         gate=False)  # fmt: skip
    got = _core_predict(bundles["care2d"], vol, "ZYX")[0]
    inner = _interior(bundles["care2d"])
    assert np.abs(got[inner] - ref[inner]).max() <= 1e-4
    from fmc_ij.norm import Normalizer

    p = load_predictor(runs["care2d"])
    with torch.no_grad():
        per_plane = p.nets[0](torch.from_numpy(Normalizer.fit(vol[0])(vol[0]))[None, None]).numpy()[0, 0]
    assert np.abs(np.maximum(per_plane, 0)[inner[2:]] - ref[0][inner[2:]]).max() > 0.05


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("distributed", reason="the dask extra is not installed (pip install 'fmc-ij[dask]')")
    from fmc_ij.predict.distributed import dask_client

    with dask_client(workers=1) as c:
        yield c


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_dask_by_file_and_by_tile_predicts_like_one_process(task, runs, data, client, tmp_path):
    from fmc_ij.predict.distributed import predict_file_dask, predict_files_dask

    src = _input(task, data, tmp_path)
    run = runs[task]
    ref, ref_unc, ref_meta = _predict(load_predictor(run), src, tmp_path / "run" / src.name)
    files = predict_files_dask(client, run, [src], tmp_path / "files", output="normalized")
    by_file = imread(files[0])
    assert by_file.shape == ref_meta["shape"] and np.abs(by_file.data - ref).max() <= 1e-6
    if task == "perchannel":
        return  # one file: routed to its channel's model above; tiles need one model
    tiles = predict_file_dask(client, run, src, tmp_path / "tiles" / src.name, output="normalized", progress=False)
    by_tile = imread(tiles[0])
    assert by_tile.meta.spacing == ref_meta["spacing"] and np.abs(by_tile.data - ref).max() <= 1e-6


def test_contract_records_the_training_data(runs):
    m = read_model(runs["care3d"])
    assert not isinstance(m, ChannelModels)
    c = m.contract
    assert c.task == "restore" and c.output_floor == -0.25 and c.data.axes == "ZYX"
    assert c.data.voxel_size == pytest.approx([1.0, 0.4, 0.4]) and c.data.unit in ("um", "µm", "micron")
    assert c.data.input_range and c.data.input_range[1] > c.data.input_range[0]
    assert sorted(c.data.channels) == ["membrane", "nucleus"] and c.provenance.step == 2
    iso = read_model(runs["isotropic"])
    assert iso.contract.task == "isotropic"  # type: ignore[union-attr]
    mc = read_model(runs["multichannel"])
    assert mc.contract.channels == ["nucleus", "membrane"]  # type: ignore[union-attr]


def test_models_written_before_contracts_still_load(runs, tmp_path):
    """A model.pt of the earlier layout (config only, no contract) reads with the same task, floor and
    percentiles."""
    saved = torch.load(runs["care3d"] / "model.pt", weights_only=False)
    old = {"format": "fmc-ij-model/1", "config": saved["config"], "state_dict": saved["state_dict"], "step": 2}
    (tmp_path / "old").mkdir()
    torch.save(old, tmp_path / "old" / "model.pt")
    m = read_model(tmp_path / "old")
    assert m.contract.output_floor == -0.25 and m.contract.task == "restore"  # type: ignore[union-attr]
