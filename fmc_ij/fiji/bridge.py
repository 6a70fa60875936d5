"""ImageJ inside this Python process: numpy <-> ImagePlus, macros, menu commands, results tables, ImageJ2 Datasets.

:func:`fmc_ij.fiji.connect` starts it (one JVM per process). Whatever the backend, the same interface:

- ``imagej1``: plain ImageJ 1.x through scyjava;
- ``pyimagej``: a Fiji.app through pyimagej's ImageJ2 gateway (:attr:`ImageJ.gateway`); its ImageJ 1 layer runs
  the same macros and commands, and :meth:`ImageJ.to_dataset`, :meth:`ImageJ.from_dataset` and :meth:`ImageJ.op`
  add ImageJ2 Datasets and ops.

Macro errors become :class:`MacroError`; modal dialogs are closed by a watchdog and their text raised; every call
has a timeout.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from fmc_ij.errors import FmcInputError
from fmc_ij.fiji.commands import Command
from fmc_ij.io import Image, ImageMeta

T = TypeVar("T")
Backend = Literal["imagej1", "pyimagej"]
_DTYPES = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16, np.dtype(np.float32): 32}


class MacroError(RuntimeError):
    """An ImageJ macro or command failed (the message is ImageJ's)."""


class ImageJ:
    """A running ImageJ; create it with :func:`fmc_ij.fiji.connect`."""

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

    # -- ImageJ2 (a Fiji.app) -------------------------------------------------------------------------------
    def to_dataset(self, data: np.ndarray | Image, **kwargs: Any) -> Any:
        """An ImageJ2 ``net.imagej.Dataset`` holding a copy of ``data``, calibrated (pyimagej backend only).

        Takes :meth:`to_imageplus`'s arguments; ImageJ2's legacy converter then wraps that ImagePlus, so pixels,
        voxel size and unit are exactly those of :meth:`to_imageplus`.
        """
        gateway = self._require_gateway("Datasets")
        imp = self.to_imageplus(data, **kwargs)
        return gateway.convert().convert(imp, self._sj.jimport("net.imagej.Dataset"))

    def from_dataset(self, dataset: Any) -> Image:
        """A numpy copy of an ImageJ2 Dataset (or an ImgLib2 image an op returned), with its calibration."""
        gateway = self._require_gateway("Datasets")
        if not isinstance(dataset, self._sj.jimport("net.imagej.Dataset")):
            dataset = gateway.dataset().create(dataset)
        return self.from_imageplus(gateway.convert().convert(dataset, self._sj.jimport("ij.ImagePlus")))

    def op(self, name: str, *args: Any) -> Any:
        """Run an ImageJ2 op by name, e.g. ``ij.op("filter.gauss", dataset, 2.0)`` (pyimagej backend only)."""
        return self._require_gateway("ops").op().run(name, *args)

    def _require_gateway(self, what: str) -> Any:
        if self.gateway is None:
            raise FmcInputError(
                f"ImageJ2 {what} need a Fiji.app: this is plain ImageJ 1 ({self.source}); connect(FIJI_HOME) instead"
            )
        return self.gateway

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
        """A results table by title as a list of rows (numbers as floats, text as str).

        Tables are found by their window; a headless Fiji has no windows, so there only ``"Results"`` (ImageJ's
        own table, which ``setResult`` fills) is found.
        """
        ResultsTable = self._sj.jimport("ij.measure.ResultsTable")
        rt = ResultsTable.getResultsTable(title)
        if rt is None and title == "Results":
            rt = ResultsTable.getResultsTable()
        if rt is None:
            raise FmcInputError(f"no results table titled {title!r}")
        heads = [str(h) for h in rt.getHeadings()]
        rows = []
        for r in range(int(rt.size())):
            row: dict[str, float | str] = {}
            for h in heads:
                if h == "Label":  # the row labels, not a column
                    row[h] = str(rt.getLabel(r))
                    continue
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
