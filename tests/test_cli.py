"""The fmc-ij command as a user runs it: a real process, real files, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fmc_ij import io

EXE = Path(sys.executable).with_name("fmc-ij")


def run(*args, check=True):
    env = {**os.environ, "FMC_IJ_PROGRESS": "0"}
    res = subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"fmc-ij {' '.join(map(str, args))} -> {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "D"
    run("simulate", "--out", out, "--shape", "16,64,64", "--spacing", "1.2,0.3,0.3", "--n", "2")
    return out


def test_help_for_every_command():
    top = run("--help").stdout
    for cmd in ("simulate", "info", "evaluate", "register", "squirrel"):
        assert cmd in top
        assert "Usage" in run(cmd, "--help").stdout
    assert run("--version").stdout.startswith("fmc-ij ")


def test_simulate_then_info_lists_pairs(dataset):
    names = sorted(p.name for p in dataset.iterdir())
    assert "image_0_nucleus_angle.tif" in names and "image_1_membrane_fused.tif" in names
    table = run("info", dataset).stdout
    for pair in ("image_0_nucleus", "image_0_membrane", "image_1_nucleus", "image_1_membrane"):
        assert pair in table
    assert "1.2 x 0.3 x 0.3 µm" in table
    rows = json.loads(run("info", dataset, "--json").stdout)
    assert len(rows) == 4
    for r in rows:
        for side in ("input", "target"):
            assert r[side]["voxel_size"] == {"Z": 1.2, "Y": 0.3, "X": 0.3}
            assert r[side]["channel"] == r["pair"].split("_")[-1]
            assert r[side]["axes"] == "ZYX" and r[side]["shape"] == [16, 64, 64] and r[side]["dtype"] == "uint16"
        assert r["input"]["max"] < r["target"]["max"]


def test_info_on_one_file(dataset):
    d = json.loads(run("info", dataset / "image_1_membrane_angle.tif", "--json").stdout)
    assert d["channel"] == "membrane" and d["study"] == 0 and d["unit"] == "µm"
    assert "voxel size" in run("info", dataset / "image_1_membrane_angle.tif").stdout


def test_simulate_all_kinds(tmp_path):
    run("simulate", "--kind", "all", "--out", tmp_path / "all", "--n", "1", "--shape", "16,48,48")
    for kind, channel in (("beads", "beads"), ("filaments", "filaments"), ("lightsheet", "nucleus")):
        rows = json.loads(run("info", tmp_path / "all" / kind, "--json").stdout)
        assert channel in {r["input"]["channel"] for r in rows}
    beads = json.loads(run("info", tmp_path / "all" / "beads", "--json").stdout)[0]
    assert beads["input"]["voxel_size"] == {"Y": 0.025, "X": 0.025}
    assert beads["input"]["extra"]["modality"] == "confocal" and beads["target"]["extra"]["modality"] == "sted"


def test_info_with_globs_and_test_time(tmp_path):
    for sub in ("wf", "sim"):
        io.imwrite(tmp_path / sub / "cell.tif", np.ones((8, 8), np.uint16), io.ImageMeta(axes="YX"))
    assert "cell" in run("info", tmp_path, "--low", "wf/*.tif", "--high", "sim/*.tif").stdout
    io.imwrite(tmp_path / "t" / "image_9_nucleus_angle.tif", np.ones((2, 8, 8), np.uint16), io.ImageMeta(axes="ZYX"))
    bad = run("info", tmp_path / "t", check=False)
    assert bad.returncode == 2 and "missing pair partner" in bad.stderr
    assert "missing" in run("info", tmp_path / "t", "--inputs-only").stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (("info", "/nonexistent/file.tif"), "no such file"),
        (("simulate", "--out", "{tmp}/x", "--shape", "4,5"), "give 3 positive integers"),
        (("simulate", "--out", "{tmp}/x", "--channels", "dapi"), "unknown channel"),
        (("simulate", "--out", "{tmp}/x", "--kind", "cells"), "unknown dataset kind"),
        (("simulate", "--out", "{tmp}/x", "--flavour", "png"), "unknown --flavour"),
        (("info", "{tmp}/junk.tif"), "not a readable TIFF"),
        (("info", "{tmp}"), "no pairs found"),
    ],
)
def test_bad_input_exit_2_one_line(tmp_path, args, needle):
    (tmp_path / "junk.tif").write_bytes(b"junk")
    res = run(*(a.format(tmp=tmp_path) for a in args), check=False)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in res.stderr


def test_debug_shows_traceback_and_refuses_overwrite(tmp_path):
    res = run("--debug", "info", "/nonexistent.tif", check=False)
    assert res.returncode != 0 and "Traceback" in res.stderr
    (tmp_path / "keep.txt").write_text("mine")
    res = run("simulate", "--out", tmp_path, "--shape", "8,32,32", check=False)
    assert res.returncode == 2 and "--overwrite" in res.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_evaluate_challenge_layout(dataset, tmp_path):
    """Identity predictions score N_SSIM 0 exactly; a blurred prediction scores below 0; files and report written."""
    from scipy import ndimage

    pred = tmp_path / "pred"
    pred.mkdir()
    inputs = sorted(dataset.glob("*_angle.tif"))
    for k, f in enumerate(inputs):
        img = io.imread(f)
        data = img.data if k % 2 == 0 else ndimage.gaussian_filter(img.data.astype(np.float32), 2.0)
        io.imwrite(pred / f.name, data.astype(np.float32), img.meta)
    out = tmp_path / "eval"
    res = run("evaluate", "--pred", pred, "--gt", dataset, "--input", dataset, "--out", out)
    assert "N_SSIM" in res.stdout
    rows = (out / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"channel", "study", "ssim_input", "n_ssim", "n_iou", "psnr", "nrmse", "outlier"} <= set(header)
    values = [dict(zip(header, r.split(","))) for r in rows[1:]]
    assert len(values) == len(inputs)
    ident = [v for v in values if v["name"] == inputs[0].name.removesuffix(".tif")][0]
    assert float(ident["n_ssim"]) == 0.0
    # N_IOU of an identity is 0, or NaN when the input segments exactly like the GT (tiny volumes here).
    assert float(ident["n_iou"]) == 0.0 or ident["n_iou"] == "nan"
    blurred = [v for v in values if v["name"] == inputs[1].name.removesuffix(".tif")][0]
    assert float(blurred["n_ssim"]) < 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"nucleus", "membrane"}
    assert summary["nucleus"]["n_images"] == 2
    for png in ("n_ssim.png", "n_iou.png", "ssim_input_vs_pred.png", f"slices/{inputs[0].stem}.png"):
        assert (out / png).stat().st_size > 1000
    assert "<table>" in (out / "report.html").read_text()


def test_evaluate_bad_input(dataset, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    f = sorted(dataset.glob("*_angle.tif"))[0]
    io.imwrite(pred / f.name, np.zeros((4, 8, 8), np.float32), io.imread(f).meta)
    res = run("evaluate", "--pred", pred, "--gt", dataset, "--input", dataset, "--out", tmp_path / "o", check=False)
    assert res.returncode == 2 and "differ in shape" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run(
        "evaluate",
        "--pred",
        tmp_path / "nope",
        "--gt",
        dataset,
        "--input",
        dataset,
        "--out",
        tmp_path / "o",
        check=False,
    )
    assert res.returncode == 2 and "no such folder" in res.stderr


def test_register_pair_and_dataset(tmp_path):
    data = tmp_path / "mis"
    run("simulate", "--out", data, "--shape", "16,128,128", "--n", "1", "--channels", "nucleus", "--misregister")
    lr, hr = data / "image_0_nucleus_angle.tif", data / "image_0_nucleus_fused.tif"
    res = run("register", lr, hr, "--out", tmp_path / "one")
    assert "NCC" in res.stdout
    summary = json.loads((tmp_path / "one" / "image_0_nucleus_angle_registration.json").read_text())
    assert summary["ncc_rigid"] > summary["ncc_before"]
    # The simulated angle view was warped by the truth field d; registering samples it back at about -d.
    d = io.imread(data / "truth" / "image_0_nucleus_displacement.ome.tif").data
    field = np.load(tmp_path / "one" / "image_0_nucleus_angle_field.npy")
    inner = (slice(1, 3), slice(2, -2), slice(16, -16), slice(16, -16))
    err = float(np.sqrt(((field + d)[inner] ** 2).sum(0).mean()))
    before = float(np.sqrt((d[inner] ** 2).sum(0).mean()))
    print("lateral field error", err, "misregistration", before)
    assert err < 0.35 * before
    assert (tmp_path / "one" / "image_0_nucleus_angle_qc.png").stat().st_size > 1000
    reg = io.imread(tmp_path / "one" / lr.name)
    assert reg.data.shape == io.imread(hr).data.shape and reg.data.dtype == io.imread(lr).data.dtype
    out = tmp_path / "all"
    run("register", "--dataset", data, "--out", out)
    assert (out / "registration.csv").read_text().count("\n") == 2
    a, b = io.imread(out / lr.name), io.imread(out / hr.name)
    assert a.data.shape == b.data.shape and (out / "qc" / "image_0_nucleus.png").exists()
    res = run("register", "--dataset", data, "--out", out, check=False)
    assert res.returncode == 2 and "--overwrite" in res.stderr


def test_register_fiji_engine_without_fiji(tmp_path):
    a = tmp_path / "a.tif"
    io.imwrite(a, np.random.default_rng(0).random((64, 64)).astype(np.float32), io.ImageMeta(axes="YX"))
    env_fiji = os.environ.pop("FMC_IJ_FIJI", None)
    try:
        res = run("register", a, a, "--out", tmp_path / "o", "--engine", "fiji", check=False)
    finally:
        if env_fiji:
            os.environ["FMC_IJ_FIJI"] = env_fiji
    assert res.returncode == 2 and "Fiji not found" in res.stderr and "NanoJ-Core" in res.stderr


def test_squirrel_cli(tmp_path):
    rng = np.random.default_rng(0)
    img = ndimage_blur(rng.random((96, 96)).astype(np.float32) * 100, 1.0)
    ref = img.reshape(48, 2, 48, 2).mean((1, 3))
    io.imwrite(tmp_path / "ref.tif", ref.astype(np.float32), io.ImageMeta(axes="YX"))
    io.imwrite(tmp_path / "img.tif", img, io.ImageMeta(axes="YX"))
    res = run("squirrel", tmp_path / "ref.tif", tmp_path / "img.tif", "--out", tmp_path / "sq", "--method", "binned")
    assert "RSE" in res.stdout
    rows = json.loads((tmp_path / "sq" / "img_squirrel.json").read_text())
    assert rows[0]["rsp"] > 0.9 and rows[0]["magnification"] == 2
    for f in ("img_errormap.tif", "img_errormap.png", "img_squirrel.csv"):
        assert (tmp_path / "sq" / f).stat().st_size > 100
    io.imwrite(tmp_path / "bad.tif", np.ones((50, 50), np.float32), io.ImageMeta(axes="YX"))
    bad = run("squirrel", tmp_path / "ref.tif", tmp_path / "bad.tif", "--out", tmp_path / "sq2", check=False)
    assert bad.returncode == 2 and "SQUIRREL" in bad.stderr


def ndimage_blur(x, s):
    from scipy import ndimage

    return ndimage.gaussian_filter(x, s)


def test_squirrel_cli_volume(tmp_path):
    from fmc_ij.squirrel import forward_model
    from fmc_ij.synthetic.optics import sparse_texture

    img = sparse_texture((8, 48, 48), np.random.default_rng(0), 200).astype(np.float32)
    ref = forward_model(img, (2.0, 1.5, 1.5), (1, 2, 2)).astype(np.float32)
    io.imwrite(tmp_path / "ref.tif", ref, io.ImageMeta(axes="ZYX"))
    io.imwrite(tmp_path / "img.tif", img, io.ImageMeta(axes="ZYX"))
    res = run("squirrel", tmp_path / "ref.tif", tmp_path / "img.tif", "--out", tmp_path / "sq")
    assert "anisotropic" in res.stdout
    summary = json.loads((tmp_path / "sq" / "img_squirrel.json").read_text())
    assert summary["sigma_z"] == pytest.approx(2.0, rel=0.02) and summary["sigma_xy"] == pytest.approx(1.5, rel=0.02)
    assert io.imread(tmp_path / "sq" / "img_errormap.tif").data.shape == img.shape
