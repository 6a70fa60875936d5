"""Files written by fmc_ij.io open in the real ImageJ 1 (Debian libij-java) with the right calibration.

The check runs the shipped macro ``macros/fmc_calibration.ijm`` (getVoxelSize/getDimensions) in ImageJ.
"""

from __future__ import annotations

import numpy as np
import pytest

from fmc_ij import io
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
