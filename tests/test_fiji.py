"""The Fiji bridge against the real ImageJ 1.53t (Debian libij-java), in this process and in child processes.

NanoJ and deepImageJ are absent here: Java stand-ins (tests/stubs) register their command names in a Fiji-shaped
folder and parse the options with ImageJ's own GenericDialog / OpenDialog / SaveDialog, recording what they got
in system properties (in-process) and the Log (child processes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fmc_ij import fiji
from fmc_ij.errors import FmcInputError
from fmc_ij.io import ImageMeta, imread, imwrite

pytestmark = pytest.mark.imagej
pytest.importorskip("scyjava", reason="the Fiji bridge needs scyjava: pip install 'fmc-ij[fiji]'")


@pytest.fixture(scope="module")
def ij(fake_fiji):
    """One JVM for this process: ImageJ 1 with the stand-in plugins (a Fiji folder without ImageJ2)."""
    bridge = fiji.connect(fake_fiji)
    assert bridge.backend == "imagej1" and bridge.version.startswith("1.53")
    return bridge


def _stub(ij, command: str) -> dict[str, str]:
    rec = ij._sj.jimport("java.lang.System").getProperty(f"fmc.stub.{command}")
    assert rec is not None, f"the {command} stand-in recorded nothing; ImageJ said: {ij.output}"
    return _parse_record(str(rec))


def _parse_record(rec: str) -> dict[str, str]:
    """``key=value key2=value with spaces ...`` as the stubs write it (keys are known, values may hold spaces)."""
    import re

    parts = re.split(r" (?=[a-z_.-]+=)", rec)
    return dict(p.split("=", 1) for p in parts)


# -- numpy <-> ImagePlus --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize(("axes", "shape", "spacing"), [
    ("YX", (37, 53), (0.065, 0.07)), ("ZYX", (9, 31, 45), (1.01, 0.388, 0.388)),
    ("CZYX", (2, 3, 16, 20), (2.0, 0.2, 0.25)),
])  # fmt: skip
def test_round_trip_is_exact_with_calibration(ij, dtype, axes, shape, spacing):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if dtype != np.float32 else None
    data = (rng.integers(info.min, info.max, shape, endpoint=True) if info else rng.normal(0, 1e3, shape)).astype(dtype)
    imp = ij.to_imageplus(data, axes=axes, spacing=spacing, title="round trip")
    assert (imp.getNChannels(), imp.getNSlices()) == (shape[0] if "C" in axes else 1,
                                                      shape[axes.index("Z")] if "Z" in axes else 1)  # fmt: skip
    back = ij.from_imageplus(imp)
    assert back.meta.axes == axes and back.data.dtype == dtype
    np.testing.assert_array_equal(back.data, data)
    assert back.meta.voxel_size() == pytest.approx(spacing) and back.meta.unit == "µm"
    # ImageJ itself sees the voxel size (a macro on the image)
    got = ij.run_macro('getVoxelSize(w, h, d, u); return "" + w + " " + h + " " + d + " " + u;', image=imp)
    w, h, d, unit = got.split()
    assert (float(w), float(h)) == pytest.approx((spacing[-1], spacing[-2])) and unit in ("micron", "microns")
    if "Z" in axes:
        assert float(d) == pytest.approx(spacing[0])


def test_image_objects_and_files_cross_with_their_metadata(ij, tmp_path):
    img = imread_written(tmp_path)
    imp = ij.to_imageplus(img)
    back = ij.from_imageplus(imp)
    assert back.meta.axes == "ZYX" and back.meta.voxel_size() == pytest.approx(img.meta.voxel_size())
    np.testing.assert_array_equal(back.data, img.data)
    with pytest.raises(FmcInputError, match="uint8, uint16 or float32"):
        ij.to_imageplus(np.zeros((4, 4), np.float64))
    with pytest.raises(FmcInputError, match="YX, ZYX, CYX or CZYX"):
        ij.to_imageplus(np.zeros((2, 3, 4, 5, 6), np.uint8))


def imread_written(tmp_path: Path):
    path = tmp_path / "vol with space.tif"
    imwrite(path, np.arange(4 * 8 * 10, dtype=np.uint16).reshape(4, 8, 10),
            ImageMeta(axes="ZYX", spacing={"Z": 1.5, "Y": 0.3, "X": 0.3}, unit="µm"))  # fmt: skip
    return imread(path)


def test_large_stack_crosses_both_ways(ij):
    """128x512x512 float32 both ways, exact (the speed is in benchmarks/bench_fiji.py)."""
    data = np.random.default_rng(1).random((128, 512, 512), dtype=np.float32)
    imp = ij.to_imageplus(data)
    np.testing.assert_array_equal(ij.from_imageplus(imp).data, data)


# -- macros and commands ---------------------------------------------------------------------------------------
def test_macro_return_value_arguments_and_errors(ij, tmp_path):
    assert ij.run_macro('return "" + (parseFloat(getArgument()) * 2);', "21") == "42"
    with pytest.raises(fiji.MacroError, match="Undefined identifier"):
        ij.run_macro("x = notAFunction(1);")
    with pytest.raises(fiji.MacroError, match="stopped: no input given"):
        ij.run_macro('exit("no input given");')
    macro = tmp_path / "my macro [1].ijm"
    macro.write_text('a = call("ij.Macro.getValue", getArgument(), "name", "?"); print("got " + a); return a;')
    assert ij.run_macro_file(macro, "name=[a b é]") == "a b é"
    assert "got a b é" in ij.output  # ImageJ's printed output is kept


def test_dialogs_and_endless_macros_raise_instead_of_hanging(ij):
    imp = ij.to_imageplus(np.zeros((20, 30), np.float32))
    t0 = time.perf_counter()
    with pytest.raises(fiji.MacroError, match="opened a dialog: Gaussian Blur"):
        ij.run_command("Gaussian Blur...", "", image=imp, timeout=30)  # no options: ImageJ would ask
    with pytest.raises(TimeoutError, match="did not finish within 2 s"):
        ij.run_macro("while (true) { wait(10); }", timeout=2)
    assert time.perf_counter() - t0 < 20
    assert ij.run_macro('return "still alive";') == "still alive"


def test_menu_command_on_an_image(ij):
    data = np.zeros((2, 40, 40), np.float32)
    data[:, 20, 20] = 100
    imp = ij.to_imageplus(data)
    ij.run_command("Gaussian Blur...", "sigma=2 stack", image=imp)
    out = ij.from_imageplus(imp).data
    assert out[:, 20, 20].max() < 10 and out.sum() == pytest.approx(data.sum(), rel=1e-3)
    with pytest.raises(FmcInputError, match="no command 'Not A Command'"):
        ij.run_command("Not A Command")


# -- NanoJ and deepImageJ command strings, read back by ImageJ's own dialogs ------------------------------------
@pytest.fixture()
def odd_dir(tmp_path) -> Path:
    d = tmp_path / "my data [v2] é"  # spaces, brackets and unicode, as users have
    d.mkdir()
    return d


def test_estimate_and_correct_drift(ij, odd_dir):
    imp = ij.to_imageplus(np.zeros((3, 16, 16), np.float32), title="movie")
    cmd = fiji.estimate_drift(odd_dir / "movie_.njt")
    assert cmd.options.startswith(
        "time=1 max=0 reference=[first frame (default, better for fixed)] show_drift_table apply"
    )
    ij.run_command(cmd, image=imp)
    rec = _stub(ij, "Estimate Drift")
    assert rec == {**rec, "time": "1", "max": "0", "reference": "first frame (default, better for fixed)",
                   "show_cross-correlation": "false", "show_drift_plot": "false", "show_drift_table": "true",
                   "apply": "true", "do_batch-analysis": "false"}  # fmt: skip
    table = odd_dir / "movie_DriftTable.njt"
    assert table.is_file()  # written through the bracket-free link, into the real folder
    ij.run_command(fiji.correct_drift(table), image=imp)
    assert Path(_stub(ij, "Correct Drift")["table"]).resolve() == table.resolve()


def test_register_channels_estimate_and_apply(ij, odd_dir):
    imp = ij.to_imageplus(np.random.default_rng(0).random((2, 24, 24), dtype=np.float32), title="pair")
    ij.run_command(fiji.register_channels_estimate(blocks=3, min_similarity=0.6), image=imp)
    assert _stub(ij, "Register Channels - Estimate") == {
        "reference": "1", "number": "2", "max": "0", "blocks": "3", "min": "0.6", "gaussian": "0.0", "apply": "true",
    }  # fmt: skip
    assert {"pair - TranslationMask", "pair - Registered"} <= set(ij.image_titles())
    mask = odd_dir / "mask.tif"
    tifffile.imwrite(mask, np.zeros((24, 48), np.float32))
    ij.run_command(fiji.register_channels_apply(mask), image=imp)
    assert Path(_stub(ij, "Register Channels - Apply")["mask"]).resolve() == mask.resolve()


def test_squirrel_error_map_and_its_table(ij):
    ij.close_all()
    ij.to_imageplus(np.ones((10, 10), np.float32), title="wf image.tif").show()
    ij.to_imageplus(np.ones((50, 50), np.float32), title="sr.tif").show()
    ij.run_command(fiji.squirrel_error_map("wf image.tif", "sr.tif", max_magnification=5))
    assert _stub(ij, "Calculate Error-Map, RSE and RSP") == {
        "reference": "wf image.tif", "super-resolution": "sr.tif",
        "rsf": "-- RSF unknown, estimate via optimisation --", "max.": "5",
    }  # fmt: skip
    rows = ij.table("RSP and RSE values")
    assert rows[0]["RSP (Resolution Scaled Pearson-Correlation)"] == pytest.approx(0.865659)
    assert "sr.tif - Resolution Scaled Error-Map" in ij.image_titles()


def test_deepimagej_run_keys_and_outputs(ij, odd_dir):
    model = odd_dir / "fmc-ij model"
    model.mkdir()
    (model / "rdf.yaml").write_text("format_version: 0.5.10\n")
    src = odd_dir / "in put.tif"
    tifffile.imwrite(src, np.full((4, 6), 3, np.float32))
    out = odd_dir / "out"
    out.mkdir()
    cmd = fiji.deepimagej_run(model, src, out)
    assert cmd.options.endswith("display_output=null") and "modelPath" not in cmd.options
    ij.run_command(cmd)
    rec = _stub(ij, "DeepImageJ Run")
    assert Path(rec["model_path"]).resolve() == model.resolve() and Path(rec["input_path"]).resolve() == src.resolve()
    assert Path(rec["output_folder"]).resolve() == out.resolve() and rec["display_output"] == "null"
    np.testing.assert_array_equal(tifffile.imread(out / "in put_restored.tif"), np.full((4, 6), 6, np.float32))


def test_option_rules():
    assert fiji.trim_key("Max. Mag. in Optimization") == "max." and fiji.trim_key("Sigma (Radius):") == "sigma"
    assert fiji.options({"Apply": False, "show_drift_table": True, "Path": "/a b/c", "n": 2}) == (
        "show_drift_table path=[/a b/c] n=2"
    )
    with pytest.raises(FmcInputError, match="new file whose name holds"):
        fiji.ij_path("/tmp/does not exist]/x]")


# -- the shipped macros in a real ImageJ 1 (child processes) -----------------------------------------------------
def test_predict_deepimagej_macro_on_a_folder(fake_fiji, odd_dir, monkeypatch):
    monkeypatch.setenv("FIJI_HOME", str(fake_fiji))
    model = odd_dir / "model"
    model.mkdir()
    (model / "rdf.yaml").write_text("format_version: 0.5.10\n")
    inputs = odd_dir / "inputs"
    inputs.mkdir()
    for k in range(2):
        tifffile.imwrite(
            inputs / f"image_{k}_nucleus_angle.tif", np.full((3, 5, 7), k + 1, np.uint16), photometric="minisblack"
        )
    out = odd_dir / "predicted"
    log = fiji.run_fiji_macro(fiji.macro_path("fmc_predict_deepimagej.ijm"),
                              f"model=[{fiji.ij_path(model)}] input=[{fiji.ij_path(inputs)}] "
                              f"output=[{fiji.ij_path(out)}]", timeout=120)  # fmt: skip
    recs = [_parse_record(ln[len("stub ") :]) for ln in log.splitlines() if ln.startswith("stub model_path=")]
    assert len(recs) == 2 and all(r["display_output"] == "null" for r in recs)
    assert {Path(r["input_path"]).name for r in recs} == {"image_0_nucleus_angle.tif", "image_1_nucleus_angle.tif"}
    for k in range(2):  # renamed to the input's name, as fmc-ij predict writes them
        np.testing.assert_array_equal(
            tifffile.imread(out / f"image_{k}_nucleus_angle.tif"), np.full((3, 5, 7), 2 * (k + 1))
        )
    assert not list(out.glob("*_restored.tif")) and "done 2 image(s)" in log


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


# -- missing pieces: clear errors, in a fresh process -------------------------------------------------------------
def _connect_in_child(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "from fmc_ij.fiji import connect\nconnect()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_missing_java_and_missing_imagej_are_clear_errors(tmp_path):
    base = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "FIJI_HOME", "IJ_JAR", "FMC_IJ_FIJI")}
    no_java = _connect_in_child({**base, "PATH": str(Path(sys.executable).parent)})
    assert no_java.returncode != 0 and "Java not found (fmc-ij never downloads one)" in no_java.stderr
    no_ij = _connect_in_child({**base, "IJ_JAR": str(tmp_path / "nowhere" / "ij.jar")})
    assert no_ij.returncode != 0 and "IJ_JAR=" in no_ij.stderr and "no such file" in no_ij.stderr
    bad_fiji = _connect_in_child({**base, "FIJI_HOME": str(tmp_path)})
    assert bad_fiji.returncode != 0 and "is not a Fiji.app folder" in bad_fiji.stderr


def _imagej2_fiji() -> str | None:
    home = os.environ.get("FIJI_HOME")
    if home and any((Path(home) / "jars").glob("imagej-common-*.jar")):
        return home
    return None


@pytest.mark.skipif(_imagej2_fiji() is None, reason="no Fiji.app with ImageJ2 here: set FIJI_HOME to run this test")
def test_pyimagej_gateway_with_a_real_fiji(tmp_path):
    code = (
        "import numpy as np\nfrom fmc_ij.fiji import connect\nij = connect()\nassert ij.backend == 'pyimagej'\n"
        "a = np.arange(60, dtype=np.float32).reshape(3, 4, 5)\n"
        "b = ij.from_imageplus(ij.to_imageplus(a, spacing=(2, 0.5, 0.5)))\n"
        "assert (b.data == a).all() and b.meta.voxel_size() == (2, 0.5, 0.5)\n"
        "assert ij.run_macro('return \"\" + 6 * 7;') == '42'\nprint('ok', ij.version)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=280)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]
