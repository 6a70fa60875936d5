"""ImageJ inside this Python process: numpy <-> ImagePlus, macros, menu commands, results tables.

One JVM per process (JPype cannot restart one), so :func:`connect` returns the same :class:`ImageJ` every time.
Backends, whatever the backend the same interface:

- ``imagej1``: plain ImageJ 1.x (Debian's libij-java, ``$IJ_JAR``, or a Fiji-shaped folder without ImageJ2) via
  scyjava, under a private Xvfb when there is no display (menu commands and dialogs need AWT);
- ``pyimagej``: a local Fiji.app (argument or ``$FIJI_HOME``) or, when asked, a Maven endpoint, through pyimagej's
  ImageJ2 gateway (:attr:`ImageJ.gateway`); the ImageJ 1 layer inside it does the rest.

Nothing downloads a JRE (scyjava is told never to fetch one). Macro errors become :class:`MacroError`; modal
dialogs are closed by a watchdog and their text raised; every call has a timeout.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from fmc_ij.errors import FmcInputError
from fmc_ij.fiji.commands import Command
from fmc_ij.fiji.locate import ImageJNotFound, find_ij_jar, find_java, utf8_env
from fmc_ij.io import Image, ImageMeta

T = TypeVar("T")
Backend = Literal["imagej1", "pyimagej"]
_DTYPES = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16, np.dtype(np.float32): 32}
_BRIDGE: ImageJ | None = None


class MacroError(RuntimeError):
    """An ImageJ macro or command failed (the message is ImageJ's)."""


class ImageJ:
    """A running ImageJ; create it with :func:`connect`."""

    def __init__(self, backend: Backend, source: str, gateway: Any = None) -> None:
        import jpype
        import scyjava as sj

        self.backend, self.source, self.gateway = backend, source, gateway
        self._jpype, self._sj = jpype, sj
        self.IJ = sj.jimport("ij.IJ")
        self._Interpreter = sj.jimport("ij.macro.Interpreter")
        self._WindowManager = sj.jimport("ij.WindowManager")
        self._dialogs: list[str] = []
        #: What ImageJ printed during the last call (its Log and messages, when it has no window).
        self.output = ""
        self._lock = threading.Lock()
        self._watchdog = threading.Thread(target=self._watch_dialogs, name="fmc-ij-dialog-watchdog", daemon=True)
        self._watchdog.start()
        if self.IJ.getInstance() is None and sj.jimport("ij.Menus").getCommands() is None:
            self.IJ.init()  # ImageJ 1 menus (the command table) without a main window
        self._Interpreter.batchMode = True  # images stay off screen; macros and commands still see them

    @property
    def version(self) -> str:
        return str(self.IJ.getFullVersion())

    # -- numpy <-> ImagePlus -------------------------------------------------------------------------------
    def to_imageplus(
        self,
        data: np.ndarray | Image,
        *,
        axes: str | None = None,
        spacing: Sequence[float] | None = None,
        unit: str = "µm",
        title: str = "image",
    ) -> Any:
        """An ImagePlus holding a copy of ``data`` (YX, ZYX, CYX or CZYX; uint8, uint16 or float32).

        ``spacing`` is per spatial axis in ``axes`` order (e.g. Z, Y, X); an :class:`~fmc_ij.io.Image` brings its
        own axes, voxel size and unit.
        """
        if isinstance(data, Image):
            axes = axes or data.meta.axes
            spacing = spacing if spacing is not None else (data.meta.voxel_size() or None)
            unit = data.meta.unit or unit
            data = np.asarray(data.data)
        arr = np.asarray(data)
        axes = (axes or {2: "YX", 3: "ZYX"}.get(arr.ndim, "")).upper()
        if axes not in ("YX", "ZYX", "CYX", "CZYX") or len(axes) != arr.ndim:
            raise FmcInputError(f"ImageJ transfer needs YX, ZYX, CYX or CZYX; got axes {axes!r} for shape {arr.shape}")
        if arr.dtype not in _DTYPES:
            raise FmcInputError(f"ImageJ holds uint8, uint16 or float32 images, not {arr.dtype}; convert it first")
        h, w = arr.shape[-2:]
        c = arr.shape[axes.index("C")] if "C" in axes else 1
        z = arr.shape[axes.index("Z")] if "Z" in axes else 1
        # ImageJ's stack order is channel fastest: (Z, C, Y, X) flattened.
        planes = np.ascontiguousarray(np.moveaxis(arr, axes.index("C"), -3) if "C" in axes else arr)
        planes = planes.reshape(-1, h, w)
        J = self._jpype
        typed, jtype = self._typed_buffer(planes, arr.dtype)
        stack = self._sj.jimport("ij.ImageStack")(w, h)
        for i in range(planes.shape[0]):
            pix = J.JArray(jtype)(w * h)
            typed.position(i * w * h)
            typed.get(pix)  # one bulk copy in Java
            stack.addSlice("", pix)
        imp = self._sj.jimport("ij.ImagePlus")(title, stack)
        imp.setDimensions(c, z, 1)
        if c > 1:
            imp.setOpenAsHyperStack(True)
        if spacing is not None:
            sp = list(spacing)[-(len(axes.replace("C", ""))) :]
            cal = imp.getCalibration()
            cal.pixelWidth, cal.pixelHeight = float(sp[-1]), float(sp[-2])
            if "Z" in axes:
                cal.pixelDepth = float(sp[0])
            cal.setUnit("micron" if unit in ("µm", "um", "micron") else unit)
        return imp

    def from_imageplus(self, imp: Any) -> Image:
        """A numpy copy of an ImagePlus (axes from its dimensions, e.g. ``ZYX``) with voxel size and unit."""
        bits = int(imp.getBitDepth())
        dtype = {8: np.uint8, 16: np.uint16, 32: np.float32}.get(bits)
        if dtype is None:
            raise FmcInputError(f"{imp.getTitle()}: {bits}-bit (RGB) images are not supported; split the channels")
        stack = imp.getStack()
        n, w, h = int(stack.getSize()), int(imp.getWidth()), int(imp.getHeight())
        out = np.empty((n, h, w), dtype)
        typed, _ = self._typed_buffer(out, np.dtype(dtype))
        for i in range(n):
            typed.position(i * w * h)
            typed.put(stack.getPixels(i + 1))
        c, z, t = int(imp.getNChannels()), int(imp.getNSlices()), int(imp.getNFrames())
        data = out.reshape(t, z, c, h, w).transpose(0, 2, 1, 3, 4)  # -> T, C, Z, Y, X
        keep = [a for a, size in zip("TCZ", (t, c, z)) if size > 1]
        data = data.reshape(*[s for s, a in zip(data.shape[:3], "TCZ") if a in keep], h, w)
        axes = "".join(keep) + "YX"
        cal = imp.getCalibration()
        unit = str(cal.getUnit())
        spacing = {"Y": float(cal.pixelHeight), "X": float(cal.pixelWidth)}
        if "Z" in axes:
            spacing["Z"] = float(cal.pixelDepth)
        meta = ImageMeta(axes=axes, spacing=spacing, unit="µm" if unit in ("micron", "um", "µm") else unit)
        return Image(np.ascontiguousarray(data), meta)

    def _typed_buffer(self, arr: np.ndarray, dtype: np.dtype) -> tuple[Any, Any]:
        """A Java view of ``arr``'s memory typed as ImageJ's pixel arrays (uint16 as Java's signed short)."""
        J = self._jpype
        if not arr.flags.writeable:
            arr = arr.copy()
        bb = J.nio.convertToDirectBuffer(arr.view(np.uint8).reshape(-1))
        bb.order(self._sj.jimport("java.nio.ByteOrder").nativeOrder())
        if dtype == np.float32:
            return bb.asFloatBuffer(), J.JFloat
        if dtype == np.uint16:
            return bb.asShortBuffer(), J.JShort
        return bb, J.JByte

    # -- macros and commands -------------------------------------------------------------------------------
    def run_macro(self, code: str, args: str = "", *, image: Any = None, timeout: float = 300.0) -> str:
        """Run ImageJ macro code with ``getArgument()`` = ``args``; return its ``return`` value ("" if none).

        ``image`` (an ImagePlus) is the macro's current image. Raises :class:`MacroError` with ImageJ's message on
        a macro error or a dialog the macro opened, :class:`TimeoutError` after ``timeout`` seconds.
        """

        def call() -> str:
            if image is not None:
                self._WindowManager.setTempCurrentImage(image)  # per thread: set on the thread that runs
            interp = self._Interpreter()
            interp.setIgnoreErrors(True)  # an error sets a message instead of opening a modal dialog
            ret = interp.run(code, args)
            err = interp.getErrorMessage()
            if err is not None and str(err):
                raise MacroError(f"macro error: {err}")
            value = "" if ret is None else str(ret)
            if value == "[aborted]":
                raise MacroError("the macro was aborted")
            return value

        return self._guarded(call, timeout, "macro")

    def run_macro_file(
        self, path: str | os.PathLike, args: str = "", *, image: Any = None, timeout: float = 300.0
    ) -> str:
        """Run an ``.ijm`` file (arguments as ``key=value`` for ``getArgument()``); return its return value."""
        p = Path(path)
        if not p.is_file():
            raise FmcInputError(f"{p}: no such macro file")
        return self.run_macro(p.read_text(encoding="utf-8"), args, image=image, timeout=timeout)

    def has_command(self, name: str) -> bool:
        commands = self._sj.jimport("ij.Menus").getCommands()
        return commands is not None and commands.get(name) is not None

    def run_command(
        self, command: str | Command, options: str = "", *, image: Any = None, timeout: float = 600.0
    ) -> None:
        """Run a menu command (``IJ.run``) with an option string, on ``image`` or the current image.

        A command ImageJ does not know, a dialog it opens or an error it reports raises :class:`MacroError`.
        """
        if isinstance(command, Command):
            command, options = command.name, command.options
        if not self.has_command(command):
            raise FmcInputError(f"ImageJ has no command {command!r}: install the plugin that provides it")

        def call() -> None:
            if image is not None:
                self.IJ.run(image, command, options)
            else:
                self.IJ.run(command, options)

        self._guarded(call, timeout, f"command {command!r}")

    def image(self, title: str) -> Any:
        """An open image by title (those a command or macro made), or :class:`FmcInputError`."""
        imp = self._WindowManager.getImage(title)
        if imp is None:
            raise FmcInputError(f"no open image titled {title!r}; open: {', '.join(self.image_titles())}")
        return imp

    def image_titles(self) -> list[str]:
        return [str(t) for t in (self._WindowManager.getImageTitles() or [])]

    def table(self, title: str) -> list[dict[str, float | str]]:
        """A results table by title as a list of rows (numbers as floats, text as str)."""
        rt = self._sj.jimport("ij.measure.ResultsTable").getResultsTable(title)
        if rt is None:
            raise FmcInputError(f"no results table titled {title!r}")
        heads = [str(h) for h in rt.getHeadings()]
        rows = []
        for r in range(int(rt.size())):
            row: dict[str, float | str] = {}
            for h in heads:
                d = float(rt.getValue(h, r))  # full precision; text cells read as NaN
                text = str(rt.getStringValue(h, r))
                row[h] = d if (d == d or text.lower() == "nan") else text
            rows.append(row)
        return rows

    def close_all(self) -> None:
        """Close every image (batch-mode and shown) and forget them."""
        for i in list(self._WindowManager.getIDList() or []):
            imp = self._WindowManager.getImage(int(i))
            if imp is not None:
                imp.changes = False
                imp.close()

    # -- safety ---------------------------------------------------------------------------------------------
    def _guarded(self, fn: Callable[[], T], timeout: float, what: str) -> T:
        """Run ``fn`` on a worker thread with a timeout; dialogs it opened become a :class:`MacroError`."""
        with self._lock:
            self._dialogs.clear()
            box: dict[str, Any] = {}

            def target() -> None:
                try:
                    box["value"] = fn()
                except BaseException as err:  # noqa: BLE001 (re-raised in the caller's thread)
                    box["error"] = err

            # ImageJ without a main window prints its Log, messages and exit() texts to System.out: keep them.
            System = self._sj.jimport("java.lang.System")
            buf = self._sj.jimport("java.io.ByteArrayOutputStream")()
            saved = System.out
            System.setOut(self._sj.jimport("java.io.PrintStream")(buf, True, "UTF-8"))
            worker = threading.Thread(target=target, name="fmc-ij-imagej-call", daemon=True)
            try:
                worker.start()
                worker.join(timeout)
                if worker.is_alive():
                    self._Interpreter.abort()
                    self._close_dialogs()
                    worker.join(5.0)
                    raise TimeoutError(f"ImageJ {what} did not finish within {timeout:g} s (aborted)")
            finally:
                System.setOut(saved)
                self.output = str(buf.toString("UTF-8"))
            last = next((ln for ln in reversed(self.output.splitlines()) if ln.strip()), "")
            if "error" in box:
                err = box["error"]
                if isinstance(err, MacroError | FmcInputError | TimeoutError):
                    raise err
                if "Macro canceled" in str(err):  # exit("...") or a command that gave up: its text was printed
                    raise MacroError(f"ImageJ {what} stopped: {last or 'exit()'}") from None
                raise MacroError(f"ImageJ {what} failed: {err}") from None
            self._close_dialogs()
            if self._dialogs:
                raise MacroError(f"ImageJ {what} opened a dialog: {' | '.join(self._dialogs)}")
            return box.get("value")  # type: ignore[return-value]

    def _close_dialogs(self) -> None:
        Window = self._sj.jimport("java.awt.Window")
        Dialog = self._sj.jimport("java.awt.Dialog")
        for w in Window.getWindows():
            if isinstance(w, Dialog) and w.isShowing():
                self._dialogs.append(f"{w.getTitle()}: {_component_text(w)}".strip(": "))
                w.dispose()

    def _watch_dialogs(self) -> None:
        # A modal dialog blocks the thread that opened it until someone closes it: close them as they appear.
        while True:
            time.sleep(0.2)
            with contextlib.suppress(Exception):
                self._close_dialogs()


def _component_text(c: Any) -> str:
    parts = []
    with contextlib.suppress(Exception):
        t = c.getText()  # labels, text fields, ImageJ's MultiLineLabel
        if t:
            parts.append(str(t))
    with contextlib.suppress(Exception):
        for child in c.getComponents():
            t = _component_text(child)
            if t:
                parts.append(t)
    return " ".join(parts)


# -- connecting ---------------------------------------------------------------------------------------------
_XVFB: subprocess.Popen | None = None


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


def _is_imagej2(fiji: Path) -> bool:
    return any((fiji / "jars").glob("imagej-common-*.jar")) or any((fiji / "jars").glob("imagej-[0-9]*.jar"))


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
        A Fiji.app folder (default ``$FIJI_HOME``): the pyimagej gateway on its jars. A folder with only
        ``jars/ij*.jar`` and ``plugins/`` (plain ImageJ 1) runs as ``imagej1`` with those plugins.
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
    fiji_dir = Path(fiji).expanduser() if fiji else None
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
    sj.config.add_option(f"-Xmx{max_heap}")
    if want == "pyimagej":
        _BRIDGE = _connect_pyimagej(sj, fiji_dir, endpoint, mode)
        return _BRIDGE
    if fiji_dir is not None:
        jars = sorted((fiji_dir / "jars").glob("ij*.jar"))
        if not jars:
            raise ImageJNotFound(f"no jars/ij*.jar in {fiji_dir}; reinstall Fiji or set IJ_JAR")
        jar, plugins = jars[-1], fiji_dir
        sj.config.add_option(f"-Dplugins.dir={plugins}")
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


def _connect_pyimagej(sj: Any, fiji_dir: Path | None, endpoint: str | None, mode: str) -> ImageJ:
    try:
        import imagej
    except ImportError:
        raise FmcInputError("a Fiji.app needs pyimagej: pip install 'fmc-ij[fiji]'") from None
    sj.config.set_java_constraints(fetch="auto")  # pyimagej 1.8 crashes with "never"; Java was found above
    if fiji_dir is not None:
        # deepImageJ resolves models/ and engines/ against the working directory under a system JDK.
        os.chdir(fiji_dir)
    try:
        gateway = imagej.init(str(fiji_dir) if fiji_dir else endpoint, mode=mode)
    except Exception as err:
        where = fiji_dir or endpoint
        hint = "" if fiji_dir else " (a Maven endpoint needs the internet on first use; offline, set FIJI_HOME)"
        first = str(err).splitlines()[0][:200] if str(err) else ""
        raise ImageJNotFound(f"could not start ImageJ2 from {where}{hint}: {type(err).__name__}: {first}") from None
    _stop_threads_at_exit(sj)
    return ImageJ("pyimagej", str(fiji_dir or endpoint), gateway)


def _stop_threads_at_exit(sj: Any) -> None:
    # ImageJ 1's filter thread pool has non-daemon core threads: Python would hang at exit without this.
    def stop() -> None:
        with contextlib.suppress(Exception):
            sj.jimport("ij.util.ThreadUtil").threadPoolExecutor.shutdownNow()

    sj.when_jvm_stops(stop)
