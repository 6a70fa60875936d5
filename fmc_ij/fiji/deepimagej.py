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
- **Tiles** (JDLL): a bundle whose input sizes are all fixed runs as tiles of exactly that size, each at most 3x
  the image per axis (:func:`min_image_size`); parametrised sizes make one tile of the whole image plus halo, and
  JDLL's ``TileCalculator`` loops forever once that exceeds 4096 x 4096 x 3 voxels (:func:`bundle_problems`).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
#: JDLL's TileCalculator.OPTIMAL_MAX_NUMBER_PIXELS: above it, parametrised sizes hang (dl-modelrunner 0.6.1).
JDLL_MAX_TILE_VOXELS = 4096 * 4096 * 3
JDLL_MAX_TILE_TO_IMAGE = 3  # TileMaker.validateTileVsImageSize: tile <= 3 x image, per axis
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


# -- what JDLL 0.6.1 needs from a bundle ------------------------------------------------------------------------
def _space_axes(tensor: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [a for a in tensor.get("axes", []) if isinstance(a, Mapping) and a.get("type") == "space"]


def _fixed_size(axis: Mapping[str, Any]) -> int | None:
    size = axis.get("size")
    return int(size) if isinstance(size, int) else None


def tile_shape(rdf: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The fixed input tile (spatial axes, in rdf order) of a single-input bundle, or None when sizes vary."""
    sizes = [_fixed_size(a) for a in _space_axes(rdf["inputs"][0])]
    return None if not sizes or None in sizes else tuple(int(s) for s in sizes)  # type: ignore[arg-type]


def min_image_size(rdf: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The smallest image (per spatial axis) deepImageJ runs a fixed-tile bundle on: ceil(tile / 3).

    Below it JDLL refuses ("cannot be bigger than 3 times the image size") and deepImageJ writes no output.
    """
    tile = tile_shape(rdf)
    return None if tile is None else tuple(math.ceil(t / JDLL_MAX_TILE_TO_IMAGE) for t in tile)


def tile_grid(rdf: Mapping[str, Any], image: Sequence[int]) -> tuple[int, ...]:
    """How many tiles JDLL cuts ``image`` (spatial sizes, rdf order) into per axis: ceil(image / (tile - 2 halo))."""
    tile = tile_shape(rdf)
    if tile is None:
        return tuple(1 for _ in image)
    halo = _halo(rdf)
    return tuple(math.ceil(n / (t - 2 * h)) for n, t, h in zip(image, tile, halo))


def _halo(rdf: Mapping[str, Any]) -> list[int]:
    ids = [a.get("id") for a in _space_axes(rdf["inputs"][0])]
    halo = dict.fromkeys(ids, 0)
    for out in rdf.get("outputs", []):
        for a in _space_axes(out):
            if a.get("id") in halo:
                halo[a["id"]] = max(halo[a["id"]], int(a.get("halo", 0)))
    return [halo[i] for i in ids]


#: Peak memory of the fmc-ij U-Net per tile voxel and base channel (float32, PyTorch on CPU, depth 2): 300-340
#: bytes per voxel measured for base 16 on tiles of 0.8-4.8 M voxels (issue 24).
BYTES_PER_VOXEL_PER_BASE = 22


def tile_budget(memory_bytes: int, base_channels: int) -> int:
    """How many voxels a tile may have for the network to fit ``memory_bytes`` (peak activations)."""
    return int(memory_bytes // (BYTES_PER_VOXEL_PER_BASE * base_channels))


def choose_tile(halo: Sequence[int], step: Sequence[int], mins: Sequence[int], max_voxels: int) -> tuple[int, ...]:
    """The fixed input tile to write for deepImageJ: as large as ``max_voxels`` allows, shaped like the halo.

    A tile's useful share, prod((t - 2h) / t), is largest for a given volume when every axis is proportional to its
    halo, t = k h with k = (max_voxels / prod(h)) ** (1 / n). Each axis is rounded down to a multiple of its step
    (and kept at least ``min`` and 2 h + step); while the tile is too large, the axis with the largest t / h loses
    a step. The smallest image deepImageJ then runs the bundle on is ceil(t / 3) per axis.
    """
    n = len(halo)
    k = (max_voxels / math.prod(max(h, 1) for h in halo)) ** (1 / n)
    lowest = [max(m, 2 * h + s) for h, s, m in zip(halo, step, mins)]
    lowest = [math.ceil(lo / s) * s for lo, s in zip(lowest, step)]
    tile = [max(lo, int(k * max(h, 1)) // s * s) for h, s, lo in zip(halo, step, lowest)]
    while math.prod(tile) > max_voxels:
        shrinkable = [i for i in range(n) if tile[i] - step[i] >= lowest[i]]
        if not shrinkable:
            raise FmcInputError(f"no tile of at most {max_voxels} voxels fits the halo {list(halo)}; raise the budget")
        i = max(shrinkable, key=lambda j: tile[j] / max(halo[j], 1))
        tile[i] -= step[i]
    return tuple(tile)


def bundle_problems(rdf: Mapping[str, Any]) -> list[str]:
    """What stops deepImageJ 3.1 / JDLL 0.6.1 running this bundle (an empty list: nothing found).

    Checks, from JDLL's sources: one input; ``format_version`` 0.4/0.5; ``documentation`` and ``covers`` as plain
    strings; a ``config.bioimageio.nickname`` (or ``id``) without two slashes; every ``clip`` with both ``min``
    and ``max``; only processing JDLL implements; ``channel_names``; fixed spatial input sizes (parametrised
    ones hang above 50,331,648 voxels); tiles larger than twice the halo; ``config.deepimagej.allow_tiling``
    not false; TorchScript weights.
    """
    problems: list[str] = []
    if not str(rdf.get("format_version", "")).startswith(("0.4", "0.5")):
        problems.append(f"format_version {rdf.get('format_version')!r}: JDLL reads 0.4.x and 0.5.x only")
    if not isinstance(rdf.get("documentation", ""), str):
        problems.append("documentation must be a plain string (JDLL casts it to String); write format 0.5.10")
    if any(not isinstance(c, str) for c in rdf.get("covers", [])):
        problems.append("covers must be plain strings (JDLL reads List<String>); write format 0.5.10")
    nickname = ((rdf.get("config") or {}).get("bioimageio") or {}).get("nickname") or rdf.get("id")
    if not nickname:
        problems.append("no config.bioimageio.nickname: JDLL names the model friend-N, a name that changes")
    elif str(nickname).count("/") >= 2:
        problems.append(f"nickname {nickname!r}: JDLL shortens ids with two slashes; use a plain name")
    if ((rdf.get("config") or {}).get("deepimagej") or {}).get("allow_tiling", True) is False:
        problems.append("config.deepimagej.allow_tiling is false: JDLL cannot run size-varying axes untiled")
    if len(rdf.get("inputs", [])) != 1:
        problems.append("deepImageJ runs models with exactly one input")
        return problems
    for kind in ("inputs", "outputs"):
        for t in rdf.get(kind, []):
            problems += _tensor_problems(t, kind)
    tile = tile_shape(rdf)
    if tile is None:
        problems.append(
            "parametrised input sizes: JDLL makes one tile of the whole image and loops forever above "
            f"{JDLL_MAX_TILE_VOXELS} voxels; give every spatial input axis a fixed size (the tile)"
        )
    else:
        for t, h, a in zip(tile, _halo(rdf), _space_axes(rdf["inputs"][0])):
            if t - 2 * h <= 0:
                problems.append(f"axis {a.get('id')}: tile {t} is not larger than twice the halo {h}")
    if "torchscript" not in (rdf.get("weights") or {}):
        problems.append("no torchscript weights: deepImageJ runs PyTorch models only as TorchScript")
    return problems


_JDLL_OPS = {"binarize", "clip", "scale_linear", "scale_range", "sigmoid", "zero_mean_unit_variance",
             "fixed_zero_mean_unit_variance", "ensure_dtype"}  # fmt: skip


def _tensor_problems(tensor: Mapping[str, Any], kind: str) -> list[str]:
    problems = []
    tid = tensor.get("id", tensor.get("name", "?"))
    for a in tensor.get("axes", []):
        if isinstance(a, Mapping) and a.get("type") == "channel" and not a.get("channel_names"):
            problems.append(f"{kind} {tid}: the channel axis needs channel_names (JDLL reads their count)")
    for step in list(tensor.get("preprocessing", [])) + list(tensor.get("postprocessing", [])):
        op, kw = step.get("id", step.get("name")), step.get("kwargs") or {}
        if op not in _JDLL_OPS:
            problems.append(f"{kind} {tid}: JDLL has no {op!r} processing")
        if op == "clip" and ("min" not in kw or "max" not in kw):
            problems.append(f"{kind} {tid}: clip needs both min and max in deepImageJ (give a large finite max)")
        if op == "scale_range" and kw.get("reference_tensor"):
            problems.append(f"{kind} {tid}: JDLL ignores scale_range's reference_tensor")
    return problems
