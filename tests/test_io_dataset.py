"""Pair discovery: the challenge naming, generic two-glob pairing, manifests, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from fmc_ij import io
from fmc_ij.errors import FmcInputError


def _touch_tif(path, channel=None):
    meta = io.ImageMeta(axes="ZYX", spacing={"Z": 1.0, "Y": 0.2, "X": 0.2}, channel=channel)
    io.imwrite(path, np.zeros((2, 4, 4), np.uint16), meta)


def test_challenge_naming(tmp_path):
    for n, ch in ((0, "nucleus"), (0, "membrane"), (12, "nucleus")):
        for kind in ("angle", "fused"):
            _touch_tif(tmp_path / "sub" / f"image_{n}_{ch}_{kind}.tif", ch)
    (tmp_path / "README.txt").write_text("not an image")
    pairs = io.discover(tmp_path)
    assert [(p.name, p.index, p.channel) for p in pairs] == [
        ("image_0_membrane", 0, "membrane"),
        ("image_0_nucleus", 0, "nucleus"),
        ("image_12_nucleus", 12, "nucleus"),
    ]
    assert all(p.low.name.endswith("_angle.tif") and p.high.name.endswith("_fused.tif") for p in pairs)


def test_missing_partner_and_test_time(tmp_path):
    _touch_tif(tmp_path / "image_3_nucleus_angle.tif")
    with pytest.raises(FmcInputError, match="missing pair partner.*image_3_nucleus_fused"):
        io.discover(tmp_path)
    pairs = io.discover(tmp_path, require_target=False)
    assert pairs[0].high is None
    _touch_tif(tmp_path / "image_4_membrane_fused.tif")
    with pytest.raises(FmcInputError, match="image_4_membrane_angle"):
        io.discover(tmp_path, require_target=False)


def test_duplicate_tif_and_tiff(tmp_path):
    _touch_tif(tmp_path / "image_1_nucleus_angle.tif")
    _touch_tif(tmp_path / "image_1_nucleus_angle.tiff")
    with pytest.raises(FmcInputError, match="two files"):
        io.discover(tmp_path)


@pytest.mark.parametrize(
    "files,low,high,names",
    [
        (
            ["widefield/c1.tif", "widefield/c2.tif", "sim/c1.tif", "sim/c2.tif"],
            "widefield/*.tif",
            "sim/*.tif",
            ["c1", "c2"],
        ),
        (["a_conf.tif", "a_sted.tif", "b_conf.tif", "b_sted.tif"], "*_conf.tif", "*_sted.tif", ["a", "b"]),
        (["tirf/x/1.tif", "sim/x/1.tif"], "tirf/*/*.tif", "sim/*/*.tif", ["x_1"]),
    ],
)
def test_pair_by_glob(tmp_path, files, low, high, names):
    for f in files:
        _touch_tif(tmp_path / f)
    pairs = io.pair_by_glob(tmp_path, low, high)
    assert [p.name for p in pairs] == names
    for p in pairs:
        assert p.low.relative_to(tmp_path).as_posix().startswith(low.split("*")[0])


def test_pair_by_glob_errors(tmp_path):
    _touch_tif(tmp_path / "wf" / "a.tif")
    _touch_tif(tmp_path / "wf" / "b.tif")
    _touch_tif(tmp_path / "sr" / "a.tif")
    with pytest.raises(FmcInputError, match="1 input.*wf/b.tif"):
        io.pair_by_glob(tmp_path, "wf/*.tif", "sr/*.tif")
    assert len(io.pair_by_glob(tmp_path, "wf/*.tif", "sr/*.tif", require_target=False)) == 2
    _touch_tif(tmp_path / "sr" / "c.tif")
    with pytest.raises(FmcInputError, match="target sr/c.tif has no input"):
        io.pair_by_glob(tmp_path, "wf/*.tif", "sr/*.tif", require_target=False)
    with pytest.raises(FmcInputError, match="no input files match"):
        io.pair_by_glob(tmp_path, "nothing/*.tif", "sr/*.tif")


def test_manifest_and_explicit_globs(tmp_path):
    _touch_tif(tmp_path / "confocal" / "b0.tif")
    _touch_tif(tmp_path / "sted" / "b0.tif")
    with pytest.raises(FmcInputError, match="no pairs found.*2 TIFF files"):
        io.discover(tmp_path)
    assert [p.name for p in io.discover(tmp_path, low="confocal/*.tif", high="sted/*.tif")] == ["b0"]
    io.write_manifest(tmp_path, kind="beads", low="confocal/*.tif", high="sted/*.tif", channel="beads")
    pairs = io.discover(tmp_path)
    assert pairs[0].channel == "beads" and pairs[0].high.parent.name == "sted"
    (tmp_path / io.MANIFEST).write_text("{broken")
    with pytest.raises(FmcInputError, match="invalid JSON"):
        io.discover(tmp_path)
    with pytest.raises(FmcInputError, match="both --low and --high"):
        io.discover(tmp_path, low="x")
    with pytest.raises(FmcInputError, match="no such folder"):
        io.discover(tmp_path / "nope")
