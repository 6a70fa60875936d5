"""The shipped macros (``macros/``) in the real ImageJ 1 (Debian libij-java), in child processes.

Files written by fmc_ij.io open with the right calibration (``fmc_calibration.ijm``); the deepImageJ, NanoJ and
pipeline macros pass their commands exactly the options the plugins read (Java stand-ins in tests/stubs, compiled
into a Fiji-shaped folder by conftest's ``fake_fiji``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fmc_ij import fiji, io
from fmc_ij.fiji import imagej_calibration, macro_path, run_imagej1_macro

pytestmark = pytest.mark.imagej


@pytest.mark.parametrize(
    "axes,shape,dtype,spacing",
    [
        ("ZYX", (7, 40, 50), np.uint16, {"Z": 1.01, "Y": 0.388, "X": 0.388}),
        ("ZYX", (5, 30, 20), np.float32, {"Z": 3.0, "Y": 0.33, "X": 0.25}),
        ("CZYX", (2, 4, 16, 24), np.uint8, {"Z": 1.0, "Y": 0.195, "X": 0.195}),
        ("YX", (33, 44), np.uint16, {"Y": 0.065, "X": 0.065}),
    ],
)
def test_imagej_reads_calibration(tmp_path, axes, shape, dtype, spacing):
    meta = io.ImageMeta(axes=axes, spacing=spacing, unit="µm", channel="nucleus", study=2)
    path = tmp_path / "calibrated image.tif"  # a space in the name, as users have
    io.imwrite(path, np.zeros(shape, dtype), meta)
    cal = imagej_calibration(path, timeout=60)
    x, y, z = (float(v) for v in cal["voxel"].split(","))
    assert (x, y) == (pytest.approx(spacing["X"]), pytest.approx(spacing["Y"]))
    if "Z" in spacing:
        assert z == pytest.approx(spacing["Z"])
    assert cal["unit"] in ("µm", "micron")
    assert int(cal["width"]) == shape[-1] and int(cal["height"]) == shape[-2]
    assert int(cal["slices"]) == (shape[axes.index("Z")] if "Z" in axes else 1)
    assert int(cal["channels"]) == (shape[axes.index("C")] if "C" in axes else 1)
    assert int(cal["bits"]) == {np.uint8: 8, np.uint16: 16, np.float32: 32}[dtype]


def test_ome_tiff_gives_plain_imagej_the_xy_calibration(tmp_path):
    meta = io.ImageMeta(axes="ZYX", spacing={"Z": 2.0, "Y": 0.2, "X": 0.25}, unit="µm")
    io.imwrite(tmp_path / "v.ome.tif", np.zeros((3, 10, 12), np.uint16), meta)
    cal = imagej_calibration(tmp_path / "v.ome.tif", timeout=60)
    x, y, _ = (float(v) for v in cal["voxel"].split(","))
    assert (x, y) == (pytest.approx(0.25), pytest.approx(0.2)) and cal["unit"] in ("µm", "micron")


def test_simulated_dataset_folder_in_imagej(tmp_path):
    from fmc_ij.synthetic import LightSheetConfig, simulate_lightsheet_dataset

    simulate_lightsheet_dataset(tmp_path, n=1, cfg=LightSheetConfig(shape=(12, 32, 32), spacing=(1.5, 0.5, 0.5)))
    out = run_imagej1_macro(macro_path("fmc_calibration.ijm"), f"path=[{tmp_path}]", timeout=60)
    lines = [ln for ln in out.splitlines() if ln.startswith("file=")]
    assert len(lines) == 4
    assert all("voxel=0.500000,0.500000,1.500000" in ln and "slices=12" in ln for ln in lines)


@pytest.fixture()
def odd_dir(tmp_path) -> Path:
    d = tmp_path / "my data [v2] é"  # spaces, brackets and unicode, as users have
    d.mkdir()
    return d


def _parse_record(rec: str) -> dict[str, str]:
    """``key=value key2=value with spaces ...`` as the stubs log it (keys are known, values may hold spaces)."""
    parts = re.split(r" (?=[a-z_.-]+=)", rec)
    return dict(p.split("=", 1) for p in parts)


# -- deepImageJ, NanoJ and the pipeline from their macros -----------------------------------------------------
def _dij_inputs(folder: Path) -> dict[str, int]:
    """Inputs whose names trip deepImageJ: spaces (two give the same short title) and a dot; a non-TIFF beside."""
    folder.mkdir()
    names = {"img 1_nucleus.tif": 1, "img1_nucleus.tif": 2, "a.b c_angle.tif": 3}
    for name, k in names.items():
        meta = io.ImageMeta(axes="ZYX", spacing={"Z": 2.0 * k, "Y": 0.4, "X": 0.3}, unit="µm")
        io.imwrite(folder / name, np.full((3, 5, 7), k, np.uint16), meta)
    (folder / "notes.txt").write_text("not an image: deepImageJ would stop on it")
    return names


def _stub_runs(log: str) -> list[dict[str, str]]:
    return [_parse_record(ln[len("stub ") :]) for ln in log.splitlines() if ln.startswith("stub model_path=")]


@pytest.mark.parametrize("mode", ["folder", "file"])
def test_predict_deepimagej_macro_names_outputs_as_inputs(fake_fiji, odd_dir, monkeypatch, mode):
    monkeypatch.setenv("FIJI_HOME", str(fake_fiji))
    model = odd_dir / "model"
    model.mkdir()
    (model / "rdf.yaml").write_text("format_version: 0.5.10\n")
    names = _dij_inputs(odd_dir / "inputs")
    out = odd_dir / "predicted"
    log = fiji.run_fiji_macro(fiji.macro_path("fmc_predict_deepimagej.ijm"),
                              f"model=[{fiji.ij_path(model)}] input=[{fiji.ij_path(odd_dir / 'inputs')}] "
                              f"output=[{fiji.ij_path(out)}] mode={mode}", timeout=120)  # fmt: skip
    runs = _stub_runs(log)
    assert len(runs) == (1 if mode == "folder" else 3)  # folder: one run, so one model load, for all
    assert all(r["display_output"] == "null" and Path(r["model_path"]).resolve() == model.resolve() for r in runs)
    for name, k in names.items():  # each output under its input's name, with its own values and voxel size
        got = io.imread(out / name)
        np.testing.assert_array_equal(got.data, np.full((3, 5, 7), 2 * k, np.float32))
        assert got.meta.voxel_size() == pytest.approx((2.0 * k, 0.4, 0.3)) and got.meta.unit == "µm"
    assert sorted(p.name for p in out.iterdir()) == sorted(names) and f"done {len(names)} image(s)" in log


def test_predict_deepimagej_macro_stops_when_deepimagej_writes_nothing(fake_fiji, odd_dir, monkeypatch):
    monkeypatch.setenv("FIJI_HOME", str(fake_fiji))
    (odd_dir / "empty model").mkdir()  # no rdf.yaml: the stand-in refuses it as deepImageJ would
    _dij_inputs(odd_dir / "inputs")
    log = fiji.run_fiji_macro(fiji.macro_path("fmc_predict_deepimagej.ijm"),
                              f"model=[{fiji.ij_path(odd_dir / 'empty model')}] "
                              f"input=[{fiji.ij_path(odd_dir / 'inputs')}] output=[{odd_dir / 'out'}]")  # fmt: skip
    assert "deepImageJ wrote no output for " in log and "done" not in log
    assert not list((odd_dir / "out").iterdir())  # the staging folders are gone too
    zipped = fiji.run_fiji_macro(
        fiji.macro_path("fmc_predict_deepimagej.ijm"),
        f"model=[{odd_dir / 'm.zip'}] input=[{odd_dir}] output=[{odd_dir / 'o'}]",
    )
    assert "Install model manually" in zipped


def test_register_and_squirrel_macros_pass_nanoj_their_exact_options(fake_fiji, odd_dir, monkeypatch):
    monkeypatch.setenv("FIJI_HOME", str(fake_fiji))
    rng = np.random.default_rng(0)
    for name in ("ref.tif", "mov.tif"):
        tifffile.imwrite(odd_dir / name, rng.random((32, 32)).astype(np.float32))
    out = fiji.run_nanoj_register(odd_dir / "ref.tif", odd_dir / "mov.tif", odd_dir / "reg", blocks=4)
    assert out.is_file() and (odd_dir / "reg" / "translation_mask.tif").is_file()
    ref, mov, reg = (fiji.ij_path(odd_dir / n) for n in ("ref.tif", "mov.tif", "reg2"))
    log = fiji.run_fiji_macro(
        fiji.macro_path("fmc_register_nanoj.ijm"), f"reference=[{ref}] moving=[{mov}] out=[{reg}]"
    )
    rec = next(_parse_record(ln[5:]) for ln in log.splitlines() if ln.startswith("stub reference="))
    assert rec == {"reference": "1", "number": "2", "max": "0", "blocks": "5", "min": "0.5", "gaussian": "0.0",
                   "apply": "true"}  # fmt: skip
    tifffile.imwrite(odd_dir / "sr.tif", rng.random((64, 64)).astype(np.float32))
    rows = fiji.run_nanoj_squirrel(odd_dir / "ref.tif", odd_dir / "sr.tif", odd_dir / "sq", max_mag=3)
    assert rows[0]["rse"] == pytest.approx(34.12404)


def test_pipeline_macro_drives_the_cli(tmp_path):
    exe = Path(sys.executable).with_name("fmc-ij")
    data, out = tmp_path / "pairs [raw]", tmp_path / "project one"
    subprocess.run([str(exe), "simulate", "--out", str(data), "--n", "2", "--shape", "24,80,80"], check=True,
                   capture_output=True, timeout=120, env={**os.environ, "FMC_IJ_PROGRESS": "0"})  # fmt: skip
    arg = (f"fmcij=[{exe}] data=[{fiji.ij_path(data)}] out=[{out}] preset=care3d minutes=5 steps=3 "
           "pattern=*_angle.tif")  # fmt: skip
    log = fiji.run_imagej1_macro(fiji.macro_path("fmc_pipeline.ijm"), arg, timeout=280)
    for k, step in enumerate(("register", "train", "predict", "export"), 1):
        assert f"[{k}/4] fmc-ij {step}" in log
    assert (out / "registered" / "registration.csv").is_file() and (out / "run" / "model.pt").is_file()
    assert len(list((out / "predictions").glob("*_angle.tif"))) == 4
    assert (out / "model.zip").stat().st_size > 10_000 and "fmc-ij pipeline done" in log


def test_pipeline_macro_stops_on_a_failing_step(tmp_path):
    exe = Path(sys.executable).with_name("fmc-ij")
    arg = f"fmcij=[{exe}] data=[{tmp_path / 'missing'}] out=[{tmp_path / 'o'}]"
    log = fiji.run_imagej1_macro(fiji.macro_path("fmc_pipeline.ijm"), arg, timeout=120)
    assert "fmc-ij register failed" in log and "[2/4]" not in log
    assert not (tmp_path / "o" / "run").exists()
