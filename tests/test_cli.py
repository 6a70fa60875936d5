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
    for cmd in ("simulate", "info"):
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
