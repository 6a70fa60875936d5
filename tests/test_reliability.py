"""Bad inputs through the CLI: a generated corpus, each case against every subcommand it applies to (the big
matrix calls the console-script entry point in-process; the rest run the installed ``fmc-ij`` executable).

For an error: exit code 2, exactly one line on stderr, inputs unchanged (hashed before and after), nothing left
at the output path. Benign oddities (unicode, spaces and brackets in paths, float64, uint32, negative values,
missing voxel sizes) must simply work.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from fmc_ij.io import ImageMeta, imwrite
from fmc_ij.nn.factory import ModelConfig, build_model
from fmc_ij.train.checkpoint import save_model

EXE = Path(sys.executable).with_name("fmc-ij")
META = ImageMeta(axes="ZYX", spacing={"Z": 1.0, "Y": 0.4, "X": 0.4}, unit="µm")
SHAPE = (12, 48, 48)


def _good(seed: int = 0) -> np.ndarray:
    """Blobs (the same for every seed) plus seed-dependent noise: pairs share structure, as real pairs do."""
    from scipy import ndimage

    blobs = ndimage.gaussian_filter(np.random.default_rng(99).random(SHAPE), (1, 3, 3))
    blobs = (blobs - blobs.min()) / (blobs.max() - blobs.min())
    noise = np.random.default_rng(seed).normal(0, 0.03, SHAPE)
    return ((blobs + noise) * 1000 + 100).clip(0).astype(np.uint16)


def _write(path: Path, data: np.ndarray, meta: ImageMeta | None = META, flavour: str = "imagej") -> None:
    if meta is None:
        tifffile.imwrite(path, data, photometric="minisblack")
    else:
        imwrite(path, data, meta, flavour=flavour)


def _float(fn: Callable[[np.ndarray], None]) -> np.ndarray:
    a = _good().astype(np.float32)
    fn(a)
    return a


#: name -> writer of one bad single-view file (the fused partner, where one is needed, is good)
BAD_FILES: dict[str, Callable[[Path], None]] = {
    "zero-byte TIFF": lambda p: p.write_bytes(b""),
    "truncated TIFF": lambda p: (_write(p, _good()), p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    "non-TIFF bytes named .tif": lambda p: p.write_bytes(b"%PDF-1.4 not an image\n" * 20),
    "4D stack with a C axis": lambda p: tifffile.imwrite(
        p, np.zeros((12, 2, 48, 48), np.uint16), imagej=True, metadata={"axes": "ZCYX"}
    ),
    "5D stack with T and C axes": lambda p: tifffile.imwrite(
        p, np.zeros((2, 12, 2, 48, 48), np.uint16), imagej=True, metadata={"axes": "TZCYX"}
    ),
    "constant image": lambda p: _write(p, np.full(SHAPE, 7, np.uint16)),
    "all-zero image": lambda p: _write(p, np.zeros(SHAPE, np.uint16)),
    "NaN values": lambda p: _write(p, _float(lambda a: a.__setitem__((3, 4, 5), np.nan))),
    "infinite values": lambda p: _write(p, _float(lambda a: a.__setitem__((3, 4, 5), np.inf))),
    "bool dtype": lambda p: tifffile.imwrite(p, _good() > 500, photometric="minisblack"),
    "complex dtype": lambda p: tifffile.imwrite(p, _good().astype(np.complex64), photometric="minisblack"),
    "1-D array": lambda p: tifffile.imwrite(p, np.arange(48, dtype=np.uint16)),
    "RGB image": lambda p: tifffile.imwrite(p, np.zeros((48, 48, 3), np.uint8), photometric="rgb"),
    "zero voxel size": lambda p: tifffile.imwrite(
        p, _good(), imagej=True, resolution=(2.5, 2.5), metadata={"axes": "ZYX", "spacing": 0.0, "unit": "um"}
    ),
}

#: files no command can read, ``info`` included
UNREADABLE = {"zero-byte TIFF", "truncated TIFF", "non-TIFF bytes named .tif", "1-D array", "zero voxel size"}

#: (case, command) pairs that are not errors: a constant prediction is a legitimate (bad) answer, and is scored.
SCORED = {("constant image", "evaluate"), ("all-zero image", "evaluate")}  # fmt: skip

#: name -> writer of a file that is unusual but valid: every command must accept it
ODD_BUT_VALID: dict[str, Callable[[Path], None]] = {
    "negative values": lambda p: _write(p, _good().astype(np.float32) - 600),
    "float64 dtype": lambda p: _write(p, _good().astype(np.float64), flavour="ome"),
    "uint32 dtype": lambda p: _write(p, _good().astype(np.uint32), flavour="ome"),
    "missing voxel size": lambda p: _write(p, _good(), meta=None),
}


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


def cli(*args: object, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "FMC_IJ_PROGRESS": "0"}
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def cli_here(capfd, *args: object) -> subprocess.CompletedProcess:
    """The console-script entry point in this process (same exit codes and stderr, without ~2 s of start-up)."""
    from fmc_ij.cli import main

    capfd.readouterr()
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess([str(a) for a in args], code, out, err)


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    err = res.stderr.strip()
    assert res.returncode == 2, f"exit {res.returncode}\n{res.stdout[-800:]}\n{err[-1500:]}"
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n.lower() in err.lower(), err


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    mc = ModelConfig(ndim=3, depth=2, base=4).resolve_pool((1.0, 0.4, 0.4))
    run = tmp_path_factory.mktemp("model") / "run"
    save_model(run / "model.pt", build_model(mc), {"model": mc.model_dump(mode="json"),
                                                   "data": {"pmin": 2.0, "pmax": 99.8}}, step=1)  # fmt: skip
    return run


def _pair_dir(root: Path, writer: Callable[[Path], None]) -> Path:
    """A challenge-layout folder: image_0_nucleus_angle.tif (the case) + image_0_nucleus_fused.tif (good)."""
    root.mkdir(parents=True)
    writer(root / "image_0_nucleus_angle.tif")
    _write(root / "image_0_nucleus_fused.tif", _good(1))
    return root


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_in_every_command(case, model, tmp_path, capfd):
    data = _pair_dir(tmp_path / "in", BAD_FILES[case])
    angle, fused = data / "image_0_nucleus_angle.tif", data / "image_0_nucleus_fused.tif"
    before = _digest(data)

    def run(*args: object) -> subprocess.CompletedProcess:
        return cli_here(capfd, *args)

    runs = {
        "predict": run("predict", "--model", model, angle, "--out", tmp_path / "o_pred"),
        "register": run("register", angle, fused, "--out", tmp_path / "o_reg"),
        "evaluate": run("evaluate", "--pred", data, "--gt", data, "--input", data, "--out", tmp_path / "o_eval"),
        "train": run(
            "train",
            "--data",
            data,
            "--preset",
            "care3d",
            "--steps",
            "2",
            "--set",
            "data.val_fraction=0",
            "--patch",
            "8,32,32",
            "--out",
            tmp_path / "o_train",
        ),  # fmt: skip
        "squirrel": run("squirrel", angle, fused, "--out", tmp_path / "o_sq"),
    }
    if case in UNREADABLE:
        runs["info"] = run("info", angle)
    for name, res in runs.items():
        if (case, name) in SCORED:
            assert res.returncode == 0 and (tmp_path / "o_eval" / "metrics.csv").is_file(), res.stderr
            continue
        assert_one_line_error(res)
        leftovers = [p for p in tmp_path.glob(f"o_{name[:3]}*/**/*") if p.is_file()]  # nothing half-written
        assert not leftovers, f"{name} left {leftovers}"
    assert _digest(data) == before  # inputs never modified


@pytest.mark.parametrize("case", list(ODD_BUT_VALID))
def test_odd_but_valid_files_work(case, model, tmp_path):
    data = _pair_dir(tmp_path / "in", ODD_BUT_VALID[case])
    angle, fused = data / "image_0_nucleus_angle.tif", data / "image_0_nucleus_fused.tif"
    before = _digest(data)
    for args in (("predict", "--model", model, angle, "--out", tmp_path / "o_pred"),
                 ("register", angle, fused, "--out", tmp_path / "o_reg"),
                 ("info", angle)):  # fmt: skip
        res = cli(*args)
        assert res.returncode == 0, f"{args[0]}: {res.stderr[-1500:]}"
    assert (tmp_path / "o_pred" / "image_0_nucleus_angle.tif").is_file()
    assert _digest(data) == before


def test_pair_shape_mismatch(model, tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    _write(data / "image_0_nucleus_angle.tif", _good())
    _write(data / "image_0_nucleus_fused.tif", (np.random.default_rng(2).random((12, 40, 48)) * 900).astype(np.uint16))
    before = _digest(data)
    assert_one_line_error(cli("evaluate", "--pred", data, "--gt", data, "--input", data, "--out", tmp_path / "e"),
                          "differ in shape")  # fmt: skip
    assert_one_line_error(cli("train", "--data", data, "--steps", "2", "--set", "data.val_fraction=0",
                              "--out", tmp_path / "t"))  # fmt: skip
    assert _digest(data) == before and not (tmp_path / "e").exists() and not any((tmp_path / "t").glob("*.pt"))


@pytest.mark.parametrize("name", ["données é", "with space", "brackets [1]", "ünïcödé"])
def test_unicode_spaces_and_brackets_in_paths(name, model, tmp_path):
    d = tmp_path / name
    data = _pair_dir(d / "in", lambda p: _write(p, _good()))
    res = cli("predict", "--model", model, data, "--pattern", "*_angle.tif", "--out", d / "out put")
    assert res.returncode == 0, res.stderr
    assert (d / "out put" / "image_0_nucleus_angle.tif").is_file()
    assert cli("register", "--dataset", data, "--out", d / "reg [x]").returncode == 0
    assert (d / "reg [x]" / "registration.csv").is_file()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders; test_unwritable_output_path covers it")  # fmt: skip
def test_read_only_output_folder(model, tmp_path):
    data = _pair_dir(tmp_path / "in", lambda p: _write(p, _good()))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert_one_line_error(cli("predict", "--model", model, data, "--out", ro / "sub"), "cannot write")
    finally:
        ro.chmod(stat.S_IRWXU)


def test_unwritable_output_path(model, tmp_path):
    """An output 'folder' that is a file (what root meets instead of permissions) is refused the same way."""
    data = _pair_dir(tmp_path / "in", lambda p: _write(p, _good()))
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    for args in (("predict", "--model", model, data, "--out", blocker),
                 ("register", "--dataset", data, "--out", blocker),
                 ("simulate", "--out", blocker),
                 ("evaluate", "--pred", data, "--gt", data, "--input", data, "--out", blocker)):  # fmt: skip
        assert_one_line_error(cli(*args), "file")
    assert blocker.read_text() == "x"


def test_output_equal_to_input(model, tmp_path):
    data = _pair_dir(tmp_path / "in", lambda p: _write(p, _good()))
    before = _digest(data)
    assert_one_line_error(cli("predict", "--model", model, data, "--out", data), "overwrite the input")
    assert_one_line_error(cli("register", "--dataset", data, "--out", data, "--overwrite"), "input")
    angle = data / "image_0_nucleus_angle.tif"
    assert_one_line_error(cli("export", model, "--out", angle), ".zip")
    assert _digest(data) == before


def test_contradictory_voxel_sizes(tmp_path):
    """A pair whose files disagree on the voxel size: training refuses; registration resamples onto the target
    grid (and here, where the content does not match the claimed size, says the volumes no longer overlap)."""
    data = tmp_path / "in"
    data.mkdir()
    _write(data / "image_0_nucleus_angle.tif", _good(), ImageMeta(axes="ZYX", spacing={"Z": 2.0, "Y": 0.4, "X": 0.4},
                                                                  unit="µm"))  # fmt: skip
    _write(data / "image_0_nucleus_fused.tif", _good(1))
    before = _digest(data)
    assert_one_line_error(cli("train", "--data", data, "--steps", "2", "--set", "data.val_fraction=0",
                              "--patch", "8,32,32", "--out", tmp_path / "t"), "voxel size", "register")  # fmt: skip
    res = cli("register", "--dataset", data, "--out", tmp_path / "r")  # resampled; here the content disagrees too
    if res.returncode != 0:
        assert_one_line_error(res, "registration")
    assert _digest(data) == before


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch '{self.target}'",))


def test_bad_models_bundles_and_configs(tmp_path):
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"not a model")
    img = tmp_path / "x.tif"
    _write(img, _good())
    assert_one_line_error(cli("predict", "--model", junk, img, "--out", tmp_path / "o"), "not an fmc-ij model")
    evil = tmp_path / "evil" / "model.pt"  # a pickle that would run a shell command when unpickled
    evil.parent.mkdir()
    torch.save({"config": _Evil(str(tmp_path / "pwned_model")), "state_dict": {}}, evil)
    assert_one_line_error(cli("predict", "--model", evil.parent, img, "--out", tmp_path / "o"), "not an fmc-ij model")
    assert_one_line_error(cli("export", evil.parent, "--out", tmp_path / "e.zip"))
    assert not (tmp_path / "pwned_model").exists()
    bad_zip = tmp_path / "bundle.zip"
    bad_zip.write_bytes(b"PK\x03\x04 truncated")
    assert_one_line_error(cli("predict", "--model", bad_zip, img, "--out", tmp_path / "o"))
    assert_one_line_error(cli("validate", bad_zip))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {arch: care, ndim: 3}\nnot_a_field: 1\n")
    assert_one_line_error(cli("train", "--config", cfg, "--data", tmp_path, "--out", tmp_path / "t"), "not_a_field")
    cfg.write_text("!!python/object/apply:os.system ['echo pwned > pwned.txt']\n")
    assert_one_line_error(cli("train", "--config", cfg, "--data", tmp_path, "--out", tmp_path / "t"))
    assert not (tmp_path / "pwned.txt").exists() and not Path("pwned.txt").exists()
    assert not list(tmp_path.glob("o/*"))


@pytest.mark.parametrize(("args", "needle"), [
    (("predict", "--model", "M", "IMG", "--out", "O", "--tile", "0,-4,4"), "--tile"),
    (("predict", "--model", "M", "IMG", "--out", "O", "--scale", "bogus"), "--scale"),
    (("simulate", "--out", "O", "--shape", "4,a,4"), "--shape"),
    (("simulate", "--out", "O", "--spacing", "1,0,0.4"), "--spacing"),
    (("train", "--data", "IMG", "--out", "O", "--set", "steps"), "--set"),
    (("demo", "--out", "O", "--minutes", "-1"), "--minutes"),
])  # fmt: skip
def test_bad_option_values(args, needle, model, tmp_path):
    img = tmp_path / "x.tif"
    _write(img, _good())
    sub = {"M": model, "IMG": img, "O": tmp_path / "o"}
    assert_one_line_error(cli(*[sub.get(a, a) for a in args]), needle)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# -- crash safety: SIGKILL mid-write leaves the previous complete output or none ---------------------------------
def _kill_after(args: list[object], delay: float) -> None:
    env = {**os.environ, "FMC_IJ_PROGRESS": "0"}
    proc = subprocess.Popen([str(EXE), *map(str, args)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        proc.wait(delay)
    except subprocess.TimeoutExpired:
        proc.kill()  # SIGKILL: no cleanup handler runs
        proc.wait()


def _complete_tiffs(folder: Path, shape: tuple[int, ...]) -> list[str]:
    from fmc_ij.io import imread

    names = []
    for p in sorted(folder.rglob("*.tif")):
        if p.name.startswith("."):
            continue  # a temporary file: never at a final path
        assert imread(p).shape == shape, p  # readable and whole (imread refuses truncated files)
        names.append(p.name)
    return names


@pytest.mark.slow
def test_sigkill_during_predict_and_register_leaves_whole_files(model, tmp_path):
    data = tmp_path / "in"
    for k in range(4):
        _pair_dir(data / f"s{k}", lambda p: _write(p, _good()))
    flat = tmp_path / "flat"
    flat.mkdir()
    for k, d in enumerate(sorted(data.iterdir())):
        for f in d.iterdir():
            (flat / f.name.replace("image_0", f"image_{k}")).write_bytes(f.read_bytes())
    for delay in (1.0, 2.0, 3.0, 4.5):
        out = tmp_path / f"pred_{delay}"
        _kill_after(["predict", "--model", model, flat, "--pattern", "*_angle.tif", "--out", out], delay)
        _complete_tiffs(out, SHAPE) if out.exists() else None
        reg = tmp_path / f"reg_{delay}"
        _kill_after(["register", "--dataset", flat, "--out", reg], delay)
        if reg.exists():
            for p in reg.rglob("*.tif"):
                if not p.name.startswith("."):
                    from fmc_ij.io import imread

                    assert imread(p).data.ndim == 3
            if (reg / "registration.csv").is_file():
                assert (reg / "registration.csv").read_text().endswith("\n")


@pytest.mark.slow
def test_sigkill_during_export_keeps_the_previous_bundle(tmp_path):
    import zipfile

    torch.manual_seed(1)
    mc = ModelConfig(ndim=3, depth=2, base=4).resolve_pool((1.0, 0.4, 0.4))
    run = tmp_path / "run"
    save_model(run / "model.pt", build_model(mc), {"model": mc.model_dump(mode="json"),
                                                   "data": {"pmin": 2.0, "pmax": 99.8}}, step=1)  # fmt: skip
    sample = tmp_path / "s.tif"
    _write(sample, _good())
    bundle = tmp_path / "model.zip"
    assert cli("export", run, "--out", bundle, "--sample", sample).returncode == 0
    previous = bundle.read_bytes()
    for delay in (1.0, 3.0, 6.0):
        _kill_after(["export", run, "--out", bundle, "--sample", sample], delay)
        assert zipfile.is_zipfile(bundle)
        with zipfile.ZipFile(bundle) as z:
            assert z.testzip() is None and "rdf.yaml" in z.namelist()
        assert bundle.read_bytes() == previous or len(bundle.read_bytes()) > 10_000


# -- reproducibility: the same seed on the same CPU gives identical outputs --------------------------------------
@pytest.mark.slow
def test_same_seed_same_bytes_for_simulate_register_train_predict(tmp_path):
    def run(tag: str) -> dict[str, str]:
        root = tmp_path / tag
        assert cli("simulate", "--out", root / "data", "--n", "2", "--shape", "16,64,64", "--misregister",
                   "--seed", "5").returncode == 0  # fmt: skip
        assert cli("register", "--dataset", root / "data", "--out", root / "reg").returncode == 0
        assert cli("train", "--data", root / "reg", "--preset", "care3d", "--steps", "3", "--patch", "8,32,32",
                   "--deterministic", "--seed", "5", "--out", root / "run").returncode == 0  # fmt: skip
        assert cli("predict", "--model", root / "run", root / "data", "--pattern", "*_angle.tif",
                   "--out", root / "pred").returncode == 0  # fmt: skip
        digests = {}
        for sub in ("data", "reg", "pred"):
            digests.update({f"{sub}/{k}": v for k, v in _digest(root / sub).items() if not k.endswith(".png")})
        state = torch.load(root / "run" / "model.pt", map_location="cpu", weights_only=False)
        digests["weights"] = hashlib.sha256(
            b"".join(t.numpy().tobytes() for t in state["state_dict"].values())
        ).hexdigest()
        return digests

    a, b = run("one"), run("two")
    assert a.keys() == b.keys() and len(a) > 10
    assert {k for k in a if a[k] != b[k]} == set()
