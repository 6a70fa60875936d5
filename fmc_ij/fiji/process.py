"""ImageJ / Fiji in a child process: shipped macros run by ImageJ 1 (``-batch``) or by the user's Fiji.

A child process can be killed, so a modal dialog never hangs the caller (timeouts). Macro commands that open
images need AWT, so a headless machine gets a virtual X server (xvfb-run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from fmc_ij.errors import FmcInputError
from fmc_ij.fiji.commands import ij_path, register_channels_estimate
from fmc_ij.fiji.locate import (
    ImageJNotFound,
    find_fiji,
    find_ij_jar,
    find_java,
    find_nanoj,
    find_squirrel,
    jvm_options,
    utf8_env,
)

MACROS_DIR = Path(__file__).resolve().parents[2] / "macros"


def macro_path(name: str) -> Path:
    """Path of a macro shipped in ``macros/`` (e.g. ``"fmc_calibration.ijm"``)."""
    p = MACROS_DIR / name
    if not p.is_file():
        raise FmcInputError(f"no macro {name!r} in {MACROS_DIR}")
    return p


def run_imagej1_macro(macro: str | Path, argument: str = "", *, timeout: float = 120.0) -> str:
    """Run an ImageJ 1 macro file in batch mode and return what it printed to the Log.

    Parameters
    ----------
    macro : path
        An ``.ijm`` file; it reads ``argument`` with ``getArgument()``.
    argument : str
        Typically ``"key=value key2=[value with spaces]"``.
    timeout : float
        Seconds before the process is killed (a modal error dialog would otherwise block forever).
    """
    jar, java = find_ij_jar(), find_java()
    cmd = [java, *jvm_options("2g"), "-jar", str(jar), "-batch", str(macro), argument]
    if not os.environ.get("DISPLAY"):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            raise ImageJNotFound("no display and no Xvfb: install xvfb (apt-get install xvfb) or set DISPLAY")
        cmd = [xvfb, "-a", "-s", "-screen 0 1280x1024x24", *cmd]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=utf8_env())
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"ImageJ macro {macro} timed out after {timeout:g} s") from None
    if res.returncode != 0 or "Macro Error" in res.stdout:
        raise RuntimeError(
            f"ImageJ macro {macro} failed (exit {res.returncode}): {(res.stderr or res.stdout).strip()[-500:]}"
        )
    return res.stdout


def imagej_calibration(path: str | Path, *, timeout: float = 120.0) -> dict[str, str]:
    """Open an image in ImageJ 1 and return what ``getVoxelSize``/``getDimensions`` report."""
    out = run_imagej1_macro(macro_path("fmc_calibration.ijm"), f"path=[{ij_path(path)}]", timeout=timeout)
    line = next((ln for ln in out.splitlines() if ln.startswith("file=")), None)
    if line is None:
        raise RuntimeError(f"ImageJ printed no calibration for {path}: {out.strip()[-300:]}")
    # "file=a b.tif width=..." : the file name may hold spaces, the other values do not.
    head, _, rest = line.partition(" width=")
    fields = dict(kv.split("=", 1) for kv in ("width=" + rest).split())
    fields["file"] = head[len("file=") :]
    return fields


def fiji_command(fiji: Path, macro: Path, argument: str) -> list[str]:
    """How to run a macro file in this Fiji: its launcher (headless), or its ij.jar with its plugins under Xvfb."""
    for name in ("ImageJ-linux64", "fiji-linux-x64", "ImageJ-macosx", "fiji"):
        if (fiji / name).is_file():
            return [str(fiji / name), "--ij2", "--headless", "--console", "-macro", str(macro), argument]
    jars = sorted((fiji / "jars").glob("ij*.jar"))
    if not jars:
        raise ImageJNotFound(f"no Fiji launcher and no jars/ij*.jar in {fiji}; reinstall Fiji")
    java = [find_java(), *jvm_options("4g"), f"-Dplugins.dir={fiji}"]
    cmd = [*java, "-jar", str(jars[-1]), "-batch", str(macro), argument]
    if not os.environ.get("DISPLAY"):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            raise ImageJNotFound("no display and no Xvfb: install xvfb (apt-get install xvfb) or set DISPLAY")
        cmd = [xvfb, "-a", "-s", "-screen 0 1280x1024x24", *cmd]
    return cmd


def run_fiji_macro(macro: Path, argument: str, *, timeout: float = 600.0, what: str = "Fiji macro") -> str:
    """Run a shipped macro in the user's Fiji; one-line error with the last message on failure."""
    cmd = fiji_command(find_fiji(), macro, argument)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=utf8_env())
    except subprocess.TimeoutExpired:
        raise FmcInputError(f"{what} timed out after {timeout:g} s (a dialog may be waiting in Fiji)") from None
    if res.returncode != 0 or "Macro Error" in res.stdout:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FmcInputError(f"{what} failed: {tail[0]}")
    return res.stdout


def run_nanoj_squirrel(reference: str | Path, image: str | Path, out_dir: str | Path, *, max_mag: int = 5):
    """NanoJ-SQUIRREL's *Calculate Error-Map, RSE and RSP* in the user's Fiji.

    Returns one dict per frame (``frame``, ``rsp``, ``rse``) parsed from the results table, and leaves
    ``errormap.tif`` and ``squirrel_results.csv`` in ``out_dir``.
    """
    find_squirrel()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    arg = f"reference=[{ij_path(reference)}] image=[{ij_path(image)}] out=[{ij_path(out)}] max={max_mag}"
    run_fiji_macro(macro_path("fmc_squirrel_nanoj.ijm"), arg, what="NanoJ-SQUIRREL in Fiji")
    table = out / "squirrel_results.csv"
    if not table.is_file():
        raise FmcInputError("NanoJ-SQUIRREL in Fiji produced no results table; run it once by hand to check the setup")
    rows = []
    for line in table.read_text().splitlines()[1:]:
        frame, rsp, rse = line.split(",")
        rows.append({"frame": int(frame), "rsp": float(rsp), "rse": float(rse)})
    return rows


def run_nanoj_register(
    reference: str | Path,
    moving: str | Path,
    out_dir: str | Path,
    *,
    blocks: int = 5,
    min_similarity: float = 0.5,
    timeout: float = 600.0,
) -> Path:
    """Register ``moving`` onto ``reference`` with NanoJ-Core's *Register Channels* inside the user's Fiji.

    Writes ``registered.tif`` and ``translation_mask.tif`` to ``out_dir`` and returns the registered path.
    """
    fiji = find_fiji()
    find_nanoj(fiji)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arg = (
        f"reference=[{ij_path(reference)}] moving=[{ij_path(moving)}] out=[{ij_path(out)}] "
        f"options=[{register_channels_estimate(blocks=blocks, min_similarity=min_similarity).options}]"
    )
    run_fiji_macro(macro_path("fmc_register_nanoj.ijm"), arg, timeout=timeout, what="NanoJ registration in Fiji")
    target = out / "registered.tif"
    if not target.is_file():
        raise FmcInputError("NanoJ registration in Fiji wrote no registered image; run it once by hand to check")
    return target
