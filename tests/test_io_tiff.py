"""TIFF round trips, the Fuse My Cells metadata spellings, lazy access, bad input and atomic writes."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import tifffile

from fmc_ij import io
from fmc_ij.errors import FmcInputError

FMC_META = io.ImageMeta(
    axes="ZYX",
    spacing={"Z": 1.01, "Y": 0.388, "X": 0.388},
    unit="µm",
    channel="nucleus",
    study=5,
    extra={"note": "kept"},
)


def _data(shape, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape).astype(dtype)


@pytest.mark.parametrize("flavour", ["imagej", "ome", "fmc"])
@pytest.mark.parametrize(
    "axes,shape", [("YX", (17, 23)), ("ZYX", (5, 17, 23)), ("CZYX", (2, 5, 17, 23)), ("TZCYX", (2, 3, 2, 9, 11))]
)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_round_trip_every_key(tmp_path, flavour, axes, shape, dtype):
    spacing = {"Z": 1.01, "Y": 0.388, "X": 0.25}
    meta = io.ImageMeta(axes=axes, spacing=spacing, unit="µm", channel="membrane", study=3, extra={"note": "x"})
    data = _data(shape, dtype)
    path = tmp_path / ("img.ome.tif" if flavour == "ome" else "img.tif")
    io.imwrite(path, data, meta, flavour=flavour)
    back = io.imread(path, axes=axes)
    assert back.meta == meta
    np.testing.assert_array_equal(back.data, data)
    assert back.data.dtype == data.dtype


def test_fmc_flavour_is_what_the_challenge_template_reads_and_writes(tmp_path):
    data = _data((6, 200, 300))
    path = tmp_path / "image_7_nucleus_angle.tif"
    io.imwrite(path, data, FMC_META, flavour="fmc")
    # The organisers' template: tif.shaped_metadata[0], then PhysicalSizeX/Y for the resolution.
    with tifffile.TiffFile(path) as tif:
        md = tif.shaped_metadata[0]
        assert tif.is_bigtiff
        assert tif.pages.first.is_tiled and tif.pages.first.tilewidth == 128 and tif.pages.first.tilelength == 128
        xres, yres = tif.pages.first.get_resolution()
    assert md["PhysicalSizeX"] == 0.388 and md["PhysicalSizeY"] == 0.388 and md["PhysicalSizeZ"] == 1.01
    assert md["spacing"] == 1.01 and md["unit"] == "µm" and md["axes"] == "ZYX"
    assert md["channel"] == "nucleus" and md["study"] == 5
    assert xres == pytest.approx(1 / 0.388) and yres == pytest.approx(1 / 0.388)


@pytest.mark.parametrize("key", ["PhysicalSizeX", "physicalsizex", "physical_size_x"])
def test_physical_size_spellings_from_shaped_metadata(tmp_path, key):
    path = tmp_path / "a.tif"
    md = {
        key: 0.195,
        key.replace("X", "Y").replace("x", "y"): 0.2,
        key.replace("X", "Z").replace("x", "z"): 3.0,
        "channel": "membrane",
        "study": "1",
    }
    tifffile.imwrite(path, _data((4, 8, 8)), photometric="minisblack", metadata=md)
    meta = io.read_meta(path)[0]
    assert meta.spacing == {"Z": 3.0, "Y": 0.2, "X": 0.195}
    assert meta.channel == "membrane" and meta.study == 1 and meta.axes == "ZYX"


def test_imagej_training_file_with_lowercase_keys(tmp_path):
    """The challenge's training TIFFs: ImageJ metadata with physical_size_x/y/z and spacing."""
    path = tmp_path / "image_3_membrane_fused.tif"
    tifffile.imwrite(
        path,
        _data((4, 8, 8)),
        imagej=True,
        metadata={
            "axes": "ZYX",
            "spacing": 1.0,
            "unit": "micron",
            "physical_size_x": 0.39,
            "physical_size_y": 0.39,
            "physical_size_z": 1.0,
            "channel": "membrane",
            "study": 3,
        },
    )
    meta = io.read_meta(path)[0]
    assert meta.spacing == {"Z": 1.0, "Y": 0.39, "X": 0.39}
    assert (meta.unit, meta.channel, meta.study) == ("µm", "membrane", 3)


def test_headerless_key_value_description(tmp_path):
    """A description of bare key=value lines (no "ImageJ=" header), as PIL-based readers parse it."""
    path = tmp_path / "a.tif"
    desc = "physicalsizex=0.195\nphysicalsizey=0.195\nphysicalsizez=1.0\nchannel=nucleus\nstudy=2\n"
    tifffile.imwrite(path, _data((3, 8, 8)), photometric="minisblack", description=desc, metadata=None)
    meta = io.read_meta(path)[0]
    assert meta.spacing == {"Z": 1.0, "Y": 0.195, "X": 0.195} and meta.study == 2 and meta.channel == "nucleus"


def test_spacing_list_and_missing_study(tmp_path):
    path = tmp_path / "a.tif"
    tifffile.imwrite(
        path, _data((3, 8, 8)), photometric="minisblack", metadata={"spacing": [2.0, 0.5, 0.25], "unit": "um"}
    )
    meta = io.read_meta(path)[0]
    assert meta.spacing == {"Z": 2.0, "Y": 0.5, "X": 0.25} and meta.unit == "µm" and meta.study is None


def test_uncalibrated_and_resolution_tags(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", _data((8, 8)))
    assert io.read_meta(tmp_path / "plain.tif")[0].unit == "pixel"
    tifffile.imwrite(tmp_path / "cm.tif", _data((8, 8)), resolution=(1e4 / 0.3, 1e4 / 0.3), resolutionunit="CENTIMETER")
    meta = io.read_meta(tmp_path / "cm.tif")[0]
    assert meta.unit == "µm" and meta.spacing["X"] == pytest.approx(0.3)


def test_ome_zarr_round_trip_and_lazy(tmp_path):
    meta = io.ImageMeta(axes="CZYX", spacing={"Z": 2.0, "Y": 0.3, "X": 0.3}, channel="nucleus", study=1)
    data = _data((2, 7, 30, 40))
    io.write_ome_zarr(tmp_path / "v.zarr", data, meta, chunks=(1, 4, 16, 16))
    img = io.open_lazy(tmp_path / "v.zarr")
    assert not isinstance(img.data, np.ndarray)
    assert img.meta == meta
    np.testing.assert_array_equal(img.data[1, 2:5, 3:20], data[1, 2:5, 3:20])
    attrs = json.loads((tmp_path / "v.zarr" / ".zattrs").read_text())
    assert attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 2.0, 0.3, 0.3]


@pytest.mark.parametrize("flavour,lazy_type", [("imagej", np.memmap), ("fmc", None)])
def test_open_lazy_tiff(tmp_path, flavour, lazy_type):
    data = _data((9, 140, 150))
    io.imwrite(tmp_path / "v.tif", data, FMC_META, flavour=flavour)
    img = io.open_lazy(tmp_path / "v.tif")
    if lazy_type is not None:
        assert isinstance(img.data, lazy_type)
    else:  # tiled BigTIFF: a zarr view over the file, nothing read up front
        assert not isinstance(img.data, np.ndarray)
    np.testing.assert_array_equal(np.asarray(img.data[3:5, 100:140, 7:131]), data[3:5, 100:140, 7:131])
    assert img.meta == FMC_META


def test_unicode_unit_survives_imagej(tmp_path):
    io.imwrite(tmp_path / "a.tif", _data((2, 4, 4)), FMC_META.replace(unit="µm"), flavour="imagej")
    raw = (tmp_path / "a.tif").read_bytes()
    assert b"unit=\\u00B5m" in raw  # ImageJ's own escape
    assert io.read_meta(tmp_path / "a.tif")[0].unit == "µm"


def test_reading_never_modifies_input(tmp_path):
    path = tmp_path / "a.tif"
    io.imwrite(path, _data((3, 16, 16)), FMC_META)
    before = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns
    io.imread(path)
    io.open_lazy(path).data[0]
    io.read_meta(path)
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before


def test_crash_during_write_leaves_nothing_behind(tmp_path, monkeypatch):
    path = tmp_path / "out.tif"
    io.imwrite(path, _data((2, 8, 8)), FMC_META)
    good = path.read_bytes()
    real = tifffile.imwrite

    def crash(file, *args, **kwargs):
        real(file, *args, **kwargs)  # a complete temp file, then the "crash"
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", crash)
    with pytest.raises(OSError, match="disk full"):
        io.imwrite(path, _data((2, 8, 8), seed=1), FMC_META)
    with pytest.raises(OSError):
        io.imwrite(tmp_path / "new.tif", _data((2, 8, 8)), FMC_META)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]


def test_bad_inputs_have_one_line_messages(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    good = tmp_path / "good.tif"
    io.imwrite(good, _data((4, 64, 64)), FMC_META)
    (tmp_path / "cut.tif").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    tifffile.imwrite(tmp_path / "c64.tif", np.zeros((4, 4), np.complex64))
    cases = {
        "missing.tif": "no such file",
        "empty.tif": "empty file",
        "junk.tif": "not a readable TIFF",
        "cut.tif": "truncated",
        "c64.tif": "unsupported dtype",
    }
    for name, needle in cases.items():
        with pytest.raises(FmcInputError, match=needle) as e:
            io.imread(tmp_path / name)
        assert "\n" not in str(e.value)
    with pytest.raises(FmcInputError, match="unknown axes"):
        io.ImageMeta(axes="ZQX")
    with pytest.raises(FmcInputError, match="3 letters but the array has 2"):
        io.imwrite(tmp_path / "x.tif", np.zeros((4, 4), np.uint16), FMC_META)
    with pytest.raises(FmcInputError, match="ImageJ TIFFs hold"):
        io.imwrite(tmp_path / "x.tif", np.zeros((4, 4)), io.ImageMeta(axes="YX"))
    with pytest.raises(FmcInputError, match="unsupported dtype"):
        io.imwrite(tmp_path / "x.tif", np.zeros((4, 4), bool), io.ImageMeta(axes="YX"), flavour="ome")
    with pytest.raises(FmcInputError, match="positive"):
        io.ImageMeta(axes="YX", spacing={"Y": 0.0, "X": 1.0})


def test_transpose_and_voxel_size():
    img = io.Image(np.zeros((2, 3, 4, 5), np.uint16), io.ImageMeta(axes="CZYX", spacing={"Z": 2, "Y": 0.5, "X": 0.25}))
    t = img.transpose("ZCYX")
    assert t.shape == (3, 2, 4, 5) and t.axes == "ZCYX"
    assert t.meta.voxel_size() == (2.0, 0.5, 0.25)
    with pytest.raises(FmcInputError):
        img.transpose("TZYX")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tile": (64, 64)},  # the fast path: tiles one after another, edge tiles padded
        {"tile": (64, 64), "compression": "zlib"},  # tifffile decodes
        {"byteorder": ">", "tile": (64, 64)},
        {"byteorder": ">"},
        {"photometric": "rgb", "planarconfig": "separate", "tile": (64, 64)},  # chunked counts the planes
        {"photometric": "rgb", "planarconfig": "separate", "rowsperstrip": 16},
    ],
)
def test_other_writers_layouts_read_exactly_in_native_order(tmp_path, kwargs):
    # Files tifffile writes in layouts fmc-ij does not: tiled, compressed, big-endian, planar RGB. Every one reads
    # back bit-exact and in native byte order (torch refuses big-endian arrays).
    data = _data((3, 200, 130))
    tifffile.imwrite(tmp_path / "x.tif", data, **kwargs)
    img = io.imread(tmp_path / "x.tif")
    assert img.data.dtype.isnative
    np.testing.assert_array_equal(img.data, data)


def test_a_truncated_tiled_file_is_one_line(tmp_path):
    tifffile.imwrite(tmp_path / "t.tif", _data((4, 256, 256)), tile=(128, 128), bigtiff=True)
    raw = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(FmcInputError, match="truncated|damaged|unreadable"):
        io.imread(tmp_path / "cut.tif")
