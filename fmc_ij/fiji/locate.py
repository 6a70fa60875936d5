"""Where Java, ImageJ 1 and Fiji (with NanoJ) are on this machine. Nothing here downloads anything."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fmc_ij.errors import FmcInputError

_IJ_JAR_CANDIDATES = ("/usr/share/java/ij.jar",)


class ImageJNotFound(FmcInputError):
    """No ImageJ 1 / Java / Xvfb to run a macro with."""


def find_ij_jar() -> Path:
    """Locate ``ij.jar``: ``$IJ_JAR`` (or ``$FMC_IJ_IJ_JAR``), then Debian's libij-java."""
    env = [os.environ[k] for k in ("IJ_JAR", "FMC_IJ_IJ_JAR") if os.environ.get(k)]
    for cand in env:
        if not Path(cand).is_file():
            raise ImageJNotFound(f"IJ_JAR={cand}: no such file; point it at an ImageJ 1 ij.jar")
    for cand in env + list(_IJ_JAR_CANDIDATES):
        if Path(cand).is_file():
            return Path(cand)
    raise ImageJNotFound(
        "ImageJ 1 not found: install it (Debian: apt-get install libij-java), set IJ_JAR=/path/to/ij.jar, "
        "or FIJI_HOME=/path/to/Fiji.app"
    )


def find_java() -> str:
    """The ``java`` executable: ``$JAVA_HOME/bin/java``, then the PATH. fmc-ij never downloads a JRE."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise ImageJNotFound(
            "Java not found (fmc-ij never downloads one): install a JRE 11+ (Debian: apt-get install "
            "default-jre-headless) or set JAVA_HOME"
        )
    return java


_FIJI_CANDIDATES = ("~/Fiji.app", "~/fiji", "/opt/Fiji.app", "/opt/fiji", "/usr/local/Fiji.app")
NANOJ_INSTALL = (
    "install NanoJ-Core in Fiji (Help > Update... > Manage update sites > tick 'NanoJ-Core' > Apply) "
    "and set FIJI_HOME to the Fiji.app folder"
)


def find_fiji() -> Path:
    """Locate a Fiji installation: ``$FIJI_HOME`` (or ``$FMC_IJ_FIJI``), then the usual folders. Never downloads."""
    env = next((os.environ[k] for k in ("FIJI_HOME", "FMC_IJ_FIJI") if os.environ.get(k)), None)
    for cand in ([env] if env else []) + list(_FIJI_CANDIDATES):
        p = Path(cand).expanduser()
        if (p / "jars").is_dir() and (p / "plugins").is_dir():
            return p
    raise ImageJNotFound(
        "Fiji not found (this toolkit does not download it): install Fiji from https://fiji.sc on a machine with "
        f"internet access, copy it here and set FIJI_HOME=/path/to/Fiji.app, then {NANOJ_INSTALL}"
    )


def find_nanoj(fiji: Path | None = None) -> Path:
    """The NanoJ-Core jar inside Fiji, or a one-line error saying how to install it."""
    fiji = fiji or find_fiji()
    jars = sorted(fiji.glob("plugins/**/NanoJ*Core*.jar")) + sorted(fiji.glob("jars/**/NanoJ*Core*.jar"))
    if not jars:
        raise ImageJNotFound(f"NanoJ-Core is not installed in {fiji}: {NANOJ_INSTALL}")
    return jars[0]


def find_squirrel(fiji: Path | None = None) -> Path:
    """The NanoJ-SQUIRREL jar inside Fiji, or a one-line error saying how to install it."""
    fiji = fiji or find_fiji()
    jars = sorted(fiji.glob("plugins/**/*SQUIRREL*.jar")) + sorted(fiji.glob("jars/**/*SQUIRREL*.jar"))
    if not jars:
        raise ImageJNotFound(
            f"NanoJ-SQUIRREL is not installed in {fiji}: Help > Update... > Manage update sites > tick "
            "'NanoJ-SQUIRREL' > Apply, then restart Fiji"
        )
    return jars[0]


#: G1's region size for every JVM fmc-ij starts. With the default (2 MiB at -Xmx4g) every plane of 1 MiB or more
#: (512x512 float32) is a "humongous" object, allocated region by region outside the young generation: handing a
#: 128x512x512 float32 stack to ImageJ took 0.12-0.44 s, where 512x512 uint16 planes (not humongous) took 0.01 s.
#: 32 MiB (JDK 17's largest) keeps planes below 16 MiB (2048x2048 uint16) ordinary: 0.013 s (benchmarks/bench_fiji.py).
JVM_REGION_OPTION = "-XX:G1HeapRegionSize=32m"


def jvm_options(max_heap: str) -> list[str]:
    """The options of every JVM fmc-ij starts (in process or as a batch ImageJ): its heap and G1 region size."""
    return [f"-Xmx{max_heap}", JVM_REGION_OPTION]


def utf8_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with a UTF-8 locale, so Java reads and writes non-ASCII file names."""
    env = dict(os.environ if env is None else env)
    current = env.get("LC_ALL") or env.get("LC_CTYPE") or env.get("LANG") or ""
    if "utf-8" not in current.lower() and "utf8" not in current.lower():
        env["LC_ALL"] = "C.UTF-8"
    return env
