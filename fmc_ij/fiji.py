"""Fiji / ImageJ interop.

This module runs ImageJ 1 macros in a real ImageJ: Debian's ``libij-java`` (ImageJ 1.53t) or a
Fiji/ImageJ ``ij.jar`` the user points to with ``FMC_IJ_IJ_JAR``. Macro commands that open images
need AWT, so a headless machine gets a virtual X server (Xvfb). Nothing here downloads anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from fmc_ij.errors import FmcInputError

MACROS_DIR = Path(__file__).resolve().parent.parent / "macros"
_IJ_JAR_CANDIDATES = ("/usr/share/java/ij.jar",)


class ImageJNotFound(FmcInputError):
    """No ImageJ 1 / Java / Xvfb to run a macro with."""


def find_ij_jar() -> Path:
    """Locate ``ij.jar``: ``$FMC_IJ_IJ_JAR``, then Debian's libij-java."""
    env = os.environ.get("FMC_IJ_IJ_JAR")
    for cand in ([env] if env else []) + list(_IJ_JAR_CANDIDATES):
        if cand and Path(cand).is_file():
            return Path(cand)
    raise ImageJNotFound(
        "ImageJ 1 not found: install it (Debian: apt-get install libij-java) or set FMC_IJ_IJ_JAR=/path/to/ij.jar"
    )


def find_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ImageJNotFound("Java not found: install a JRE (Debian: apt-get install default-jre-headless)")
    return java


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
    cmd = [java, "-Xmx2g", "-jar", str(jar), "-batch", str(macro), argument]
    if not os.environ.get("DISPLAY"):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            raise ImageJNotFound("no display and no Xvfb: install xvfb (apt-get install xvfb) or set DISPLAY")
        cmd = [xvfb, "-a", "-s", "-screen 0 1280x1024x24", *cmd]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"ImageJ macro {macro} timed out after {timeout:g} s") from None
    if res.returncode != 0 or "Macro Error" in res.stdout:
        raise RuntimeError(
            f"ImageJ macro {macro} failed (exit {res.returncode}): {(res.stderr or res.stdout).strip()[-500:]}"
        )
    return res.stdout


def imagej_calibration(path: str | Path, *, timeout: float = 120.0) -> dict[str, str]:
    """Open an image in ImageJ 1 and return what ``getVoxelSize``/``getDimensions`` report."""
    out = run_imagej1_macro(macro_path("fmc_calibration.ijm"), f"path=[{Path(path).resolve()}]", timeout=timeout)
    line = next((ln for ln in out.splitlines() if ln.startswith("file=")), None)
    if line is None:
        raise RuntimeError(f"ImageJ printed no calibration for {path}: {out.strip()[-300:]}")
    # "file=a b.tif width=..." : the file name may hold spaces, the other values do not.
    head, _, rest = line.partition(" width=")
    fields = dict(kv.split("=", 1) for kv in ("width=" + rest).split())
    fields["file"] = head[len("file=") :]
    return fields
