"""bioimage.io export: bundles pass bioimage.io's own model test, TorchScript = state dict, tiling on new sizes,
deepImageJ-compatible rdf.yaml, and hostile bundles are refused."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip(
    "bioimageio.core", reason="the bioimageio extra is not installed (pip install 'fmc-ij[bioimageio]')"
)

from fmc_ij.errors import FmcInputError  # noqa: E402
from fmc_ij.export import export  # noqa: E402
from fmc_ij.model_io import load_bundle, safe_extract  # noqa: E402
from fmc_ij.nn.factory import ModelConfig, build_model  # noqa: E402
from fmc_ij.train.checkpoint import save_model  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def _run(tmp_path: Path, ndim: int, probabilistic: bool = False) -> Path:
    torch.manual_seed(0)
    mc = ModelConfig(ndim=ndim, depth=2, base=4, probabilistic=probabilistic)
    mc = mc.resolve_pool((1.0, 0.4, 0.4)) if ndim == 3 else mc
    loss = {"laplace": 1.0} if probabilistic else {"mae": 1.0}
    cfg = {"model": mc.model_dump(mode="json"), "loss": loss, "steps": 1,
           "data": {"root": None, "patch": [16, 64, 64][-ndim:], "batch": 1, "pmin": 2.0, "pmax": 99.8},
           "optim": {"name": "adamw", "lr": 4e-4}}  # fmt: skip
    run = tmp_path / f"run{ndim}d{'p' if probabilistic else ''}"
    save_model(run / "model.pt", build_model(mc), cfg, step=1, metrics={"val_n_ssim": 0.5})
    return run


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[int, Path]:
    tmp = tmp_path_factory.mktemp("bmz")
    rng = np.random.default_rng(0)
    out = {}
    for nd, shape in ((2, (160, 150)), (3, (40, 90, 80))):
        sample = (rng.random(shape) * 1000 + 100).astype(np.float32)
        target = sample * 2 if nd == 3 else None  # the cover shows input | prediction (| target)
        out[nd] = export(_run(tmp, nd), tmp / f"m{nd}d.zip", sample=sample, target=target)  # runs test_model
    return out


def test_bundles_pass_the_official_cli_test(bundles):
    res = subprocess.run([sys.executable, "-m", "bioimageio.core", "test", str(bundles[3])],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    for nd, z in bundles.items():
        rdf = yaml.safe_load(zipfile.ZipFile(z).read("rdf.yaml"))
        assert rdf["format_version"] == "0.5.10" and rdf["documentation"] == "README.md"  # deepImageJ reads these
        assert rdf["covers"] == ["cover.png"] and set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
        ids = [a.get("id") for a in rdf["inputs"][0]["axes"][2:]]
        assert ids == ["z", "y", "x"][-nd:]
        from fmc_ij.fiji import bundle_problems, min_image_size

        assert bundle_problems(rdf) == []  # what deepImageJ 3.1 / JDLL 0.6.1 need: fixed tiles, clip, nickname...
        assert all(isinstance(a["size"], int) for a in rdf["inputs"][0]["axes"][2:])
        assert rdf["config"]["bioimageio"]["nickname"] == f"fmc-ij-care-{nd}d-run{nd}d"
        assert min_image_size(rdf) is not None


def test_torchscript_equals_state_dict_and_tiles_new_sizes(bundles, tmp_path):
    from bioimageio.core import Tensor, load_model_description, predict

    for nd, z in bundles.items():
        rdf, state = load_bundle(z, tmp_path / f"x{nd}")
        root = tmp_path / f"x{nd}"
        x = torch.from_numpy(np.load(root / "test_input.npy"))
        kw = rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
        net = build_model(ModelConfig(arch="care", **{k: v for k, v in kw.items()})).eval()
        net.load_state_dict(state)
        scripted = torch.jit.load(str(root / "weights_torchscript.pt")).eval()
        with torch.no_grad():
            assert (net(x) - scripted(x)).abs().max() <= 1e-4
        # A size never seen in training or in the test tensors, predicted in blocks by bioimageio.core.
        descr = load_model_description(z)
        tile = [a["size"] for a in rdf["inputs"][0]["axes"][2:]]
        shape = (*tile[:-1], tile[-1] + 13)  # two blocks, the second ragged (more blocks only cost time)
        img = np.random.default_rng(1).random(shape).astype(np.float32)
        dims = ("batch", "channel", *("z", "y", "x")[-nd:])
        block = dict(zip(("z", "y", "x")[-nd:], tile))  # the bundle's fixed tile, halo included
        sample = predict(model=descr, inputs={"raw": Tensor.from_numpy(img[None, None], dims=dims)},
                         input_block_shape={"raw": block})  # fmt: skip
        out = sample.members["restored"].data.values
        assert out.shape[-nd:] == shape and np.isfinite(out).all()


def test_hostile_bundles_are_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../etc/escape.txt", "x")
    with pytest.raises(FmcInputError, match="refusing zip entry"):
        safe_extract(evil, tmp_path / "out")
    assert not (tmp_path / "etc").exists()

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"w": Boom()}, buf, pickle_module=pickle)
    pk = tmp_path / "pickled.zip"
    with zipfile.ZipFile(pk, "w") as z:
        z.writestr("rdf.yaml", yaml.safe_dump({"weights": {"pytorch_state_dict": {"source": "weights.pt"}}}))
        z.writestr("weights.pt", buf.getvalue())
    with pytest.raises(FmcInputError, match="not a plain state dict"):
        load_bundle(pk, tmp_path / "pk")


def test_cli_export_and_validate(bundles, tmp_path, capsys):
    from fmc_ij.cli import main

    main(["validate", str(bundles[2])])  # returns normally when the bundle passes
    assert capsys.readouterr().out.strip().endswith("passed")
    for argv, msg in [
        (["export", str(tmp_path / "nope"), "--out", str(tmp_path / "b.zip")], "no such model"),
        (["export", str(tmp_path), "--out", str(tmp_path / "b.tif")], "is a .zip"),
        (["validate", str(tmp_path / "missing.zip")], "no such bundle"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and msg in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "b.zip").exists()


@pytest.mark.parametrize("channel", ["nucleus", "membrane"])
def test_shipped_demo_bundles_pass_and_state_their_scores(channel):
    from bioimageio.core import test_model

    z = Path(__file__).resolve().parents[1] / "models" / f"fmc-ij-care3d-{channel}.zip"
    assert z.is_file(), "build the demo bundles with `make models`"
    assert z.stat().st_size <= 10 * 2**20
    readme = zipfile.ZipFile(z).read("README.md").decode()
    assert "Held-out N_SSIM" in readme and "new random studies" in readme and "Where not to trust it" in readme
    from fmc_ij.model_io import read_model

    gate = read_model(z).contract.calibration.gate  # what the gate needs travels in the bundle
    assert gate is not None and gate.in_domain and min(gate.foreground) < max(gate.foreground)
    assert test_model(z).status == "passed"


def test_predict_from_a_bundle_equals_the_run(tmp_path):
    from fmc_ij.predict import load_predictor, predict_array

    run = _run(tmp_path, 3)
    img = (np.random.default_rng(2).random((34, 70, 66)) * 1000).astype(np.float32)
    z = export(run, tmp_path / "b.zip", sample=img)
    a = predict_array(load_predictor(run), img, progress=False).image
    b = predict_array(load_predictor(z), img, progress=False).image
    assert np.abs(a - b).max() <= 1e-6


def test_probabilistic_bundle_floors_the_mean_not_the_log_scale(tmp_path):
    from fmc_ij.predict import load_predictor, predict_array

    run = _run(tmp_path, 2, probabilistic=True)
    img = (np.random.default_rng(4).random((70, 66)) * 1000).astype(np.float32)
    z = export(run, tmp_path / "p.zip", sample=img)  # passes test_model: the floor lives in the network
    rdf = yaml.safe_load(zipfile.ZipFile(z).read("rdf.yaml"))
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["mean_floor"] == 0.0
    post = [op["id"] for op in rdf["outputs"][0].get("postprocessing", [])]
    assert "clip" not in post  # a clip would also clip the log-scale channel
    a, b = (predict_array(load_predictor(m), img, progress=False) for m in (run, z))
    assert np.abs(a.image - b.image).max() <= 1e-6 and np.abs(a.uncertainty - b.uncertainty).max() <= 1e-6


def test_channel_name_and_isotropic_task_travel_into_the_bundle(tmp_path):
    """A one-channel model (fmc-ij train --per-channel) names its input channel in rdf.yaml; an isotropic model's
    README says how to apply it."""
    run = _run(tmp_path, 2)
    saved = torch.load(run / "model.pt", weights_only=False)
    saved["config"]["data"].update(channels=["nucleus"], mode="isotropic")
    net = build_model(ModelConfig(**saved["config"]["model"]))
    net.load_state_dict(saved["state_dict"])
    save_model(run / "model.pt", net, saved["config"], step=1)  # the contract follows the config
    img = (np.random.default_rng(5).random((70, 66)) * 1000).astype(np.float32)
    z = export(run, tmp_path / "c.zip", sample=img)
    rdf = yaml.safe_load(zipfile.ZipFile(z).read("rdf.yaml"))
    assert rdf["inputs"][0]["axes"][1]["channel_names"] == ["nucleus"]
    assert "Isotropic restoration" in zipfile.ZipFile(z).read("README.md").decode()


class _Smooth(torch.nn.Module):
    """Another tool's restoration network: a fixed 3x3 mean filter (same-size output)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.conv.weight.data.fill_(1 / 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _foreign_bundle(tmp_path: Path) -> Path:
    """A bioimage.io model built without fmc-ij (TorchScript weights, scale_range 1 / 99 per sample, no fmc-ij tag)."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as s

    d = tmp_path / "foreign"
    d.mkdir()
    net = _Smooth().eval()
    x = np.random.default_rng(1).random((1, 1, 64, 64)).astype(np.float32)
    lo, hi = np.percentile(x, (1, 99))
    y = net(torch.from_numpy(((x - lo) / (hi - lo + 1e-6)).astype(np.float32))).detach().numpy()
    np.save(d / "in.npy", x)
    np.save(d / "out.npy", y)
    torch.jit.script(net).save(str(d / "w.pt"))
    (d / "README.md").write_text("# smooth\n")
    ax = [s.BatchAxis(), s.ChannelAxis(channel_names=[s.Identifier("raw")])]
    descr = s.ModelDescr(
        name="another tools smoother", description="a 3x3 mean filter", authors=[s.Author(name="someone")],
        cite=[s.CiteEntry(text="none", doi=s.Doi("10.1038/s41592-018-0216-7"))], license=s.LicenseId("MIT"),
        documentation=s.FileDescr(source=d / "README.md"), tags=["denoising"],
        inputs=[s.InputTensorDescr(
            id=s.TensorId("input0"), test_tensor=s.FileDescr(source=d / "in.npy"),
            axes=ax + [s.SpaceInputAxis(id=s.AxisId(a), size=s.ParameterizedSize(min=16, step=16)) for a in "yx"],
            preprocessing=[s.ScaleRangeDescr(kwargs=s.ScaleRangeKwargs(axes=[s.AxisId("y"), s.AxisId("x")],
                                                                       min_percentile=1, max_percentile=99))])],
        outputs=[s.OutputTensorDescr(
            id=s.TensorId("output0"), test_tensor=s.FileDescr(source=d / "out.npy"),
            axes=[s.BatchAxis(), s.ChannelAxis(channel_names=[s.Identifier("smooth")])] + [
                s.SpaceOutputAxis(id=s.AxisId(a), size=s.SizeReference(tensor_id=s.TensorId("input0"),
                                                                       axis_id=s.AxisId(a))) for a in "yx"])],
        weights=s.WeightsDescr(torchscript=s.TorchscriptWeightsDescr(
            source=d / "w.pt", pytorch_version=s.Version(torch.__version__.split("+")[0]))),
    )  # fmt: skip
    return save_bioimageio_package(descr, output_path=tmp_path / "foreign.zip")


def test_predict_runs_another_tools_bundle_through_bioimageio_core(tmp_path):
    """`fmc-ij predict --model THEIR.zip` runs a bioimage.io model not made by fmc-ij with its own preprocessing
    (here per-sample 1 / 99 percentiles) through bioimageio.core, plane by plane on a volume, float32 out."""
    from scipy import ndimage

    from fmc_ij.cli import main
    from fmc_ij.io import ImageMeta, imread, imwrite
    from fmc_ij.predict import load_predictor
    from fmc_ij.predict.foreign import BundlePredictor

    z = _foreign_bundle(tmp_path)
    assert isinstance(load_predictor(z), BundlePredictor)
    vol = (np.random.default_rng(2).random((3, 80, 96)) * 1000).astype(np.uint16)
    imwrite(tmp_path / "in" / "vol.tif", vol, ImageMeta(axes="ZYX", spacing={"Z": 1.0, "Y": 0.2, "X": 0.2}))
    main(["predict", "--model", str(z), str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    got = imread(tmp_path / "out" / "vol.tif")
    assert got.data.dtype == np.float32 and got.shape == vol.shape and got.meta.spacing["Y"] == 0.2
    for k, plane in enumerate(vol.astype(np.float32)):
        lo, hi = np.percentile(plane, (1, 99))
        ref = ndimage.uniform_filter((plane - lo) / (hi - lo + 1e-6), 3, mode="constant")
        np.testing.assert_allclose(got.data[k, 1:-1, 1:-1], ref[1:-1, 1:-1], atol=1e-4)
    with pytest.raises(FmcInputError, match="needs an fmc-ij model"):
        export(z, tmp_path / "again.zip")


class _Net(torch.nn.Module):
    """Another tool's network: two 3x3 convolutions (receptive radius 2), fully convolutional."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _zoo_like_bundle(tmp_path: Path) -> Path:
    """A bundle shaped like the zoo's unet2d_nuclei_broad: a fixed input size, zero-mean-unit-variance over the
    sample, sigmoid after, an output halo, local TorchScript weights and a state-dict entry that points to a
    remote URL (never reachable here). Written by hand, as another tool would."""
    d = tmp_path / "zoo"
    d.mkdir()
    net = _Net().eval()
    x = (np.random.default_rng(7).random((1, 1, 64, 64)) * 4000 + 100).astype(np.float32)
    xn = (x - x.mean()) / (x.std() + 1e-6)
    with torch.no_grad():
        y = torch.sigmoid(net(torch.from_numpy(xn))).numpy()
    np.save(d / "test_input.npy", x)
    np.save(d / "test_output.npy", y)
    torch.jit.script(net).save(str(d / "weights.pt"))
    (d / "README.md").write_text("# zoo-like\n")
    space = [{"type": "space", "id": a, "size": 64} for a in "yx"]
    out_space = [{"type": "space", "id": a, "halo": 8, "size": {"tensor_id": "raw", "axis_id": a}} for a in "yx"]
    rdf = {
        "format_version": "0.5.4", "type": "model", "name": "zoo like", "description": "a zoo-shaped model",
        "authors": [{"name": "someone"}], "cite": [{"text": "none", "doi": "10.1038/s41592-018-0216-7"}],
        "license": "MIT", "documentation": "README.md", "tags": ["segmentation"],
        "inputs": [{"id": "raw", "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["raw"]}] + space,
                    "test_tensor": {"source": "test_input.npy"},
                    "preprocessing": [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"]}}]}],
        "outputs": [{"id": "probability",
                     "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["p"]}] + out_space,
                     "test_tensor": {"source": "test_output.npy"}, "postprocessing": [{"id": "sigmoid"}]}],
        "weights": {
            "pytorch_state_dict": {"source": "http://files.example.invalid/weights.torch", "sha256": "0" * 64,
                                   "architecture": {"source": "http://files.example.invalid/arch.py",
                                                    "callable": "Net", "sha256": "0" * 64},
                                   "pytorch_version": "1.5.1"},
            "torchscript": {"source": "weights.pt", "parent": "pytorch_state_dict", "pytorch_version": "2.5.1"},
        },
    }  # fmt: skip
    (d / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    z = tmp_path / "zoo_like.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in d.iterdir():
            zf.write(f, f.name)
    return z


@pytest.fixture()
def offline(monkeypatch):
    """No network: every socket connection and name look-up fails at once."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_a_zoo_shaped_bundle_runs_offline_and_reproduces_its_test_output(tmp_path, offline):
    """Another tool's bundle with a remote state-dict entry runs offline on its local TorchScript weights, scales the
    whole sample before the network, reproduces its own test output, and on another image equals one whole-image
    pass of the network (tiles of its fixed size lie inside the image, each voxel from the tile where it has most
    context)."""
    from fmc_ij.cli import main
    from fmc_ij.io import ImageMeta, imread, imwrite

    z = _zoo_like_bundle(tmp_path)
    with zipfile.ZipFile(z) as zf:
        x, y = (np.load(zf.open(f"test_{k}.npy"))[0, 0] for k in ("input", "output"))
    imwrite(tmp_path / "in" / "test.tif", x, ImageMeta(axes="YX"))
    big = (np.random.default_rng(1).random((150, 131)) * 3000).astype(np.float32)
    imwrite(tmp_path / "in" / "big.tif", big, ImageMeta(axes="YX"))
    main(["predict", "--model", str(z), str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    assert np.abs(imread(tmp_path / "out" / "test.tif").data - y).max() <= 1e-5
    net = _Net().eval()
    with torch.no_grad():
        whole = torch.sigmoid(net(torch.from_numpy((big - big.mean()) / (big.std() + 1e-6))[None, None]))[0, 0]
    assert np.abs(imread(tmp_path / "out" / "big.tif").data - whole.numpy()).max() <= 1e-5


@pytest.mark.parametrize("name", ["unet2d_diff_output_shape", "unet2d_fixed_shape", "unet2d_multi_tensor",
                                  "upsample_test_model"])  # fmt: skip
def test_the_spec_teams_example_bundles_run_or_say_why_in_one_line(name, tmp_path, capsys, offline):
    """The bioimage.io spec team's example models (real files, ../shared/data/real/bioimageio_foreign): fmc-ij runs
    one-input same-grid models with local TorchScript/ONNX weights; each of these is something else, and says so."""
    from fmc_ij.cli import main
    from fmc_ij.io import ImageMeta, imwrite

    folder = REAL / "bioimageio_foreign" / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not present (the shared real-data folder)")
    imwrite(tmp_path / "in" / "x.tif", np.zeros((64, 64), np.float32) + 1, ImageMeta(axes="YX"))
    with pytest.raises(SystemExit) as e:
        main(["predict", "--model", str(folder), str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "internal error" not in err, err
    why = {"unet2d_diff_output_shape": "not on the input's grid", "unet2d_fixed_shape": "no TorchScript or ONNX",
           "unet2d_multi_tensor": "takes 2 inputs", "upsample_test_model": "not on the input's grid"}[name]  # fmt: skip
    assert why in err


ZOO_ENV = "FMC_IJ_ZOO_BUNDLE"


@pytest.mark.skipif(not os.environ.get(ZOO_ENV), reason=f"set {ZOO_ENV} to a bioimage.io zoo model zip (e.g. the "
                    "spec's unet2d_nuclei_broad, zipped) to check it offline")  # fmt: skip
def test_a_real_zoo_bundle_reproduces_its_test_output_offline(tmp_path, offline):
    from fmc_ij.predict import load_predictor

    z = Path(os.environ[ZOO_ENV])
    p = load_predictor(z, "cpu")
    descr = p.descr
    with zipfile.ZipFile(z) as zf:
        x = np.load(zf.open(str(descr.inputs[0].test_tensor.source.path)))
        y = np.load(zf.open(str(descr.outputs[0].test_tensor.source.path)))
    got = p.predict(x.reshape(x.shape[-2:]), "YX")
    assert np.abs(got - y.reshape(got.shape)).max() <= 1e-3
