"""deepImageJ's rules, copied from its sources (deepImageJ 3.1.0, July 2025; JDLL dl-modelrunner 0.6.1; ImageJ 1.54p).

- **Command.** ``DeepImageJ Run`` reads ``model_path``, ``input_path``, ``output_folder`` and ``display_output``
  with ``ij.Macro.getValue`` (3.1). Builds from 2024-11 to 2025-06-12 found ``modelPath=`` etc. by a case-sensitive
  ``indexOf``; builds from 2025-06-12 to 2025-07-17 asked ``Macro.getValue`` for ``modelPath``, which lower-cases
  the key and so finds only ``modelpath=``. :func:`deepimagej_run` sends all three spellings: every build finds
  its own and none is confused by the others.
- **Outputs.** Each output tensor is saved as ``IJ.saveAsTiff(out, folder/<getShortTitle()>_<tensor id>)``:
  :func:`short_title` and :func:`output_name` are those two ImageJ methods.
- **A folder as input** is run with one model load, on *every* entry of ``File.listFiles()`` in no set order; an
  entry that is not an image stops the run. :func:`stage_inputs` therefore hands deepImageJ a folder of links to
  the images only, under names that cannot clash.
- **Install.** ``Plugins > DeepImageJ > Install model manually`` copies the zip to
  ``Fiji.app/models/<zip name>_<ddMMYYYY_HHmmss>.zip`` and unpacks it beside it (:func:`install_model`); the
  command is a window with no macro options.

What a bundle needs for deepImageJ (tiles, clip, nickname) is in :mod:`fmc_ij.export.jdll`.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fmc_ij.errors import FmcInputError
from fmc_ij.fiji.commands import Command, ij_path, option_value
from fmc_ij.io import atomic_path, imread, imwrite, read_meta

if TYPE_CHECKING:
    from fmc_ij.fiji.bridge import ImageJ

RUN_COMMAND = "DeepImageJ Run"
INSTALL_COMMAND = "Install model manually"  # Plugins > DeepImageJ (a window: nothing a macro can drive)
OUTPUT_TENSOR = "restored"  # the output tensor id of fmc-ij bundles
#: The key spellings deepImageJ builds read: 3.1, then 2025-06-12..2025-07-17, then 2024-11-11..2025-06-12.
RUN_KEYS = (
    ("model_path", "input_path", "output_folder", "display_output"),
    ("modelpath", "inputpath", "outputfolder", "displayoutput"),
    ("modelPath", "inputPath", "outputFolder", "displayOutput"),
)
_INSTALL_FORBIDDEN = '\\|/<>:"?*'  # Install_From_URL_Or_Path.removeInvalidCharacters
US_WEEK = (6, 1)  # java.util.Calendar in the US locale: weeks start on Sunday, week 1 holds 1 January


def short_title(title: str) -> str:
    """ImageJ's ``ImagePlus.getShortTitle()`` (1.53t and 1.54p alike) for an image titled ``title``.

    A title with a dot after its first character is a file name: everything from the last dot is dropped and every
    space removed (``"img 1_nucleus.tif"`` -> ``"img1_nucleus"``, ``"a.b c.tif"`` -> ``"a.bc"``). Otherwise
    the title is cut at its first space. Leading and trailing whitespace is trimmed first (Java's ``trim``).
    """
    title = _java_trim(title)
    dot = title.rfind(".")
    if dot > 0:
        return title[:dot].replace(" ", "")
    space = title.find(" ")
    return title[:space] if space > -1 else title


def _java_trim(text: str) -> str:
    # String.trim removes every char <= U+0020 at both ends (not Python's notion of whitespace)
    lo, hi = 0, len(text)
    while lo < hi and text[lo] <= " ":
        lo += 1
    while hi > lo and text[hi - 1] <= " ":
        hi -= 1
    return text[lo:hi]


def output_name(input_name: str, tensor: str = OUTPUT_TENSOR) -> str:
    """The file name deepImageJ writes for input file ``input_name`` and output tensor ``tensor``.

    ``IJ.openImage`` titles the image with its file name; deepImageJ saves ``getShortTitle() + "_" + tensor``
    with ``IJ.saveAsTiff``, whose ``updateExtension`` replaces a short trailing extension or appends ``.tif``.
    """
    path = short_title(input_name) + "_" + tensor
    if path.endswith(".tiff"):
        return path
    dot = path.rfind(".")
    if dot >= 0 and len(path) - dot <= 5:  # IJ.updateExtension (no separator can follow: this is a name)
        return path + ".tif" if dot + 1 < len(path) and path[dot + 1].isdigit() else path[:dot] + ".tif"
    return path + ".tif"


def deepimagej_run(
    model: str | os.PathLike,
    input_path: str | os.PathLike | None,
    output_folder: str | os.PathLike,
    *,
    display_output: str = "null",
) -> Command:
    """*DeepImageJ Run* with the keys of every deepImageJ build since 2024-11 (see the module notes).

    Parameters
    ----------
    model : path or str
        An unpacked bundle folder, a folder name under ``Fiji.app/models`` or the bundle's nickname
        (``config.bioimageio.nickname``; deepImageJ looks a nickname up on bioimage.io when it is not installed).
    input_path : path, optional
        A TIFF, or a folder whose entries are all images (one model load for all; see :func:`stage_inputs`).
        None: the current image.
    output_folder : path
        Where deepImageJ writes :func:`output_name` files.
    display_output : str
        ``"null"`` shows nothing; ``"all"`` also shows the outputs.
    """
    m = Path(model)
    values = (
        ij_path(m) if (m.is_absolute() or m.exists()) else str(model),
        ij_path(input_path) if input_path is not None else None,
        ij_path(output_folder),
        display_output,
    )
    # keys as written (camelCase included): ImageJ's own option helpers would lower-case them
    parts = [f"{k}={option_value(v)}" for keys in RUN_KEYS for k, v in zip(keys, values) if v is not None]
    return Command(RUN_COMMAND, " ".join(parts))


def stage_inputs(
    files: Sequence[str | os.PathLike], folder: str | os.PathLike, tensor: str = OUTPUT_TENSOR
) -> dict[str, Path]:
    """Links to ``files`` in the empty ``folder``, for one deepImageJ run over them all.

    Returns ``{output file name deepImageJ will write: input path}``. The links are named ``0001.tif``, ... so
    that no two outputs clash and no name trips ImageJ (spaces, dots, brackets); files that cannot be linked
    are copied.
    """
    folder = Path(folder)
    if any(folder.iterdir()):
        raise FmcInputError(f"{folder}: the staging folder must be empty (deepImageJ runs on all it holds)")
    staged: dict[str, Path] = {}
    width = max(4, len(str(len(files))))
    for i, f in enumerate(files, 1):
        src = Path(f).resolve()
        if not src.is_file():
            raise FmcInputError(f"{f}: no such file")
        link = folder / f"{i:0{width}d}{'.tiff' if src.suffix.lower() == '.tiff' else '.tif'}"
        try:
            link.symlink_to(src)
        except OSError:
            shutil.copyfile(src, link)
        staged[output_name(link.name, tensor)] = src
    return staged


def install_dir_name(zip_name: str, when: dt.datetime, *, week: tuple[int, int] = US_WEEK) -> str:
    """The folder deepImageJ 3.1's *Install model manually* unpacks ``zip_name`` to (under ``Fiji.app/models``).

    ``<name without .zip>_<ddMMYYYY_HHmmss>`` from Java's ``SimpleDateFormat("ddMMYYYY_HHmmss")``, with
    ``\\|/<>:"?*`` replaced by ``_``. ``YYYY`` is the *week year* of the JVM's locale: ``week`` = (first day of the
    week, Monday = 0; minimal days of week 1), (6, 1) in the US, (0, 4) in most of Europe, so the last days of
    December may already count the next year. ``when`` is when deepImageJ loaded its install plugin (the calendar
    is a static field), in the JVM's time zone.
    """
    name = zip_name[:-4] if zip_name.endswith(".zip") else zip_name  # case-sensitive, as deepImageJ
    stamp = f"{when:%d%m}{_week_year(when.date(), *week):04d}_{when:%H%M%S}"
    full = name + "_" + stamp + ".zip"
    for c in _INSTALL_FORBIDDEN:
        full = full.replace(c, "_")
    return full[: full.rfind(".")]


def _week_year(day: dt.date, first_weekday: int, min_days: int) -> int:
    """java.util.GregorianCalendar's week year: week 1 is the first week holding ``min_days`` days of January."""

    def week1(year: int) -> dt.date:
        jan1 = dt.date(year, 1, 1)
        offset = (jan1.weekday() - first_weekday) % 7
        start = jan1 - dt.timedelta(days=offset)
        return start + dt.timedelta(days=7) if 7 - offset < min_days else start

    if day >= week1(day.year + 1):
        return day.year + 1
    return day.year - 1 if day < week1(day.year) else day.year


def install_model(bundle: str | os.PathLike, fiji: str | os.PathLike, *, when: dt.datetime | None = None) -> Path:
    """Install a bundle into ``fiji``/models as deepImageJ 3.1's *Install model manually* does; return the folder.

    For headless use (the command is a window): the zip is copied to ``models/<name>_<ddMMYYYY_HHmmss>.zip`` and
    unpacked into the folder of the same name (:func:`install_dir_name`), both written atomically.
    """
    bundle, models = Path(bundle), Path(fiji) / "models"
    if not zipfile.is_zipfile(bundle):
        raise FmcInputError(f"{bundle}: not a zip file; give an exported fmc-ij bundle (.zip)")
    target = models / install_dir_name(bundle.name, when or dt.datetime.now())
    if target.exists():
        raise FmcInputError(f"{target} exists already; install again a second later or remove it")
    with zipfile.ZipFile(bundle) as z:
        names = z.namelist()
        bad = [n for n in names if n.startswith(("/", "\\")) or ".." in Path(n).parts]
        if bad:
            raise FmcInputError(f"{bundle}: refusing zip entry {bad[0]!r} (absolute or parent path)")
        if "rdf.yaml" not in names:
            raise FmcInputError(f"{bundle}: no rdf.yaml at the top of the zip; it is not a bioimage.io bundle")
        with atomic_path(target, is_dir=True) as tmp:
            z.extractall(tmp)
    with atomic_path(target.with_name(target.name + ".zip")) as tmp:
        shutil.copyfile(bundle, tmp)
    return target


def run_on_files(
    ij: ImageJ,
    model: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    tensor: str = OUTPUT_TENSOR,
    keep_calibration: bool = True,
    timeout: float = 24 * 3600.0,
) -> list[Path]:
    """Run deepImageJ on every file of ``inputs`` with one model load; outputs keep their input's file name.

    The inputs are linked into a temporary folder (:func:`stage_inputs`) given to deepImageJ as ``input_path``;
    its outputs (:func:`output_name`) are renamed into ``out_dir``, with the voxel size, unit and channel of
    their input (deepImageJ writes none) unless ``keep_calibration`` is false. Raises :class:`FmcInputError`
    naming the inputs deepImageJ wrote nothing for, with its last message (an image below
    :func:`min_image_size`, say).
    """
    if not inputs:
        raise FmcInputError("no input images given to deepImageJ")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fmc-dij-in-") as stage_dir, \
            tempfile.TemporaryDirectory(prefix=".fmc-dij-out-", dir=out) as raw_dir:  # fmt: skip
        staged = stage_inputs(inputs, stage_dir, tensor)
        ij.run_command(deepimagej_run(model, stage_dir, raw_dir), timeout=timeout)
        missing = [src.name for name, src in staged.items() if not (Path(raw_dir) / name).is_file()]
        if missing:
            said = next((ln for ln in reversed(ij.output.splitlines()) if "Exception" in ln or "rror" in ln), "")
            raise FmcInputError(f"deepImageJ wrote no output for {', '.join(missing)}" + (f": {said.strip()}"
                                if said else "; check the model (bundle_problems) and the Fiji log"))  # fmt: skip
        written = []
        for name, src in staged.items():
            dst = out / src.name
            if keep_calibration:  # deepImageJ writes no voxel size: give the output its input's
                _recalibrated(Path(raw_dir) / name, src)
            os.replace(Path(raw_dir) / name, dst)  # same folder tree: an atomic rename
            written.append(dst)
    return written


def _recalibrated(path: Path, like: Path) -> None:
    meta = read_meta(like)[0]
    img = imread(path)
    spacing = {a: v for a, v in meta.spacing.items() if a in img.meta.axes}
    imwrite(path, img.data, img.meta.replace(spacing=spacing, unit=meta.unit, channel=meta.channel, study=meta.study))
