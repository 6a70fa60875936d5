"""Real files users have, through io and the CLI: HDF5 (PlantSeg), N5 and plain Zarr, multi-channel stacks with and
without axes metadata, 8-bit, camera offsets, uncalibrated float32 (the files in ``shared/data/real``)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fmc_ij import io
from fmc_ij.errors import FmcInputError


def _real() -> Path | None:
    here = Path(__file__).resolve().parents[1]
    for cand in (os.environ.get("FMC_IJ_REAL_DATA"), here.parent / "shared" / "data" / "real",
                 "/work/shared/data/real"):  # fmt: skip
        if cand and Path(cand, "plantseg_ovule").is_dir():
            return Path(cand)
    return None


REAL = _real()
needs_real = pytest.mark.skipif(REAL is None, reason="shared/data/real not found (set FMC_IJ_REAL_DATA)")
OVULE = (REAL or Path(".")) / "plantseg_ovule" / "sample_ovule.h5"
MEMBRANES_NUCLEI = (REAL or Path(".")) / "neubias" / "xyc_8bit__membranes_nuclei.tif"


def run_cli(capfd, *args):
    from fmc_ij.cli import main

    capfd.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capfd.readouterr()
    return code, out, err


@needs_real
def test_hdf5_dataset_found_with_its_voxel_size():
    img = io.open_lazy(OVULE)  # raw and label inside: the raw-data name wins, labels are skipped
    assert img.axes == "ZYX" and img.shape == (32, 128, 128) and img.dtype == np.uint8
    assert img.meta.unit == "µm" and img.meta.spacing == pytest.approx({"Z": 0.235, "Y": 0.15, "X": 0.15})
    label = io.imread(f"{OVULE}:/label")
    assert label.dtype == np.uint16 and label.data.max() > 100
    derived = io.imread(OVULE.with_name("sample_ovule_raw.derived.tif"))  # the same raw data as an ImageJ TIFF
    np.testing.assert_array_equal(np.asarray(img.data[...]), derived.data)
    assert derived.meta.spacing == pytest.approx(img.meta.spacing)
    with pytest.raises(FmcInputError, match="no dataset /nope"):
        io.open_lazy(f"{OVULE}:/nope")


def test_hdf5_choice_errors_and_missing_h5py(tmp_path, monkeypatch):
    import h5py  # a core dependency

    p = tmp_path / "two.h5"
    with h5py.File(p, "w") as f:
        f["a"] = np.zeros((8, 16, 16), np.uint8)
        f["b"] = np.ones((8, 16, 16), np.uint8)
        f["b"].attrs["axes"] = "zyx"
        f["b"].attrs["resolution"] = [2.0, 0.5, 0.5]
        f["b"].attrs["unit"] = "nm"
    with pytest.raises(FmcInputError, match="several image datasets"):
        io.open_lazy(p)
    b = io.open_lazy(f"{p}:/b")
    assert b.meta.unit == "nm" and b.meta.spacing == {"Z": 2.0, "Y": 0.5, "X": 0.5}
    assert b.meta.in_unit("µm").spacing == pytest.approx({"Z": 0.002, "Y": 0.0005, "X": 0.0005})
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(FmcInputError, match="HDF5"):
        io.open_lazy(tmp_path / "bad.h5")
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)
    with pytest.raises(FmcInputError, match="needs h5py"):
        io.open_lazy(p)


def test_n5_and_plain_zarr(tmp_path):
    """A hand-written N5 dataset (gzip and raw blocks, big-endian, XYZ dimensions) and a plain zarr array."""
    data = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)
    root = tmp_path / "vol.n5"
    ds = root / "setup0" / "s0"
    ds.mkdir(parents=True)
    (root / "attributes.json").write_text(json.dumps({"n5": "2.0.0"}))
    (ds / "attributes.json").write_text(json.dumps({"dimensions": [7, 6, 5], "blockSize": [4, 4, 4],
                                                    "dataType": "uint16", "compression": {"type": "gzip"},
                                                    "pixelResolution": {"dimensions": [0.2, 0.2, 1.0],
                                                                        "unit": "um"}}))  # fmt: skip
    for bz in range(2):
        for by in range(2):
            for bx in range(2):
                blk = data[bz * 4 : bz * 4 + 4, by * 4 : by * 4 + 4, bx * 4 : bx * 4 + 4]
                head = struct.pack(">HH", 0, 3) + struct.pack(">III", *blk.shape[::-1])
                body = blk.astype(">u2").tobytes()
                f = ds / str(bx) / str(by) / str(bz)
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(head + gzip.compress(body))
    img = io.open_lazy(root)
    assert img.shape == (5, 6, 7) and img.axes == "ZYX"
    assert img.meta.spacing == pytest.approx({"Z": 1.0, "Y": 0.2, "X": 0.2}) and img.meta.unit == "µm"
    np.testing.assert_array_equal(img.data[...], data)
    np.testing.assert_array_equal(img.data[2, 1:5, 3:7], data[2, 1:5, 3:7])
    import zarr

    z = zarr.open_array(str(tmp_path / "plain.zarr"), mode="w", shape=(6, 20, 20), chunks=(2, 8, 8), dtype="f4")
    z[...] = np.ones((6, 20, 20), np.float32)
    assert io.imread(tmp_path / "plain.zarr").shape == (6, 20, 20)


def test_channel_axis_inferred_and_hinted(tmp_path):
    """A ZCYX stack written without axes metadata: the short axis is read as channels and the guess is noted;
    ``axes=`` overrides it; channel names written by fmc-ij come back."""
    z = np.random.default_rng(0).integers(0, 255, (6, 2, 16, 16)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "plain.tif", z, photometric="minisblack")
    img = io.open_lazy(tmp_path / "plain.tif")
    assert img.axes == "ZCYX" and "channels" in img.meta.note
    assert io.open_lazy(tmp_path / "plain.tif", axes="TCYX").axes == "TCYX"
    chans = img.channels()
    assert [c.meta.channel for c in chans] == ["c0", "c1"] and chans[1].shape == (6, 16, 16)
    np.testing.assert_array_equal(np.asarray(chans[1].data[...]), z[:, 1])
    meta = io.ImageMeta(axes="ZCYX", spacing={"Z": 1, "Y": 0.3, "X": 0.3}, channel_names=("membrane", "nucleus"))
    for flavour in ("imagej", "ome"):
        io.imwrite(tmp_path / f"named_{flavour}.tif", z, meta, flavour=flavour)
        back = io.imread(tmp_path / f"named_{flavour}.tif")
        assert back.meta.channel_names == ("membrane", "nucleus") and back.meta.note == ""
    with pytest.raises(FmcInputError):
        io.open_lazy(tmp_path / "plain.tif", axes="ZYX")  # 3 letters for 4 dimensions


@needs_real
def test_info_on_hdf5_and_multichannel_real_files(capfd):
    code, out, err = run_cli(capfd, "info", OVULE, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["shape"] == [32, 128, 128] and d["voxel_size"] == {"Z": 0.235, "Y": 0.15, "X": 0.15}
    code, out, err = run_cli(capfd, "info", MEMBRANES_NUCLEI, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["axes"] == "CYX" and d["dtype"] == "uint8" and d["shape"] == [2, 354, 475]
    code, out, err = run_cli(capfd, "info", REAL / "flowdec" / "bead-25pct" / "data.tif", "--json")
    assert code == 0 and json.loads(out)["unit"] == "pixel" and json.loads(out)["dtype"] == "float32"


def _evaluate(capfd, tmp_path, pred, gt, inp, name, *extra):
    for sub, src in (("pred", pred), ("gt", gt), ("input", inp)):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, tmp_path / sub / name) if isinstance(src, Path) else src(tmp_path / sub / name)
    return run_cli(capfd, "evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--input",
                   tmp_path / "input", "--out", tmp_path / "out", "--no-iou", *extra)  # fmt: skip


@needs_real
def test_evaluate_on_hdf5_end_to_end(capfd, tmp_path):
    """Ground truth and input as HDF5 (the real PlantSeg volume and a noisier copy), the prediction as a TIFF of
    the same stem: matched, scored, reported."""
    import h5py  # a core dependency

    raw = io.imread(OVULE).data.astype(np.float32)
    rng = np.random.default_rng(0)

    def noisy(path, sigma=25.0):
        with h5py.File(path, "w") as f:
            f["raw"] = np.clip(raw + rng.normal(0, sigma, raw.shape), 0, 255).astype(np.uint8)
            f["raw"].attrs["element_size_um"] = [0.235, 0.15, 0.15]

    def pred(path):
        io.imwrite(path.with_suffix(".tif"), np.clip(raw + rng.normal(0, 8, raw.shape), 0, 255).astype(np.uint8),
                   io.ImageMeta(axes="ZYX", spacing={"Z": 0.235, "Y": 0.15, "X": 0.15}))  # fmt: skip

    code, out, err = _evaluate(capfd, tmp_path, pred, OVULE, noisy, "ovule.h5")
    assert code == 0, err
    rows = (tmp_path / "out" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("ovule,")
    s = json.loads((tmp_path / "out" / "summary.json").read_text())["image"]["all"]
    assert s["ssim_pred"]["mean"] > s["ssim_input"]["mean"] and s["n_ssim"]["mean"] > 0
    assert (tmp_path / "out" / "report.html").is_file()


@needs_real
def test_evaluate_on_two_channel_zcyx_stack(capfd, tmp_path):
    """A 2-channel ZCYX stack without axes metadata (the real ovule volume and a second, nuclear-like channel):
    scored channel by channel; the real CYX membranes/nuclei image likewise; camera offsets do not change the
    scores (percentile normalisation)."""
    raw = io.imread(OVULE).data[8:24, 16:112, 16:112].astype(np.float32)  # a 16x96x96 part: seconds, not tens
    from scipy import ndimage

    second = ndimage.gaussian_filter(raw, 2) * 1.5
    gt = np.stack([raw, second], 1)  # ZCYX
    rng = np.random.default_rng(1)

    def writer(noise, offset=0.0):
        def w(path):
            arr = np.clip(gt + rng.normal(0, noise, gt.shape) + offset, 0, 65535).astype(np.uint16)
            tifffile.imwrite(path, arr, photometric="minisblack")  # no axes metadata: inferred ZCYX

        return w

    code, out, err = _evaluate(capfd, tmp_path, writer(6), writer(0), writer(25, offset=100), "cells.tif",
                                "--no-figures")  # fmt: skip
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sorted(s) == ["c0", "c1"]
    for ch in ("c0", "c1"):
        assert s[ch]["all"]["ssim_pred"]["mean"] > s[ch]["all"]["ssim_input"]["mean"]
    from fmc_ij.evaluate import EvalConfig, evaluate_images

    a, b, c = raw + rng.normal(0, 6, raw.shape), raw, raw + rng.normal(0, 25, raw.shape)
    cfg = EvalConfig(iou=False)
    r0 = evaluate_images(a, b, c, spacing=None, channel="x", cfg=cfg)
    r1 = evaluate_images(a + 100, b + 100, c + 100, spacing=None, channel="x", cfg=cfg)
    assert r1["n_ssim"] == pytest.approx(r0["n_ssim"], rel=1e-4)


@needs_real
def test_evaluate_real_cyx_8bit_and_mismatched_channels(capfd, tmp_path):
    cyx = io.imread(MEMBRANES_NUCLEI).data
    rng = np.random.default_rng(2)

    def w(noise, channels=2):
        src = cyx if channels > 1 else cyx[0]
        meta = io.ImageMeta(axes="CYX", channel_names=("membranes", "nuclei")) if channels > 1 else None

        def f(path):
            arr = np.clip(src.astype(float) + rng.normal(0, noise, src.shape), 0, 255).astype(np.uint8)
            io.imwrite(path, arr, meta or io.ImageMeta(axes="YX"))

        return f

    code, out, err = _evaluate(capfd, tmp_path / "a", w(1), MEMBRANES_NUCLEI, w(6), "mn.tif", "--no-figures")
    assert code == 0, err
    assert sorted(json.loads((tmp_path / "a" / "out" / "summary.json").read_text())) == ["membranes", "nuclei"]
    code, out, err = _evaluate(capfd, tmp_path / "b", w(1, channels=1), MEMBRANES_NUCLEI, w(6), "mn.tif")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "single-channel" in err


@needs_real
def test_predict_on_hdf5_and_two_channel_zcyx_stack(capfd, tmp_path):
    """``fmc-ij predict`` takes what users have: a PlantSeg HDF5 volume (written as ``<name>.tif``) and a 2-channel
    ZCYX stack without axes metadata (restored channel by channel, written back as one ZCYX image, with a ZCYX gate
    map); each result equals the prediction of the same voxels given as a plain one-channel TIFF."""
    import h5py  # a core dependency

    from fmc_ij.nn.factory import ModelConfig, build_model
    from fmc_ij.predict import load_predictor, predict_file
    from fmc_ij.train.checkpoint import save_model

    mc = ModelConfig(ndim=3, depth=2, base=4).resolve_pool((1.0, 0.4, 0.4))
    save_model(tmp_path / "run" / "model.pt", build_model(mc).eval(),
               {"model": mc.model_dump(mode="json"), "data": {"pmin": 2.0, "pmax": 99.8}}, step=1)  # fmt: skip
    raw = io.imread(OVULE).data[8:24, 16:80, 16:80]
    with h5py.File(tmp_path / "vol.h5", "w") as f:
        f["raw"] = raw
    second = (raw.astype(np.float32) * 0.5 + 40).astype(raw.dtype)
    tifffile.imwrite(tmp_path / "cells.tif", np.stack([raw, second], 1), photometric="minisblack")
    opts = ("--scale", "float32", "--gate", "off", "--no-uncertainty")
    code, _, err = run_cli(capfd, "predict", "--model", tmp_path / "run", "--out", tmp_path / "o", *opts,
                           tmp_path / "vol.h5", tmp_path / "cells.tif")  # fmt: skip
    assert code == 0, err
    p = load_predictor(tmp_path / "run")
    refs = []
    for k, plane in enumerate((raw, second)):
        io.imwrite(tmp_path / "one" / f"c{k}.tif", plane, io.ImageMeta(axes="ZYX"))
        refs.append(
            io.imread(
                predict_file(
                    p,
                    tmp_path / "one" / f"c{k}.tif",
                    tmp_path / "ref" / f"c{k}.tif",
                    output="float32",
                    gate=False,
                    uncertainty=False,
                    progress=False,
                )[0]
            ).data
        )
    np.testing.assert_allclose(io.imread(tmp_path / "o" / "vol.tif").data, refs[0], atol=1e-5)
    both = io.imread(tmp_path / "o" / "cells.tif")
    assert both.axes == "ZCYX" and both.shape == (16, 2, 64, 64)
    for k in range(2):
        np.testing.assert_allclose(both.data[:, k], refs[k], atol=1e-5)
    code, _, err = run_cli(capfd, "predict", "--model", tmp_path / "run", "--out", tmp_path / "g",
                           tmp_path / "cells.tif")  # fmt: skip
    assert code == 0, err
    gate = io.imread(tmp_path / "g" / "cells_gate.tif")
    assert gate.axes == "ZCYX" and gate.shape == (16, 2, 64, 64) and 0.0 <= gate.data.min() <= gate.data.max() <= 1
