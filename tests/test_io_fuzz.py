"""Mutated TIFF files against the reader and the CLI: truncations at many points, flipped bytes in the header,
IFD entries and tag values (strip offsets and counts among them), tags set to impossible values. Every file either
reads or fails with one :class:`FmcInputError` line (exit 2); nothing reaches the user as an internal error."""

from __future__ import annotations

import contextlib
import io as _io
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmc_ij import io
from fmc_ij.errors import FmcInputError

#: Tags set to 0xFFFF: width, length, bits per sample, compression, strip offsets, samples per pixel, strip byte
#: counts, sample format, tile width/length/offsets/byte counts.
WRONG_TAGS = (256, 257, 258, 259, 273, 277, 279, 339, 322, 323, 324, 325)


def _bases(d: Path) -> dict[str, bytes]:
    """One small file per flavour (ImageJ, OME, tiled BigTIFF "fmc", zlib-compressed OME) and a 2D ImageJ plane."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, (4, 32, 48)).astype(np.uint16)
    meta = io.ImageMeta(axes="ZYX", spacing={"Z": 1.0, "Y": 0.4, "X": 0.4}, channel="nucleus")
    out = {}
    for name, kw in (("imagej", {}), ("ome", {"flavour": "ome"}), ("fmc", {"flavour": "fmc"}),
                     ("zlib", {"flavour": "ome", "compression": "zlib"})):  # fmt: skip
        io.imwrite(d / f"base_{name}.tif", data, meta, **kw)
        out[name] = (d / f"base_{name}.tif").read_bytes()
    io.imwrite(d / "base_plane.tif", data[1], io.ImageMeta(axes="YX", spacing={"Y": 0.4, "X": 0.4}))
    out["plane"] = (d / "base_plane.tif").read_bytes()
    return out


def _tags(raw: bytes) -> list[tuple[int, int, int]]:
    """(code, value-field offset, entry offset) of every tag of every page."""
    with tifffile.TiffFile(_io.BytesIO(raw)) as t:
        return [(tag.code, tag.valueoffset, tag.offset) for page in t.pages for tag in page.tags]


def corpus(d: Path) -> list[tuple[str, bytes]]:
    """About 300 mutated files, the same every run."""
    rng = np.random.default_rng(1)
    items = []
    for name, raw in _bases(d).items():
        n = len(raw)
        for cut in np.unique(np.r_[np.linspace(1, n - 1, 30).astype(int), [8, 16, 64, n - 2]]):
            items.append((f"{name}_cut{cut}", raw[:cut]))
        tags = _tags(raw)
        for k in range(6):
            b = bytearray(raw)
            b[int(rng.integers(0, 16))] ^= 1 << int(rng.integers(0, 8))
            items.append((f"{name}_header{k}", bytes(b)))
        for k in range(12):
            code, value_at, _ = tags[int(rng.integers(len(tags)))]
            b = bytearray(raw)
            b[value_at + int(rng.integers(0, 4))] ^= 0xFF
            items.append((f"{name}_value{code}_{k}", bytes(b)))
        for k in range(6):
            code, _, entry_at = tags[int(rng.integers(len(tags)))]
            b = bytearray(raw)
            b[entry_at + int(rng.integers(0, 8))] = int(rng.integers(0, 256))
            items.append((f"{name}_entry{code}_{k}", bytes(b)))
        for code in WRONG_TAGS:
            hit = next((t for t in tags if t[0] == code), None)
            if hit is not None:
                b = bytearray(raw)
                b[hit[1] : hit[1] + 2] = struct.pack("<H", 0xFFFF)
                items.append((f"{name}_wrong{code}", bytes(b)))
    return items


def _read_all(path: Path) -> None:
    """Every reader entry point, and every pixel of the lazy view (tiles decode only when read)."""
    for fn in (io.read_meta, io.imread, lambda p: np.asarray(io.open_lazy(p).data[...])):
        with contextlib.suppress(FmcInputError):
            fn(path)


def run_cli(*args: object) -> tuple[int, str]:
    """The console-script entry point in this process: exit code and stderr."""
    from fmc_ij.cli import main

    err, out = _io.StringIO(), _io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, err.getvalue().strip()


def _ok_or_one_line(code: int, err: str, what: str) -> None:
    assert code in (0, 2), f"{what}: exit {code}: {err[-600:]}"
    if code == 2:
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and "internal error" not in err, err


@pytest.fixture(scope="module")
def mutated(tmp_path_factory) -> tuple[Path, list[Path]]:
    d = tmp_path_factory.mktemp("fuzz")
    paths = []
    for name, raw in corpus(d):
        p = d / f"{name}.tif"
        p.write_bytes(raw)
        paths.append(p)
    return d, paths


def test_corpus_reader_and_info(mutated):
    """At least 200 mutated files: the reader raises nothing but FmcInputError, `fmc-ij info` exits 0 or 2 with
    one line."""
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    d, paths = mutated
    assert len(paths) >= 200
    failed = 0
    for p in paths:
        _read_all(p)
        code, err = run_cli("info", p)
        _ok_or_one_line(code, err, f"info {p.name}")
        failed += code == 2
    assert failed > len(paths) // 3  # the corpus does damage files (most truncations are refused)


def test_corpus_through_register_squirrel_evaluate(mutated, tmp_path):
    """2D mutated planes as the moving image of `register`, the image of `squirrel` and the prediction of
    `evaluate` against a good partner: one-line errors or results, never an internal error."""
    d, paths = mutated
    good = d / "base_plane.tif"
    planes = [p for p in paths if p.name.startswith("plane_")]
    assert len(planes) >= 50
    for k, p in enumerate(planes[::2]):  # every other one: a valid file costs a registration and a QC figure
        if k % 2 == 0:
            code, err = run_cli("register", p, good, "--out", tmp_path / "reg", "--overwrite", "--no-elastic")
            _ok_or_one_line(code, err, f"register {p.name}")
            code, err = run_cli("squirrel", good, p, "--out", tmp_path / "sq")
            _ok_or_one_line(code, err, f"squirrel {p.name}")
        else:
            for sub, src in (("pred", p), ("gt", good), ("input", good)):
                (tmp_path / "ev" / sub).mkdir(parents=True, exist_ok=True)
                (tmp_path / "ev" / sub / "image_0_nucleus_angle.tif").write_bytes(src.read_bytes())
            code, err = run_cli("evaluate", "--pred", tmp_path / "ev" / "pred", "--gt", tmp_path / "ev" / "gt",
                                "--input", tmp_path / "ev" / "input", "--out", tmp_path / "ev" / "out", "--no-iou",
                                "--no-figures")  # fmt: skip
            _ok_or_one_line(code, err, f"evaluate {p.name}")


@pytest.mark.parametrize(
    "lr,hr,needle",
    [
        ("vol", "plane", "two YX images or two ZYX volumes"),
        ("plane", "vol", "two YX images or two ZYX volumes"),
        ("zcyx", "vol", "single-channel"),
        ("vol", "cyx", "single-channel"),
        ("line", "vol", "must contain both Y and X"),
    ],
)
def test_wrong_dimensionality_is_one_line(tmp_path, lr, hr, needle):
    """`fmc-ij register good.tif plane.tif` (a ZYX volume against a YX image) used to be "internal error:
    IndexError"; every such pairing is one line, exit 2."""
    rng = np.random.default_rng(0)
    vol = (rng.random((8, 48, 48)) * 1000).astype(np.uint16)
    files = {
        "vol": (vol, io.ImageMeta(axes="ZYX", spacing={"Z": 1, "Y": 0.4, "X": 0.4})),
        "plane": (vol[4], io.ImageMeta(axes="YX")),
        "cyx": (vol[:2, 0:48, 0:48], io.ImageMeta(axes="CYX")),
        "zcyx": (np.stack([vol, vol], 1), io.ImageMeta(axes="ZCYX")),
    }
    for name, (data, meta) in files.items():
        io.imwrite(tmp_path / f"{name}.tif", data, meta)
    tifffile.imwrite(tmp_path / "line.tif", np.arange(48, dtype=np.uint16))
    code, err = run_cli("register", tmp_path / f"{lr}.tif", tmp_path / f"{hr}.tif", "--out", tmp_path / "o")
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_truncation_or_flip_of_any_flavour(tmp_path_factory, data):
    """Hypothesis: a file of any flavour cut at any byte, or with any byte replaced, reads or fails in one line."""
    d = tmp_path_factory.getbasetemp() / "hyp"
    d.mkdir(exist_ok=True)
    if not (d / "base_imagej.tif").exists():
        _bases(d)
    flavour = data.draw(st.sampled_from(["imagej", "ome", "fmc", "zlib", "plane"]))
    raw = (d / f"base_{flavour}.tif").read_bytes()
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        b = bytearray(raw)
        b[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        raw = bytes(b)
    p = d / "case.tif"
    p.write_bytes(raw)
    _read_all(p)
