"""Training: configs, data pipeline, runs that learn, exact resume after SIGKILL, DDP (gloo) = 1 process."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fmc_ij.cli import main
from fmc_ij.data import PatchBatches, axial_degrade, isotropic_pairs, load_pairs, split_by_specimen
from fmc_ij.errors import FmcInputError
from fmc_ij.synthetic.dataset import simulate_lightsheet_dataset
from fmc_ij.synthetic.lightsheet import LightSheetConfig
from fmc_ij.train import PRESETS, TrainConfig, train
from fmc_ij.train.checkpoint import LAST, load_checkpoint

ENV = {**os.environ, "FMC_IJ_PROGRESS": "0", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def lightsheet(tmp_path_factory) -> Path:
    """Three small specimens (both channels): enough for a split by specimen."""
    root = tmp_path_factory.mktemp("ls")
    return simulate_lightsheet_dataset(root, n=3, cfg=LightSheetConfig(shape=(16, 64, 64)), seed=3)


def tiny(root: Path, **over) -> TrainConfig:
    base = {"data": {"root": str(root), "patch": [8, 32, 32], "batch": 2, "val_crop": [16, 64, 64]},
            "model": {"base": 4, "depth": 2}, "steps": 6, "val_every": 3, "threads": 1,
            "optim": {"warmup_steps": 0}}  # fmt: skip
    return TrainConfig.from_preset("care3d", **base).with_overrides(over)


# -- config ----------------------------------------------------------------------------------------------
def test_presets_validate_and_yaml_roundtrips(tmp_path):
    for name in PRESETS:
        cfg = TrainConfig.from_preset(name)
        assert cfg.preset == name and len(cfg.data.patch) == cfg.model.ndim
        cfg.save(tmp_path / f"{name}.yaml")
        assert TrainConfig.load(tmp_path / f"{name}.yaml") == cfg
    assert TrainConfig.from_preset("gan3d").gan is not None
    assert oct((tmp_path / "care3d.yaml").stat().st_mode & 0o777) != oct(0o600)  # readable like any file


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"data": {"patch": [64, 64]}}, "data.patch has 2 sizes but the model is 3D"),
        ({"loss": {"laplace": 1.0}}, "laplace loss and model.probabilistic"),
        ({"loss": {"mae": 0.0}}, "non-zero weight"),
        ({"optim": {"lr": -1}}, "optim.lr"),
        ({"stepz": 3}, "stepz"),
    ],
)
def test_bad_config_is_one_clear_error(over, match):
    with pytest.raises(FmcInputError, match=match):
        TrainConfig.from_preset("care3d", **over)


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(FmcInputError, match="unknown preset 'care4d'; choose one of care2d"):
        TrainConfig.from_preset("care4d")
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(FmcInputError, match="not valid YAML"):
        TrainConfig.load(tmp_path / "bad.yaml")


# -- data ------------------------------------------------------------------------------------------------
def test_lazy_pairs_split_by_specimen_and_deterministic_batches(lightsheet):
    pairs = load_pairs(lightsheet)
    assert len(pairs) == 6 and all(isinstance(p.low, np.memmap) for p in pairs)  # opened lazily
    train_p, val_p = split_by_specimen(pairs, val_fraction=0.3, seed=0)
    assert {p.specimen for p in train_p}.isdisjoint({p.specimen for p in val_p})
    assert len(val_p) == 2 and {p.channel for p in val_p} == {"nucleus", "membrane"}  # both channels go together
    b = PatchBatches(train_p, (8, 32, 32), seed=1)
    x, y = b.batch(5, range(4))
    assert x.shape == y.shape == (4, 1, 8, 32, 32) and x.dtype == np.float32
    x2, _ = b.batch(5, range(4))
    np.testing.assert_array_equal(x, x2)  # a batch is a function of (seed, step)
    half0, _ = b.batch(5, range(2))
    half1, _ = b.batch(5, range(2, 4))
    np.testing.assert_array_equal(np.concatenate([half0, half1]), x)  # two ranks together = one process
    assert not np.array_equal(b.batch(6, range(4))[0], x)
    with pytest.raises(FmcInputError, match="only one specimen"):
        split_by_specimen([p for p in pairs if p.specimen == pairs[0].specimen])
    with pytest.raises(FmcInputError, match="does not fit"):
        PatchBatches(train_p, (32, 32, 32))


def test_few_specimens_are_split_by_region_so_every_specimen_trains(lightsheet, tmp_path):
    from fmc_ij.data import split_pairs, stack_channels
    from fmc_ij.data.split import Window, window
    from fmc_ij.train.config import split_data, stored_config

    pairs = load_pairs(lightsheet)  # 3 specimens x 2 channels of 16x64x64
    train_p, val_p = split_pairs(pairs, val_fraction=0.25, patch=(8, 32, 32))
    assert [p.specimen for p in train_p] == [p.specimen for p in val_p] == [p.specimen for p in pairs]
    for p, t, v in zip(pairs, train_p, val_p):
        # a slab at the end of a lateral axis; the two parts tile the pair and share nothing
        assert t.shape == (16, 48, 64) and v.shape == (16, 16, 64) and v.name.endswith("@val")
        np.testing.assert_array_equal(np.concatenate([np.asarray(t.low), np.asarray(v.low)], 1), np.asarray(p.low))
        assert t.norm_low == p.norm_low  # the whole image's normalisation, as prediction will use
        assert t.foreground.shape[1] * t.stride <= 48 + t.stride
    b = PatchBatches(train_p, (8, 32, 32), seed=1)
    assert b.batch(0, range(4))[0].shape == (4, 1, 8, 32, 32)
    # many specimens, explicit names, or mode specimen: whole specimens as before
    for kw in ({"mode": "specimen"}, {"val_names": [pairs[0].specimen]}):
        t, v = split_pairs(pairs, val_fraction=0.3, patch=(8, 32, 32), **kw)
        assert {p.specimen for p in t}.isdisjoint({p.specimen for p in v})
    assert split_pairs(pairs, val_fraction=0.0, patch=(8, 32, 32))[1] == []
    with pytest.raises(FmcInputError, match="too few"):
        split_pairs(pairs, val_fraction=0.25, patch=(8, 64, 64), mode="region")
    # stacked channels are cut together
    t, v = split_pairs(stack_channels(pairs), val_fraction=0.25, patch=(8, 32, 32))
    assert t[0].shape == (16, 48, 64) and t[0].channels == ["membrane", "nucleus"]
    # a lazy array is windowed, not read whole
    lazy = Window(np.arange(5 * 6 * 7).reshape(5, 6, 7), 1, 2, 5)
    assert lazy.shape == (5, 3, 7)
    np.testing.assert_array_equal(lazy[1:3, 1:, ::2], np.arange(210).reshape(5, 6, 7)[1:3, 3:5, ::2])
    np.testing.assert_array_equal(np.asarray(lazy), np.arange(210).reshape(5, 6, 7)[:, 2:5])
    assert window(pairs[0], 2, 0, 32, "").shape == (16, 64, 32)
    # runs trained before val_split held out whole specimens: recalibration keeps that validation set
    cfg = TrainConfig.from_preset("care3d", data={"root": str(lightsheet), "patch": [8, 32, 32]})
    old = cfg.model_dump(mode="json")
    del old["data"]["val_split"]
    assert stored_config(old).data.val_split == "specimen"
    assert stored_config(cfg.model_dump(mode="json")).data.val_split == "auto"
    t, v = split_data(pairs, stored_config(old))
    assert {p.specimen for p in t}.isdisjoint({p.specimen for p in v})


def test_isotropic_pairs_degrade_one_lateral_axis():
    rng = np.random.default_rng(0)
    vol = rng.random((4, 64, 64)).astype(np.float32)
    low, high = isotropic_pairs(vol, (1.6, 0.2, 0.2))
    assert low.shape == high.shape == vol.shape
    np.testing.assert_array_equal(high, vol)

    def roughness(a: np.ndarray, axis: int) -> float:
        return float(np.abs(np.diff(a, axis=axis)).mean())

    # Even planes are degraded along X, odd planes along Y: the degraded axis loses its fine structure.
    assert roughness(low[0], -1) < 0.3 * roughness(low[0], -2)
    assert roughness(low[1], -2) < 0.3 * roughness(low[1], -1)
    flat = axial_degrade(np.full((8, 40), 3.0), 4.0, 2.0)
    np.testing.assert_allclose(flat, 3.0, rtol=1e-6)  # degradation keeps intensities
    with pytest.raises(FmcInputError, match="already about isotropic"):
        isotropic_pairs(vol, (0.25, 0.2, 0.2))


# -- training runs ---------------------------------------------------------------------------------------
def test_care3d_learns_and_writes_a_complete_run(lightsheet, tmp_path):
    cfg = tiny(lightsheet, steps=30, val_every=10, optim={"lr": 3e-3})
    (res,) = train(cfg, tmp_path / "run")
    out = tmp_path / "run"
    for f in ("config.yaml", "model.pt", "log.csv", "loss.png", "validation.png", "checkpoints/last.pt",
              "checkpoints/best.pt"):  # fmt: skip
        assert (out / f).is_file(), f
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [10, 20, 30]
    assert float(rows[-1]["loss"]) < 0.8 * float(rows[0]["loss"])
    assert {"val_n_ssim_nucleus", "val_n_ssim_membrane"} <= set(rows[0])
    assert res.stopped == "steps" and res.best_step in (10, 20, 30)
    # model.pt rebuilds the best network from its config alone
    from fmc_ij.nn.factory import ModelConfig, build_model

    saved = torch.load(out / "model.pt", weights_only=False)
    net = build_model(ModelConfig(**saved["config"]["model"]))
    net.load_state_dict(saved["state_dict"])
    assert saved["step"] == res.best_step
    with pytest.raises(FmcInputError, match="not empty; pass --resume"):
        train(cfg, out)


def test_gan2d_trains_both_networks(lightsheet, tmp_path):
    cfg = TrainConfig.from_preset(
        "gan2d", data={"root": str(lightsheet), "patch": [32, 32], "batch": 2, "val_crop": [2, 64, 64]},
        model={"base": 4, "depth": 2}, gan={"pretrain_steps": 2, "discriminator": {"base": 4, "blocks": 3}},
        steps=6, val_every=3, threads=1,
    )  # fmt: skip
    (res,) = train(cfg, tmp_path / "gan")
    assert res.history[-1]["d_loss"] is not None and np.isfinite(res.history[-1]["d_loss"])
    last = load_checkpoint(tmp_path / "gan" / "checkpoints" / LAST)
    assert "disc" in last and "disc_optimizer" in last and last["step"] == 6


def test_ensemble_members_differ(lightsheet, tmp_path):
    results = train(tiny(lightsheet, ensemble=2, steps=2, val_every=2), tmp_path / "ens")
    a, b = (load_checkpoint(r.out / "checkpoints" / LAST)["model"] for r in results)
    assert [r.out.name for r in results] == ["member_0", "member_1"]
    assert not torch.equal(a["head.weight"], b["head.weight"])


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "fmc_ij", "train", *args]


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_weights(lightsheet, tmp_path):
    args = ["--data", str(lightsheet), "--patch", "8,32,32", "--batch", "2", "--steps", "24", "--deterministic",
            "--set", "model.base=4", "--set", "val_every=8", "--set", "checkpoint_every=2", "--set", "threads=1",
            "--set", "data.val_crop=[16,64,64]"]  # fmt: skip
    full = tmp_path / "full"
    subprocess.run(_cli([*args, "--out", str(full)]), check=True, env=ENV, timeout=300)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(_cli([*args, "--out", str(cut)]), env=ENV)
    last = cut / "checkpoints" / LAST
    t0 = time.time()
    killed_at = None
    while time.time() - t0 < 240 and proc.poll() is None:
        if last.is_file():
            step = torch.load(last, weights_only=False)["step"]
            if step >= 6:
                proc.send_signal(signal.SIGKILL)
                killed_at = step
                break
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert load_checkpoint(last)["step"] < 24  # really interrupted mid-run
    subprocess.run(_cli([*args, "--out", str(cut), "--resume"]), check=True, env=ENV, timeout=300)
    a, b = load_checkpoint(full / "checkpoints" / LAST), load_checkpoint(last)
    assert a["step"] == b["step"] == 24
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one(lightsheet, tmp_path):
    """With BatchNorm: its statistics span both processes (fmc_ij.nn.syncbn), as one process sees the batch."""
    args = ["--data", str(lightsheet), "--patch", "8,32,32", "--batch", "4", "--steps", "8", "--deterministic",
            "--set", "model.base=4", "--set", "model.norm=true", "--set", "val_every=1", "--set",
            "data.val_fraction=0", "--set", "threads=1", "--set", "optim.warmup_steps=0",
            # float32: bf16 rounds a batch of 2 and one of 4 differently, noise Adam amplifies past float32's
            "--set", "optim.precision=fp32"]  # fmt: skip
    subprocess.run(_cli([*args, "--out", str(tmp_path / "one")]), check=True, env=ENV, timeout=300)
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fmc_ij",
           "train", *args, "--out", str(tmp_path / "two")]  # fmt: skip
    subprocess.run(ddp, check=True, env=ENV, timeout=300)

    def losses(run: str) -> np.ndarray:
        return np.array([float(r["loss"]) for r in csv.DictReader((tmp_path / run / "log.csv").open())])

    one, two = losses("one"), losses("two")
    assert len(one) == len(two) == 8
    # Same global batch, gradients averaged across processes: equal up to float32 summation order (which
    # BatchNorm on a batch of 4 and Adam amplify to ~1e-4 over 8 steps at lr 1e-3).
    np.testing.assert_allclose(two, one, rtol=1e-3)
    assert one[-3:].mean() < one[:3].mean()
    a, b = (torch.load(tmp_path / r / "model.pt", weights_only=False)["state_dict"] for r in ("one", "two"))
    assert any("running_var" in k for k in a)
    # BatchNorm saw the global batch's statistics (exactly so in tests/test_nn.py -k global_batchnorm; here the
    # weights themselves differ by float noise that Adam amplifies, and deep layers' variances follow them).
    for k in (k for k in a if "running_var" in k):
        np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), rtol=5e-2, err_msg=k)


def test_cli_train_errors_are_one_line(lightsheet, tmp_path, capsys):
    for argv, msg in [
        (["train", "--out", str(tmp_path / "r")], "no training data"),
        (["train", "--out", str(tmp_path / "r"), "--data", str(lightsheet), "--preset", "care9d"], "unknown preset"),
        (["train", "--out", str(tmp_path / "r"), "--data", str(tmp_path / "nope")], "no such folder"),
        (["train", "--out", str(tmp_path / "r"), "--set", "optim.lr"], "field=value"),
        (["train", "--out", str(tmp_path / "r"), "--config", "x.yaml", "--preset", "care3d"], "not both"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and msg in err and len(err.splitlines()) == 1, err


def test_time_limit_validates_the_last_step(lightsheet, tmp_path):
    """A run cut by --minutes before its first scheduled validation still validates and keeps a scored model."""
    (res,) = train(tiny(lightsheet, steps=1000, val_every=500, max_minutes=0.0005), tmp_path / "t")
    assert res.stopped == "time-limit" and res.step < 500
    assert [r["step"] for r in res.history] == [res.step] and "val_n_ssim" in res.history[0]
    saved = torch.load(tmp_path / "t" / "model.pt", weights_only=False)
    assert saved["step"] == res.step and "val_n_ssim" in saved["metrics"]


def test_time_clock_decays_the_learning_rate_over_the_budget(lightsheet, tmp_path):
    """optim.clock 'time' (what `fmc-ij train --minutes` without --steps does): the cosine runs over the wall-clock
    budget, so a run stopped by its time limit ends at the floor learning rate, not at the start of the decay."""
    with pytest.raises(FmcInputError, match="set max_minutes"):
        tiny(lightsheet, optim={"clock": "time"})
    cfg = tiny(lightsheet, steps=10**6, val_every=10**5, max_minutes=0.02, optim={"clock": "time", "lr": 1e-3})
    (res,) = train(cfg, tmp_path / "t")
    assert res.stopped == "time-limit" and res.step > 3
    lr = res.history[-1]["lr"]
    assert lr == pytest.approx(cfg.optim.min_lr_ratio * 1e-3, rel=0.05), lr  # fully decayed
    # the step clock with the same budget has barely started its cosine
    (res2,) = train(tiny(lightsheet, steps=10**6, val_every=10**5, max_minutes=0.02, optim={"lr": 1e-3}),
                    tmp_path / "s")  # fmt: skip
    assert res2.history[-1]["lr"] == pytest.approx(1e-3, rel=1e-3)


def test_cli_minutes_alone_trains_on_the_clock(lightsheet, tmp_path):
    main(["train", "--out", str(tmp_path / "m"), "--data", str(lightsheet), "--minutes", "0.02", "--set",
          "model.base=4", "--set", "data.patch=[8,32,32]", "--set", "data.val_crop=[16,64,64]"])  # fmt: skip
    cfg = TrainConfig.load(tmp_path / "m" / "config.yaml")
    assert cfg.optim.clock == "time" and cfg.max_minutes == 0.02


def test_init_fine_tunes_from_a_run_and_freezes_the_encoder(lightsheet, tmp_path):
    """--init starts from the given model's weights and architecture; --freeze-encoder keeps the contracting
    path exactly as it was while the decoder learns; a bundle works as a starting point too."""
    (base,) = train(tiny(lightsheet, steps=4), tmp_path / "base")
    start = torch.load(tmp_path / "base" / "model.pt", weights_only=False)["state_dict"]
    # a different architecture in the new config is replaced by the init model's
    cfg = tiny(lightsheet, steps=3, init=str(tmp_path / "base"), freeze_encoder=True, model={"base": 8})
    (ft,) = train(cfg, tmp_path / "ft")
    assert TrainConfig.load(tmp_path / "ft" / "config.yaml").model.base == 4
    tuned = load_checkpoint(tmp_path / "ft" / "checkpoints" / LAST)["model"]
    enc = [k for k in start if k.startswith(("down.", "bottom."))]
    dec = [k for k in start if k.startswith(("ups.", "up_blocks.", "head."))]
    assert enc and dec
    assert all(torch.equal(start[k], tuned[k]) for k in enc)
    assert any(not torch.equal(start[k], tuned[k]) for k in dec)
    with pytest.raises(FmcInputError, match="freeze_encoder fine-tunes a model"):
        tiny(lightsheet, freeze_encoder=True)
    with pytest.raises(FmcInputError, match="no such model"):
        train(tiny(lightsheet, init=str(tmp_path / "nope")), tmp_path / "bad")


def test_per_channel_models_train_and_predict_by_channel(lightsheet, tmp_path):
    """--per-channel trains one model per channel into RUN/<channel>; `fmc-ij predict --model RUN` sends each
    image to its channel's model (same result as that model alone); an image of unknown channel is one clear error."""
    from fmc_ij.io import ImageMeta, imread, imwrite
    from fmc_ij.predict import load_predictor, predict_files

    main(["train", "--out", str(tmp_path / "pc"), "--data", str(lightsheet), "--per-channel", "--steps", "2",
          "--set", "model.base=4", "--set", "data.patch=[8,32,32]", "--set", "data.val_crop=[16,64,64]"])  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "pc").iterdir()) == ["membrane", "nucleus"]
    src = tmp_path / "in"
    for ch in ("nucleus", "membrane"):
        img = imread(next(lightsheet.glob(f"image_*_{ch}_angle.tif")))
        imwrite(src / f"image_9_{ch}_angle.tif", img.data, img.meta)
    main(["predict", "--model", str(tmp_path / "pc"), "--out", str(tmp_path / "o"), str(src)])
    for ch in ("nucleus", "membrane"):
        alone = predict_files(load_predictor(tmp_path / "pc" / ch), [src / f"image_9_{ch}_angle.tif"],
                              tmp_path / f"o_{ch}", progress=False)[0]  # fmt: skip
        np.testing.assert_array_equal(imread(tmp_path / "o" / f"image_9_{ch}_angle.tif").data, imread(alone).data)
    imwrite(tmp_path / "anon" / "x.tif", img.data, ImageMeta(axes="ZYX"))
    with pytest.raises(FmcInputError, match="no channel in its metadata or name"):
        predict_files(load_predictor(tmp_path / "pc"), [tmp_path / "anon"], tmp_path / "o2", progress=False)
    with pytest.raises(FmcInputError, match="one model per channel"):
        train(tiny(lightsheet, init=str(tmp_path / "pc")), tmp_path / "bad")


def test_projection_care_trains_predicts_2d_and_exports_3d_to_2d(tmp_path):
    """ProjectionCARE end to end on the built-in curved epithelium: ZYX volumes + YX targets train the
    projection preset; `fmc-ij predict` writes the YX surface image (calibration kept); the bundle takes ZYX and
    returns YX, passes bioimage.io's model test, and predicts like the run."""
    pytest.importorskip("bioimageio.core", reason="needs the bioimageio extra: pip install 'fmc-ij[bioimageio]'")
    from fmc_ij.export import export
    from fmc_ij.io import imread
    from fmc_ij.predict import load_predictor, predict_array
    from fmc_ij.synthetic import SurfaceConfig, simulate_surface_dataset

    data = simulate_surface_dataset(tmp_path / "surf", n=3, cfg=SurfaceConfig(shape=(12, 64, 64)), seed=1)
    cfg = TrainConfig.from_preset("projection", data={"root": str(data), "patch": [12, 32, 32], "batch": 2},
                                  model={"base": 4, "proj_base": 4, "kernel": 3}, steps=3, val_every=3,
                                  threads=1)  # fmt: skip
    (res,) = train(cfg, tmp_path / "run")
    assert res.step == 3 and "val_n_ssim" in res.history[-1]  # scored against the maximum projection
    main(["predict", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "pred"), str(data / "volume")])
    out = imread(tmp_path / "pred" / "surface_0.tif")
    vol = imread(data / "volume" / "surface_0.tif")
    assert out.axes == "YX" and out.shape == vol.shape[1:] and out.meta.spacing == {"Y": 0.2, "X": 0.2}
    z = export(tmp_path / "run", tmp_path / "proj.zip", sample=vol.data.astype(np.float32))  # runs test_model
    import zipfile

    import yaml

    rdf = yaml.safe_load(zipfile.ZipFile(z).read("rdf.yaml"))
    assert [a.get("id", a["type"]) for a in rdf["inputs"][0]["axes"]][-3:] == ["z", "y", "x"]
    assert [a.get("id", a["type"]) for a in rdf["outputs"][0]["axes"]][-2:] == ["y", "x"]
    assert len(rdf["outputs"][0]["axes"]) == 4
    a = predict_array(load_predictor(tmp_path / "run"), vol.data, progress=False).image
    b = predict_array(load_predictor(z), vol.data, progress=False).image
    assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 1e-5
    with pytest.raises(FmcInputError, match="together"):
        TrainConfig.from_preset("projection", data={"mode": "paired"})


def test_multichannel_model_trains_predicts_and_exports_with_channel_names(lightsheet, tmp_path):
    """--multichannel: one network takes and returns both channels (stacked per specimen, each normalised on its
    own); predict accepts a CZYX image or a folder of one-channel files (grouped by specimen), tiled = whole; the
    bundle names both channels and reproduces the run."""
    import yaml

    from fmc_ij.data import stack_channels
    from fmc_ij.io import ImageMeta, imread, imwrite
    from fmc_ij.predict import load_predictor, predict_array, predict_file, predict_files

    pairs = load_pairs(lightsheet)
    stacked = stack_channels(pairs, ["nucleus", "membrane"])
    assert len(stacked) == 3 and stacked[0].channels == ["nucleus", "membrane"]
    b = PatchBatches(stacked, [8, 32, 32], seed=1, augment=False)
    x, y = b.item(0, 0)
    assert x.shape == y.shape == (2, 8, 32, 32)
    rng = np.random.default_rng([1, 0, 0])
    pick = stacked[int(rng.choice(3, p=b.weights))]
    for c in range(2):  # channel c of the stacked patch is channel c's own normalised data
        assert np.isclose(x[c].mean(), pick.parts[c].norm_low(pick.parts[c].low).mean(), atol=1.0)
    with pytest.raises(FmcInputError, match="no membrane pair"):
        stack_channels([p for p in pairs if not (p.channel == "membrane" and p.specimen == pairs[0].specimen)])

    run = tmp_path / "mc"
    main(["train", "--out", str(run), "--data", str(lightsheet), "--multichannel", "--channels", "nucleus,membrane",
          "--steps", "3", "--set", "model.base=4", "--set", "data.patch=[8,32,32]", "--set",
          "data.val_crop=[16,64,64]", "--set", "val_every=3"])  # fmt: skip
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["in_channels"] == saved["model"]["out_channels"] == 2
    assert saved["data"]["channels"] == ["nucleus", "membrane"]
    header = (run / "log.csv").read_text().splitlines()[0]
    assert "val_n_ssim_nucleus" in header and "val_n_ssim_membrane" in header
    p = load_predictor(run)
    assert p.channels == 2 and p.channel_names == ("nucleus", "membrane")

    src = tmp_path / "in"
    imgs = {ch: imread(next(lightsheet.glob(f"image_0_{ch}_angle.tif"))) for ch in ("nucleus", "membrane")}
    for ch, img in imgs.items():
        imwrite(src / f"image_0_{ch}_angle.tif", img.data, img.meta)
    stack = np.stack([imgs["nucleus"].data, imgs["membrane"].data])
    meta = imgs["nucleus"].meta.replace(axes="CZYX")
    imwrite(tmp_path / "czyx" / "stack.tif", stack, meta)
    whole = predict_array(p, stack.astype(np.float32), progress=False)
    tiled = predict_array(p, stack.astype(np.float32), tile=[32, 80, 72], progress=False)
    assert whole.image.shape == stack.shape
    assert np.abs(whole.image - tiled.image).max() < 1e-4
    predict_files(p, [src], tmp_path / "o", progress=False)
    predict_file(p, tmp_path / "czyx" / "stack.tif", tmp_path / "o2" / "stack.tif", progress=False)
    both = imread(tmp_path / "o2" / "stack.tif")  # ImageJ stores ZCYX
    assert both.axes == "ZCYX" and both.shape == (16, 2, 64, 64)
    for c, ch in enumerate(("nucleus", "membrane")):
        np.testing.assert_array_equal(imread(tmp_path / "o" / f"image_0_{ch}_angle.tif").data, both.data[:, c])
    assert not np.array_equal(both.data[:, 0], both.data[:, 1])
    predict_file(p, tmp_path / "czyx" / "stack.tif", tmp_path / "o6" / "stack.tif", progress=False, stream=True)
    np.testing.assert_array_equal(imread(tmp_path / "o6" / "stack.tif").data, both.data)  # streamed = in memory
    (src / "image_0_membrane_angle.tif").unlink()
    with pytest.raises(FmcInputError, match="no membrane image"):
        predict_files(p, [src], tmp_path / "o3", progress=False)
    with pytest.raises(FmcInputError, match="restores 2 channels together"):
        predict_file(p, src / "image_0_nucleus_angle.tif", tmp_path / "o4.tif", progress=False)
    imwrite(tmp_path / "anon" / "x.tif", stack[0], ImageMeta(axes="ZYX"))
    with pytest.raises(FmcInputError, match="stack them into one CZYX image"):
        predict_files(p, [tmp_path / "anon"], tmp_path / "o5", progress=False)

    pytest.importorskip("bioimageio.core", reason="bioimage.io export needs bioimageio.core (make test installs it)")
    import zipfile

    from fmc_ij.export import export

    z = export(run, tmp_path / "mc.zip")  # sample: the first specimen of the training data, both channels
    rdf = yaml.safe_load(zipfile.ZipFile(z).read("rdf.yaml"))
    assert rdf["inputs"][0]["axes"][1]["channel_names"] == ["nucleus", "membrane"]
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["nucleus", "membrane"]
    pb = load_predictor(z)
    assert pb.channel_names == ("nucleus", "membrane")
    assert np.abs(predict_array(pb, stack.astype(np.float32), progress=False).image - whole.image).max() < 1e-5


def test_precise_batchnorm_sets_statistics_from_the_current_weights(lightsheet, tmp_path):
    """Before each validation BatchNorm statistics are re-estimated with the current weights (PreciseBN): the
    saved running mean of the first BatchNorm is the average batch mean of its input over those batches, not a
    momentum average still dominated by the initial statistics."""
    from fmc_ij.data import PatchBatches
    from fmc_ij.train.loop import _PRECISE_BN_BASE, PRECISE_BN_BATCHES

    cfg = tiny(lightsheet, steps=3, val_every=3, data={"val_fraction": 0})
    train(cfg, tmp_path / "r")
    saved = torch.load(tmp_path / "r" / "model.pt", weights_only=False)
    state, conv = saved["state_dict"], torch.nn.Conv3d(1, 4, 3, padding=1, bias=False)
    conv.weight.data.copy_(state["down.0.body.0.weight"])
    pairs = load_pairs(lightsheet)
    b = PatchBatches(pairs, cfg.data.patch, seed=cfg.seed, fg_fraction=cfg.data.fg_fraction, min_fg=cfg.data.min_fg,
                     flip_axial=cfg.data.flip_axial)  # fmt: skip
    with torch.no_grad():
        means = [conv(torch.from_numpy(b.batch(_PRECISE_BN_BASE + 3 * PRECISE_BN_BATCHES + k, range(2))[0]))
                 .mean((0, 2, 3, 4)) for k in range(PRECISE_BN_BATCHES)]  # fmt: skip
    torch.testing.assert_close(state["down.0.body.1.running_mean"], torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)


def test_frozen_encoder_batchnorm_normalises_as_at_prediction(lightsheet, tmp_path):
    """--freeze-encoder keeps the encoder's BatchNorm layers in eval mode while the rest trains: they normalise with
    their stored statistics, as prediction does (in train mode they used each batch's own statistics, so the
    encoder fine-tuned on features prediction never sees)."""
    from fmc_ij.nn.factory import ModelConfig, build_model
    from fmc_ij.train.init import freeze_encoder

    torch.manual_seed(0)
    model = build_model(ModelConfig(ndim=3, depth=2, base=4, norm=True))
    model.train()
    with torch.no_grad():  # stored statistics that differ from any one batch's
        for _ in range(3):
            model(torch.randn(2, 1, 8, 16, 16) * 3 + 1)
    freeze_encoder(model)
    model.train()  # what the training loop does
    bns = [m for n, m in model.named_modules() if n.startswith(("down.", "bottom.")) and
           isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]  # fmt: skip
    assert bns and not any(m.training for m in bns)
    x = torch.randn(2, 1, 8, 16, 16)
    with torch.no_grad():
        enc_train = model.down[0](x)
        model.eval()
        enc_eval = model.down[0](x)
    torch.testing.assert_close(enc_train, enc_eval)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("down.")}
    model.train()
    with torch.no_grad():
        model(x)
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)  # statistics and counter kept
