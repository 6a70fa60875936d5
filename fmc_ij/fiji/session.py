"""Starting ImageJ in this process: :func:`connect` (one JVM per process, so one ImageJ).

- ``imagej1``: plain ImageJ 1.x (Debian's libij-java, ``$IJ_JAR``, or a Fiji-shaped folder without ImageJ2) via
  scyjava, under a private Xvfb when there is no display (menu commands and dialogs need AWT);
- ``pyimagej``: a local Fiji.app (argument or ``$FIJI_HOME``) through pyimagej's ImageJ2 gateway, offline: the
  Maven endpoints other packages registered (imglyb's ``imglib2-imglyb``) are dropped when Fiji.app/jars holds
  their jar, so jgo resolves nothing; or, when asked, a Maven endpoint (needs the internet once).

Nothing downloads a JRE. At exit ImageJ 1's filter thread pool is shut down, or Python would wait on it forever.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal

from fmc_ij.errors import FmcInputError
from fmc_ij.fiji.bridge import Backend, ImageJ
from fmc_ij.fiji.locate import ImageJNotFound, find_ij_jar, find_java, jvm_options, utf8_env

_BRIDGE: ImageJ | None = None
_XVFB: subprocess.Popen | None = None


def connect(
    fiji: str | os.PathLike | None = None,
    mode: Literal["headless", "interactive", "gui"] = "headless",
    *,
    endpoint: str | None = None,
    max_heap: str = "4g",
) -> ImageJ:
    """Start ImageJ in this process (once) and return it.

    Parameters
    ----------
    fiji : path, optional
        A Fiji.app folder (default ``$FIJI_HOME``): the pyimagej gateway on its jars, with no network. A folder
        with only ``jars/ij*.jar`` and ``plugins/`` (plain ImageJ 1) runs as ``imagej1`` with those plugins.
    mode : str
        pyimagej's mode (``headless``, ``interactive``, ``gui``).
    endpoint : str, optional
        A Maven endpoint for pyimagej (e.g. ``"sc.fiji:fiji:2.16.0"``); needs the internet on first use.
    max_heap : str
        The JVM's ``-Xmx``.

    Without ``fiji``, ``$FIJI_HOME`` or ``endpoint``: ImageJ 1 from ``$IJ_JAR`` or Debian's libij-java.
    """
    global _BRIDGE
    fiji = fiji if fiji is not None else (os.environ.get("FIJI_HOME") or None)
    fiji_dir = Path(fiji).expanduser().resolve() if fiji else None
    if fiji_dir is not None and not (fiji_dir / "jars").is_dir():
        raise ImageJNotFound(f"{fiji_dir} is not a Fiji.app folder (no jars/): point FIJI_HOME at Fiji.app")
    want: Backend = "pyimagej" if (endpoint or (fiji_dir and _is_imagej2(fiji_dir))) else "imagej1"
    source = endpoint or str(fiji_dir or "")
    if _BRIDGE is not None:
        if _BRIDGE.backend != want or (source and source != _BRIDGE.source):
            raise FmcInputError(
                f"this Python process already runs ImageJ ({_BRIDGE.backend}: {_BRIDGE.source}); a JVM cannot be "
                "restarted: use a new process for another ImageJ"
            )
        return _BRIDGE
    java = find_java()
    try:
        import jpype  # noqa: F401
        import scyjava as sj
    except ImportError:
        raise FmcInputError("the Fiji bridge needs scyjava and JPype: pip install 'fmc-ij[fiji]'") from None
    os.environ.setdefault("JAVA_HOME", str(Path(os.path.realpath(java)).parents[1]))
    for option in jvm_options(max_heap):
        sj.config.add_option(option)
    if want == "pyimagej":
        _BRIDGE = _connect_pyimagej(sj, fiji_dir, endpoint, mode)
        return _BRIDGE
    if fiji_dir is not None:
        jars = sorted((fiji_dir / "jars").glob("ij*.jar"))
        if not jars:
            raise ImageJNotFound(f"no jars/ij*.jar in {fiji_dir}; reinstall Fiji or set IJ_JAR")
        jar = jars[-1]
        sj.config.add_option(f"-Dplugins.dir={fiji_dir}")
    else:
        jar = find_ij_jar()
    sj.config.set_java_constraints(fetch="never")  # never download a JRE
    sj.config.add_classpath(str(jar))
    if not os.environ.get("DISPLAY"):
        _start_xvfb()
    os.environ.update(utf8_env())  # the JVM takes its file-name encoding from the locale at start
    sj.start_jvm()
    _stop_threads_at_exit(sj)
    _BRIDGE = ImageJ("imagej1", str(fiji_dir or jar))
    return _BRIDGE


def _is_imagej2(fiji: Path) -> bool:
    return any((fiji / "jars").glob("imagej-common-*.jar")) or any((fiji / "jars").glob("imagej-[0-9]*.jar"))


def _start_xvfb() -> None:
    """A private X server for AWT (ImageJ 1's menus and dialogs) when this process has no display."""
    global _XVFB
    exe = shutil.which("Xvfb")
    if exe is None:
        raise ImageJNotFound("no display and no Xvfb: install xvfb (apt-get install xvfb) or set DISPLAY")
    r, w = os.pipe()
    _XVFB = subprocess.Popen([exe, "-displayfd", str(w), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                             pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    os.close(w)
    with os.fdopen(r) as fh:
        number = fh.readline().strip()
    if not number:
        raise ImageJNotFound("Xvfb did not start; check that xvfb is installed and runs")
    os.environ["DISPLAY"] = f":{number}"
    atexit.register(_XVFB.terminate)


def local_endpoints(endpoints: list[str], fiji_dir: Path) -> list[str]:
    """The Maven endpoints (``group:artifact[:version]``) whose jar is already in ``fiji_dir/jars``.

    jgo would resolve them on Maven Central although Fiji has them (imglyb registers ``imglib2-imglyb`` at import).
    """
    jars = {p.name for p in (fiji_dir / "jars").rglob("*.jar")}
    local = []
    for e in endpoints:
        parts = str(e).split(":")
        if len(parts) >= 2 and any(j.startswith(parts[1] + "-") and j[len(parts[1]) + 1 : len(parts[1]) + 2].isdigit()
                                   for j in jars):  # fmt: skip
            local.append(e)
    return local


def _connect_pyimagej(sj: Any, fiji_dir: Path | None, endpoint: str | None, mode: str) -> ImageJ:
    try:
        import imagej  # imports imglyb, which adds its Maven endpoint
    except ImportError:
        raise FmcInputError("a Fiji.app needs pyimagej: pip install 'fmc-ij[fiji]'") from None
    sj.config.set_java_constraints(fetch="auto")  # pyimagej 1.8 crashes with "never"; JAVA_HOME was set above
    if fiji_dir is not None:
        for e in local_endpoints(list(sj.config.endpoints), fiji_dir):
            sj.config.endpoints.remove(e)
        # Fiji's launcher sets these; deepImageJ finds models/ and engines/ under user.dir when the JDK is not
        # Fiji's own, so Java's working directory is Fiji.app (Python's is left alone).
        for prop in ("user.dir", "ij.dir", "imagej.dir", "fiji.dir"):
            sj.config.add_option(f"-D{prop}={fiji_dir}")
    os.environ.update(utf8_env())
    try:
        gateway = imagej.init(str(fiji_dir) if fiji_dir else endpoint, mode=mode)
    except Exception as err:
        where = fiji_dir or endpoint
        hint = "" if fiji_dir else " (a Maven endpoint needs the internet on first use; offline, set FIJI_HOME)"
        first = str(err).splitlines()[0][:200] if str(err) else ""
        raise ImageJNotFound(f"could not start ImageJ2 from {where}{hint}: {type(err).__name__}: {first}") from None
    if gateway is None or not sj.jvm_started():
        raise ImageJNotFound(f"could not start ImageJ2 from {fiji_dir or endpoint}: pyimagej gave no gateway")
    _stop_threads_at_exit(sj)
    return ImageJ("pyimagej", str(fiji_dir or endpoint), gateway)


def _stop_threads_at_exit(sj: Any) -> None:
    # ImageJ 1's filter thread pool has non-daemon core threads: Python would hang at exit without this.
    def stop() -> None:
        with contextlib.suppress(Exception):
            sj.jimport("ij.util.ThreadUtil").threadPoolExecutor.shutdownNow()

    sj.when_jvm_stops(stop)
