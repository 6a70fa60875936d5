"""``fmc-ij demo`` and ``fmc-ij report``: the whole pipeline on tiny built-in data, its determinism, and a report
that renders in headless Chromium with labelled, colour-barred figures."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bioimageio.core", reason="the demo exports a bundle: pip install 'fmc-ij[bioimageio]'")

from fmc_ij.demo import run_demo  # noqa: E402
from fmc_ij.report import figures  # noqa: E402
from fmc_ij.run_report import run_report  # noqa: E402

EXE = Path(sys.executable).with_name("fmc-ij")
TINY = {"minutes": 5.0, "steps": 6, "n_train": 2, "shape": (20, 64, 64), "log": lambda s: None}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run one"  # a space, as in many users' folders
    run_demo(out, seed=3, **TINY)
    return out


def test_demo_writes_every_stage_and_a_self_contained_report(demo_dir):
    m = json.loads((demo_dir / "demo.json").read_text())
    assert m["steps"] == 6 and not m["stopped_by_time_limit"] and m["bundle_test"] == "passed"
    assert set(m["metrics"]) == {"nucleus", "membrane"}
    for ch in m["metrics"].values():
        assert all(np.isfinite(v) for v in ch.values())
    for rel in m["paths"].values():
        assert (demo_dir / rel).exists(), rel
    truth = json.loads((demo_dir / "data/train/truth/misregistration.json").read_text())
    assert truth, "the training data must be misregistered"
    preds = sorted(p.name for p in (demo_dir / "predictions").glob("*.tif"))
    assert any(n.endswith("_uncertainty.tif") for n in preds)
    html = (demo_dir / "report.html").read_text()
    for heading in ("Metrics against the identity baseline", "Held-out volumes", "Training curves", "Registration",
                    "Registration QC", "SQUIRREL error maps", "Run it in Fiji"):  # fmt: skip
        assert heading in html, heading
    srcs = re.findall(r"src='([^']*)'", html)
    assert len(srcs) >= 8 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:  # every embedded image is a valid PNG
        assert base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "href=" not in html and "http" not in html.replace("http-equiv", "")  # nothing to fetch
    assert str((demo_dir / "bundle" / "fmc-ij-demo.zip").resolve()) in html


def test_same_seed_same_metrics(demo_dir, tmp_path):
    run_demo(tmp_path / "again", seed=3, **TINY)
    a = json.loads((demo_dir / "demo.json").read_text())
    b = json.loads((tmp_path / "again" / "demo.json").read_text())
    assert a["metrics"] == b["metrics"]
    csv_a = (demo_dir / "eval" / "metrics.csv").read_text()
    assert csv_a == (tmp_path / "again" / "eval" / "metrics.csv").read_text()


def test_every_figure_has_axis_labels_and_colour_bars(demo_dir, tmp_path, monkeypatch):
    seen = []
    real = figures.save_figure

    def checking(fig, path, dpi=110):
        for ax in fig.axes:
            if ax.images and ax.get_label() != "<colorbar>":
                assert ax.get_xlabel() and ax.get_ylabel(), f"{path}: {ax.get_title()} lacks axis labels"
                colourbars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
                assert colourbars, f"{path}: no colour bar"
        seen.append(Path(path).name)
        return real(fig, path, dpi)

    monkeypatch.setattr(figures, "save_figure", checking)
    run_report(demo_dir, tmp_path / "r.html")
    assert len(seen) >= 6
    for png in (demo_dir / "registered" / "qc").glob("*.png"):  # made by register, embedded as they are
        assert png.stat().st_size > 10_000


def _chromium() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium (make test installs Debian's chromium as root)")
def test_report_renders_in_headless_chromium(demo_dir, tmp_path):
    from fmc_ij.report import screenshot

    png = screenshot(demo_dir / "report.html", tmp_path / "shot.png", size=(1280, 2400))
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB"), np.float32)
    assert img.shape == (2400, 1280, 3)
    sat = img.max(-1) - img.min(-1)  # coloured pixels: the magma / inferno maps and colour bars drew
    assert (sat > 60).mean() > 0.01
    assert img.std() > 20  # not a blank page


def test_report_for_a_training_run_and_cli(demo_dir, tmp_path):
    run = demo_dir / "run"
    res = subprocess.run([str(EXE), "report", str(run), "--out", str(tmp_path / "run.html")], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "FMC_IJ_PROGRESS": "0"})  # fmt: skip
    assert res.returncode == 0, res.stderr
    html = (tmp_path / "run.html").read_text()
    assert "Training curves" in html and "Preview on validation data" in html
    bad = subprocess.run([str(EXE), "report", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nothing to report" in bad.stderr


def test_demo_cli_refuses_a_non_empty_folder(demo_dir):
    res = subprocess.run([str(EXE), "demo", "--out", str(demo_dir)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--overwrite" in res.stderr and res.stderr.count("\n") == 1


def test_a_constant_prediction_gets_no_error_map_and_the_report_still_renders(demo_dir, tmp_path):
    """An under-trained model may output one value everywhere: SQUIRREL has nothing to compare, so that image gets
    a note instead of an error map, and the rest of the report is made."""
    from fmc_ij.demo import squirrel_volumes
    from fmc_ij.io import imread, imwrite
    from fmc_ij.run_report import _squirrel

    src = sorted((demo_dir / "predictions").glob("*_angle.tif"))[0]
    img = imread(src)
    imwrite(tmp_path / "pred" / src.name, np.zeros_like(img.data), img.meta)
    rows = squirrel_volumes(tmp_path / "pred", demo_dir / "data" / "heldout", tmp_path / "sq", device="cpu")
    pred = [r for r in rows if r["image"] == "prediction"]
    truth = [r for r in rows if r["image"] == "ground truth"]
    assert pred and pred[0]["rse"] is None and "constant" in pred[0]["note"]
    assert truth and np.isfinite(truth[0]["rse"])
    with np.load(next((tmp_path / "sq").glob("*.npz"))) as z:
        assert z.files == ["ground_truth"]
    sections = _squirrel(tmp_path / "sq", tmp_path / "figs", None)
    assert sections and list((tmp_path / "figs").glob("squirrel_*.png"))
