"""The Fiji bridge in this process against the real ImageJ 1.53t (Debian libij-java), and a real Fiji.app.

The ``test_bridge_*`` tests are the bridge's interface: they run here on ImageJ 1 and, when ``FIJI_HOME`` names a
Fiji.app with ImageJ2, again in a child pytest on that Fiji (:func:`test_bridge_interface_on_a_real_fiji`).
NanoJ and deepImageJ are absent here: Java stand-ins (tests/stubs) register their command names in a Fiji-shaped
folder and read the options with ImageJ's own Macro / GenericDialog / OpenDialog / SaveDialog code, recording
what they got in system properties. The shipped macros in child processes are tested in test_imagej.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fmc_ij import fiji
from fmc_ij.errors import FmcInputError
from fmc_ij.io import ImageMeta, imread, imwrite

pytestmark = pytest.mark.imagej
pytest.importorskip("scyjava", reason="the Fiji bridge needs scyjava: pip install 'fmc-ij[fiji]'")


REAL_FIJI = os.environ.get("FMC_IJ_TEST_REAL_FIJI")  # set for the child pytest of the real-Fiji test


@pytest.fixture(scope="module")
def ij(request):
    """One JVM for this process: ImageJ 1 with the stand-in plugins (a Fiji folder without ImageJ2), or the real
    Fiji.app in ``FMC_IJ_TEST_REAL_FIJI``."""
    if REAL_FIJI:
        bridge = fiji.connect(REAL_FIJI)
        assert bridge.backend == "pyimagej" and bridge.gateway is not None
        return bridge
    bridge = fiji.connect(request.getfixturevalue("fake_fiji"))
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
def test_bridge_round_trip_is_exact_with_calibration(ij, dtype, axes, shape, spacing):
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


def test_bridge_image_objects_and_files_cross_with_their_metadata(ij, tmp_path):
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


def test_bridge_large_stack_crosses_both_ways(ij):
    """128x512x512 float32 both ways, exact (the speed is in benchmarks/bench_fiji.py)."""
    data = np.random.default_rng(1).random((128, 512, 512), dtype=np.float32)
    imp = ij.to_imageplus(data)
    np.testing.assert_array_equal(ij.from_imageplus(imp).data, data)
    # 1 MiB planes are ordinary objects, not G1 "humongous" ones (those made this transfer 10x slower)
    import jpype

    hotspot = jpype.JClass("java.lang.management.ManagementFactory").getPlatformMXBean(
        jpype.JClass("com.sun.management.HotSpotDiagnosticMXBean").class_
    )
    assert int(str(hotspot.getVMOption("G1HeapRegionSize").getValue())) > 2 * data[0].nbytes


# -- macros and commands ---------------------------------------------------------------------------------------
def test_bridge_macro_return_value_arguments_and_errors(ij, tmp_path):
    assert ij.run_macro('return "" + (parseFloat(getArgument()) * 2);', "21") == "42"
    with pytest.raises(fiji.MacroError, match="Undefined identifier"):
        ij.run_macro("x = notAFunction(1);")
    with pytest.raises(fiji.MacroError, match="stopped: no input given"):
        ij.run_macro('exit("no input given");')
    macro = tmp_path / "my macro [1].ijm"
    macro.write_text('a = call("ij.Macro.getValue", getArgument(), "name", "?"); print("got " + a); return a;')
    assert ij.run_macro_file(macro, "name=[a b é]") == "a b é"
    assert "got a b é" in ij.output  # ImageJ's printed output is kept


def test_bridge_dialogs_and_endless_macros_raise_instead_of_hanging(ij):
    imp = ij.to_imageplus(np.zeros((20, 30), np.float32))
    t0 = time.perf_counter()
    if ij.gateway is None:  # ImageJ 1 under Xvfb: with no options ImageJ would ask, and waits for an answer
        with pytest.raises(fiji.MacroError, match="opened a dialog: Gaussian Blur"):
            ij.run_command("Gaussian Blur...", "", image=imp, timeout=30)
    else:  # a headless Fiji cannot ask: the command takes its defaults, and a macro's own question is an error
        ij.run_command("Gaussian Blur...", "", image=imp, timeout=30)
        with pytest.raises(fiji.MacroError, match="headless dialog"):
            ij.run_macro('x = getNumber("How many?", 7);')
    with pytest.raises(TimeoutError, match="did not finish within 2 s"):
        ij.run_macro("while (true) { wait(10); }", timeout=2)
    assert time.perf_counter() - t0 < 20
    assert ij.run_macro('return "still alive";') == "still alive"


def test_bridge_menu_command_on_an_image(ij):
    data = np.zeros((2, 40, 40), np.float32)
    data[:, 20, 20] = 100
    imp = ij.to_imageplus(data)
    ij.run_command("Gaussian Blur...", "sigma=2 stack", image=imp)
    out = ij.from_imageplus(imp).data
    assert out[:, 20, 20].max() < 10 and out.sum() == pytest.approx(data.sum(), rel=1e-3)
    with pytest.raises(FmcInputError, match="no command 'Not A Command'"):
        ij.run_command("Not A Command")


def test_bridge_results_table(ij):
    code = ('run("Clear Results"); for (i = 0; i < 3; i++) { setResult("Area", i, i * 1.5 + 1e-9); '
            'setResult("Label", i, "cell " + i); } updateResults(); return "" + nResults;')  # fmt: skip
    assert ij.run_macro(code) == "3"
    rows = ij.table("Results")
    assert [r["Area"] for r in rows] == [1e-9, 1.5 + 1e-9, 3 + 1e-9]  # full precision, not the 3 shown digits
    assert [r["Label"] for r in rows] == ["cell 0", "cell 1", "cell 2"]
    with pytest.raises(FmcInputError, match="no results table titled 'nothing'"):
        ij.table("nothing")


def test_bridge_imagej2_datasets_and_ops(ij):
    a = np.random.default_rng(3).integers(0, 65536, (6, 20, 24), dtype=np.uint16)
    if ij.gateway is None:  # plain ImageJ 1: a clear error, no half-working gateway
        with pytest.raises(FmcInputError, match="ImageJ2 Datasets need a Fiji.app"):
            ij.to_dataset(a)
        with pytest.raises(FmcInputError, match="ImageJ2 ops need a Fiji.app"):
            ij.op("stats.mean", None)
        return
    ds = ij.to_dataset(a, spacing=(2.0, 0.4, 0.3))
    axes = [(str(ds.axis(d).type()), ds.axis(d).averageScale(0, 1), str(ds.axis(d).unit())) for d in range(3)]
    assert axes == [("X", 0.3, "micron"), ("Y", 0.4, "micron"), ("Z", 2.0, "micron")]
    back = ij.from_dataset(ds)
    np.testing.assert_array_equal(back.data, a)
    assert back.meta.voxel_size() == pytest.approx((2.0, 0.4, 0.3)) and back.meta.unit == "µm"
    assert float(ij.op("stats.mean", ds).getRealDouble()) == pytest.approx(a.mean(), rel=1e-12)
    smooth = ij.from_dataset(ij.gateway.op().filter().gauss(ds, 1.5))  # an op through the gateway itself
    assert smooth.data.shape == a.shape and smooth.data.std() < a.std() / 2


# -- NanoJ command strings, read back by ImageJ's own dialogs ------------------------------------
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


# -- deepImageJ: its rules, checked against ImageJ's own code -------------------------------------------------------
TITLES = ["img 1_nucleus.tif", "img1_nucleus.tif", "a.b c.tif", "  padded name .tif ", ".hidden file", "no ext here",
          "name.ome.tif", "x.y", "série 2.tiff", "two  spaces.tif", "v1.2_a.tif"]  # fmt: skip


def test_short_title_and_output_name_are_imagejs(ij, tmp_path):
    """Each name through ImageJ's ImagePlus.getShortTitle and IJ.saveAsTiff, as deepImageJ calls them."""
    IJ = ij._sj.jimport("ij.IJ")
    for k, (title, tensor) in enumerate([(t, "restored") for t in TITLES] + [("a.b.c", "x"), ("v1.2.c", "x")]):
        imp = ij.to_imageplus(np.zeros((2, 2), np.float32), title=title)
        assert fiji.short_title(title) == str(imp.getShortTitle()), title
        out = tmp_path / str(k)
        out.mkdir()
        saved = ij.to_imageplus(np.zeros((2, 2), np.float32), title=f"{imp.getShortTitle()}_{tensor}")
        IJ.saveAsTiff(saved, str(out / str(saved.getTitle())))
        assert [p.name for p in out.iterdir()] == [fiji.output_name(title, tensor)], title
    assert fiji.output_name("img 1_nucleus.tif") == "img1_nucleus_restored.tif"
    assert fiji.output_name("a.b.c", "x") == "a.tif"  # saveAsTiff replaced the short "extension" .b_x


def _old_build_value(options: str, key: str) -> str | None:
    """How deepImageJ builds from 2024-11-11 to 2025-06-12 read a key: case-sensitive indexOf of ``key=``."""
    at = options.find(key + "=")
    if at < 0:
        return None
    if options.startswith(key + "=[", at):
        return options[at + len(key) + 2 : options.index("] ", at)]
    return options[at + len(key) + 1 : options.index(" ", at)]


def test_deepimagej_run_keys_reach_every_build(ij, odd_dir):
    model, src, out = odd_dir / "fmc-ij model", odd_dir / "in put.tif", odd_dir / "out"
    model.mkdir()
    (model / "rdf.yaml").write_text("format_version: 0.5.10\n")
    tifffile.imwrite(src, np.full((4, 6), 3, np.float32))
    cmd = fiji.deepimagej_run(model, src, out)
    Macro = ij._sj.jimport("ij.Macro")
    opts = cmd.options + " "  # Macro.getOptions() appends a space
    want = [model.resolve(), src.resolve(), out.resolve(), "null"]

    def seen(values: list) -> list:  # paths with brackets reach ImageJ through a bracket-free link
        return [Path(str(v)).resolve() for v in values[:3]] + [str(values[3])]

    for keys in fiji.deepimagej.RUN_KEYS[:2]:  # 3.1, and 2025-06-12..07-17: Macro.getValue (lower-cases the key)
        assert seen([Macro.getValue(opts, k, None) for k in keys]) == want
    assert seen([_old_build_value(opts, k) for k in fiji.deepimagej.RUN_KEYS[2]]) == want  # 2024-11..2025-06
    ij.run_command(cmd)  # the 3.1 stand-in reads the options and writes deepImageJ's name
    rec = _stub(ij, "DeepImageJ Run")
    assert Path(rec["model_path"]).resolve() == model.resolve() and Path(rec["input_path"]).resolve() == src.resolve()
    assert Path(rec["output_folder"]).resolve() == out.resolve() and rec["display_output"] == "null"
    np.testing.assert_array_equal(tifffile.imread(out / "input_restored.tif"), np.full((4, 6), 6, np.float32))


def test_run_on_files_loads_the_model_once_and_keeps_input_names(ij, odd_dir):
    model = odd_dir / "model"
    model.mkdir()
    (model / "rdf.yaml").write_text("format_version: 0.5.10\n")
    srcs = []
    for k, name in enumerate(["img 1_nucleus.tif", "img1_nucleus.tif", "a.b c.tif"], 1):  # two share a short title
        srcs.append(odd_dir / name)
        meta = ImageMeta(axes="ZYX", spacing={"Z": float(k), "Y": 0.4, "X": 0.4}, unit="µm", channel="nucleus")
        imwrite(srcs[-1], np.full((2, 3, 4), k, np.uint16), meta)
    System = ij._sj.jimport("java.lang.System")
    loads = int(str(System.getProperty("fmc.stub.DeepImageJ Run.loads") or 0))
    written = fiji.run_on_files(ij, model, srcs, odd_dir / "out")
    assert int(str(System.getProperty("fmc.stub.DeepImageJ Run.loads"))) == loads + 1
    assert [p.name for p in written] == [s.name for s in srcs]
    for k, p in enumerate(written, 1):  # its input's values (x2, the stand-in's network) and voxel size
        got = imread(p)
        np.testing.assert_array_equal(got.data, np.full((2, 3, 4), 2 * k, np.float32))
        assert got.meta.voxel_size() == (k, 0.4, 0.4) and (got.meta.unit, got.meta.channel) == ("µm", "nucleus")
    assert sorted(p.name for p in (odd_dir / "out").iterdir()) == sorted(s.name for s in srcs)
    with pytest.raises(FmcInputError, match=r"deepImageJ wrote no output for img 1_nucleus.tif.*no rdf.yaml"):
        fiji.run_on_files(ij, odd_dir, srcs[:1], odd_dir / "out2")  # no rdf.yaml: the stand-in refuses


@pytest.mark.parametrize("locale", ["US", "GERMANY"])
def test_install_folder_name_follows_simpledateformat(ij, locale):
    """``ddMMYYYY`` is a week year: JDK's SimpleDateFormat decides (US: Sunday weeks; Germany: ISO weeks)."""
    import datetime as dt

    sj = ij._sj
    Locale, TimeZone = sj.jimport("java.util.Locale"), sj.jimport("java.util.TimeZone")
    fmt = sj.jimport("java.text.SimpleDateFormat")("ddMMYYYY_HHmmss", getattr(Locale, locale))
    fmt.setTimeZone(TimeZone.getTimeZone("UTC"))
    rule = {"US": (6, 1), "GERMANY": (0, 4)}[locale]  # (first weekday, Monday=0; minimal days in week 1)
    for day in ["2025-12-27", "2025-12-28", "2025-12-29", "2026-01-01", "2026-06-30", "2027-01-02", "2020-12-31",
                "2021-01-03", "2024-12-29"]:  # fmt: skip
        when = dt.datetime.fromisoformat(day + "T13:04:05+00:00")
        java = str(fmt.format(sj.jimport("java.util.Date")(int(when.timestamp() * 1000))))
        name = fiji.deepimagej.install_dir_name("my model.zip", when.replace(tzinfo=None), week=rule)
        assert name == f"my model_{java}", day
    assert fiji.deepimagej.install_dir_name("a:b.ZIP", dt.datetime(2026, 3, 4, 5, 6, 7)) == "a_b.ZIP_04032026_050607"


def test_option_rules():
    assert fiji.trim_key("Max. Mag. in Optimization") == "max." and fiji.trim_key("Sigma (Radius):") == "sigma"
    assert fiji.options({"Apply": False, "show_drift_table": True, "Path": "/a b/c", "n": 2}) == (
        "show_drift_table path=[/a b/c] n=2"
    )
    with pytest.raises(FmcInputError, match="new file whose name holds"):
        fiji.ij_path("/tmp/does not exist]/x]")


# -- what deepImageJ needs from a bundle --------------------------------------------------------------------------
MODELS = Path(__file__).resolve().parents[1] / "models"


def _rdf(bundle: Path) -> dict:
    import yaml

    with zipfile.ZipFile(bundle) as z:
        return yaml.safe_load(z.read("rdf.yaml"))


def _deepimagej_ready(rdf: dict, tile: tuple[int, int, int], halo: tuple[int, int, int] = (14, 28, 28)) -> dict:
    """``rdf`` as deepImageJ 3.1 ran the 2026-11 ``models/`` bundles on 128x1024x1024 (halo 14/28/28, a nickname,
    a finite clip max, fixed tiles)."""
    rdf = json.loads(json.dumps(rdf))
    rdf.setdefault("config", {}).setdefault("bioimageio", {})["nickname"] = "fmc-ij-care3d-nucleus"
    for step in rdf["outputs"][0]["postprocessing"]:
        if step["id"] == "clip":
            step["kwargs"]["max"] = 1.0e30
    for ax, t in zip([a for a in rdf["inputs"][0]["axes"] if a["type"] == "space"], tile):
        ax["size"] = t
    for ax, h in zip([a for a in rdf["outputs"][0]["axes"] if a["type"] == "space"], halo):
        ax["halo"] = h
    return rdf


@pytest.mark.parametrize("bundle", sorted(MODELS.glob("*.zip")), ids=lambda p: p.name)
def test_bundle_problems_names_what_stops_deepimagej(bundle):
    rdf = _rdf(bundle)
    assert fiji.bundle_problems(rdf) == []  # the shipped bundles run in deepImageJ 3.1 as they are
    # as run in JDLL 0.6.1 + deepImageJ 3.1 (identity engine, issue 24): 44x128x128 tiles, 1,350 on 128x1024x1024
    assert fiji.tile_grid(rdf, (128, 1024, 1024)) == (6, 15, 15)
    fixed = _deepimagej_ready(rdf, (64, 192, 192))
    assert fiji.bundle_problems(fixed) == []
    # the figures of the real JDLL 0.6.1 runs of the 2026-11 bundles: tiles of 64x192x192 with halo 14/28/28
    assert fiji.tile_grid(fixed, (96, 600, 600)) == (3, 5, 5)  # 75 tiles
    assert fiji.tile_grid(fixed, (128, 1024, 1024)) == (4, 8, 8)  # 256 tiles
    assert fiji.min_image_size(fixed) == (22, 64, 64)  # JDLL refused 21x64x64 and 22x63x64, ran 22x64x64
    broken = json.loads(json.dumps(fixed))
    broken["inputs"][0]["axes"][1].pop("channel_names")
    broken["outputs"][0]["postprocessing"].append({"id": "softmax", "kwargs": {}})
    broken["config"]["bioimageio"]["nickname"] = "a/b/c"
    broken["documentation"] = {"source": "README.md"}
    assert len(fiji.bundle_problems(broken)) == 4
    unfixed = json.loads(json.dumps(rdf))  # what the 2026-11 bundles lacked, each named
    for step in unfixed["outputs"][0]["postprocessing"]:
        if step["id"] == "clip":
            step["kwargs"].pop("max")
    unfixed["config"]["bioimageio"].pop("nickname")
    problems = fiji.bundle_problems(unfixed)
    assert len(problems) == 2 and any("clip needs both min and max" in p for p in problems)
    assert any("friend-N" in p for p in problems)


def test_choose_tile_fits_the_budget_and_the_network():
    from fmc_ij.export.jdll import choose_tile, tile_budget

    halo, step, mins = (14, 28, 28), (2, 4, 4), (30, 60, 60)  # the models/ bundles' U-Net
    budget = tile_budget(2**30, 16)  # 1 GiB of activations, 16 base channels
    tile = choose_tile(halo, step, mins, budget)
    assert tile == (88, 176, 176) and np.prod(tile) <= budget  # shaped like the halo: t = k h
    assert all(t % (2 * s) == 0 and t >= m and t > 2 * h for t, s, m, h in zip(tile, step, mins, halo))
    assert choose_tile((28, 28), (4, 4), (60, 60), 40_000) == (200, 200)  # 2D: exactly the budget
    assert choose_tile(halo, step, mins, 32 * 64 * 64) == (32, 64, 64)  # the smallest: min rounded to 2 steps
    assert choose_tile(halo, step, mins, 1000) == (32, 64, 64)  # below the smallest tile: that tile


def test_install_model_unpacks_like_deepimagej(tmp_path):
    import datetime as dt

    bundle = sorted(MODELS.glob("*.zip"))[0]
    when = dt.datetime(2025, 12, 29, 9, 8, 7)
    folder = fiji.install_model(bundle, tmp_path / "Fiji.app", when=when)
    assert folder == tmp_path / "Fiji.app" / "models" / f"{bundle.stem}_29122026_090807"  # a week year: 2026
    assert (folder / "rdf.yaml").is_file() and folder.with_name(
        folder.name + ".zip"
    ).read_bytes() == bundle.read_bytes()
    with pytest.raises(FmcInputError, match="exists already"):
        fiji.install_model(bundle, tmp_path / "Fiji.app", when=when)
    with pytest.raises(FmcInputError, match="not a zip file"):
        fiji.install_model(Path(__file__), tmp_path / "Fiji.app")


# -- docs/fiji.md's examples ----------------------------------------------------------------------------------------
DOCS = Path(__file__).resolve().parents[1] / "docs" / "fiji.md"


def test_docs_examples_run(ij, fake_fiji, tmp_path, monkeypatch):
    """The Python blocks docs/fiji.md marks as tested, on this ImageJ (the deepImageJ stand-in in FIJI_HOME)."""
    import re

    blocks = re.findall(r"<!-- example: runs in the test suite[^>]*-->\n```python\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) == 2
    monkeypatch.setenv("FIJI_HOME", str(REAL_FIJI or fake_fiji))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "fmc-ij-care3d-nucleus.zip").write_bytes((MODELS / "fmc-ij-care3d-nucleus.zip").read_bytes())
    for code in blocks:
        exec(compile(code, str(DOCS), "exec"), {"__name__": "docs_example"})  # noqa: S102 (our own docs)
    assert (tmp_path / "out" / "img 1_nucleus.tif").is_file()


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


def test_local_endpoints_are_those_whose_jar_fiji_has(tmp_path):
    from fmc_ij.fiji.session import local_endpoints

    (tmp_path / "jars" / "bio-formats").mkdir(parents=True)
    for jar in ("imglib2-imglyb-1.1.0.jar", "imglib2-7.1.4.jar", "bio-formats/formats-api-8.1.1.jar"):
        (tmp_path / "jars" / jar).write_bytes(b"")
    asked = ["net.imglib2:imglib2-imglyb:1.1.0", "net.imglib2:imglib2", "ome:formats-api", "net.imagej:imagej-ops"]
    assert local_endpoints(asked, tmp_path) == asked[:3]  # imagej-ops is not there: jgo may still look it up


def _imagej2_fiji() -> str | None:
    home = os.environ.get("FIJI_HOME")
    if home and any((Path(home) / "jars").glob("imagej-common-*.jar")):
        return home
    return None


@pytest.mark.skipif(REAL_FIJI is not None or _imagej2_fiji() is None,
                    reason="no Fiji.app with ImageJ2 here: set FIJI_HOME to a Fiji.app to run this test")  # fmt: skip
def test_bridge_interface_on_a_real_fiji():
    """Every ``test_bridge_*`` test again, in a child pytest whose ``ij`` is the Fiji in FIJI_HOME, offline."""
    env = {**os.environ, "FMC_IJ_TEST_REAL_FIJI": str(_imagej2_fiji())}
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "bridge and not real_fiji"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and "failed" not in res.stdout and "skipped" not in res.stdout
    assert time.perf_counter() - t < 300  # start, every test and a clean exit (no thread left waiting)
