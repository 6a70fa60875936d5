"""Training pairs on disk: the Fuse My Cells naming, generic two-glob pairing and dataset manifests.

A pair is a cheap acquisition (``low``: one light-sheet view, widefield, confocal, TIRF) and an
expensive one of the same sample (``high``: the fused volume, high-NA, STED, SIM).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

from fmc_ij.errors import FmcInputError
from fmc_ij.io.atomic import write_text_atomic

#: ``image_{N}_{nucleus|membrane}_{angle|fused}.tif``, as in the challenge's zip files.
FMC_PATTERN = re.compile(r"^image_(?P<index>\d+)_(?P<channel>nucleus|membrane)_(?P<kind>angle|fused)\.tiff?$", re.I)
#: Written by :func:`write_manifest` at a dataset's root; tells how its files pair up.
MANIFEST = "fmc-dataset.json"
_TIFF_SUFFIXES = (".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class Pair:
    """One training (or test) pair.

    Attributes
    ----------
    name : str
        A stable identifier, e.g. ``"image_3_nucleus"``.
    low : Path
        The cheap acquisition (network input).
    high : Path or None
        The expensive acquisition (target); ``None`` at test time.
    index : int or None
        The challenge index N.
    channel : str or None
        ``"nucleus"``, ``"membrane"`` or a modality name.
    """

    name: str
    low: Path
    high: Path | None
    index: int | None = None
    channel: str | None = None


def discover_fmc(root: str | os.PathLike, *, require_target: bool = True) -> list[Pair]:
    """Find the challenge's ``image_{N}_{channel}_{angle|fused}.tif`` pairs below ``root``.

    Parameters
    ----------
    root : path-like
        A folder searched recursively.
    require_target : bool
        If true, an ``angle`` file without its ``fused`` partner (or the reverse) is an error.
        If false, inputs without targets are returned with ``high=None`` (test time).
    """
    root = Path(root)
    found: dict[tuple[int, str], dict[str, Path]] = {}
    for p in sorted(root.rglob("image_*")):
        m = FMC_PATTERN.match(p.name)
        if m and p.is_file():
            key = (int(m["index"]), m["channel"].lower())
            slot = found.setdefault(key, {})
            kind = m["kind"].lower()
            if kind in slot:
                raise FmcInputError(f"two files for {p.name} ({slot[kind]} and {p}): keep one")
            slot[kind] = p
    pairs = []
    for (index, channel), slot in sorted(found.items()):
        name = f"image_{index}_{channel}"
        if "angle" not in slot:
            raise FmcInputError(
                f"missing pair partner: {slot['fused'].name} has no {name}_angle.tif beside it; "
                "add the input view or remove the file"
            )
        if "fused" not in slot and require_target:
            raise FmcInputError(
                f"missing pair partner: {slot['angle'].name} has no {name}_fused.tif beside it; "
                "add the target, or allow inputs without targets (--inputs-only)"
            )
        pairs.append(Pair(name, slot["angle"], slot.get("fused"), index, channel))
    return pairs


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob whose ``*`` parts are captured: they form the pairing key."""
    parts = re.split(r"(\*\*/|\*|\?)", pattern)
    rx = ""
    for part in parts:
        if part == "**/":
            rx += "(?:.*/)?"
        elif part == "*":
            rx += "([^/]*)"
        elif part == "?":
            rx += "([^/])"
        else:
            rx += re.escape(part)
    return re.compile(rx + r"\Z")


def pair_by_glob(
    root: str | os.PathLike, low: str, high: str, *, require_target: bool = True, channel: str | None = None
) -> list[Pair]:
    """Pair files matched by two globs relative to ``root``; the wildcard parts must agree.

    Examples
    --------
    ``pair_by_glob(d, "widefield/*.tif", "sim/*.tif")`` pairs ``widefield/cell1.tif`` with
    ``sim/cell1.tif``; ``pair_by_glob(d, "*_conf.tif", "*_sted.tif")`` pairs ``a_conf.tif`` with
    ``a_sted.tif``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FmcInputError(f"{root}: no such folder")

    def index(pattern: str) -> dict[tuple[str, ...], Path]:
        rx = _glob_regex(pattern)
        out: dict[tuple[str, ...], Path] = {}
        for p in sorted(root.glob(pattern)):
            if p.is_file():
                m = rx.match(p.relative_to(root).as_posix())
                if m:
                    out[m.groups()] = p
        return out

    lows, highs = index(low), index(high)
    if not lows:
        raise FmcInputError(f"no input files match {low!r} in {root}; check the glob (it is relative to the folder)")
    missing = [str(p.relative_to(root)) for k, p in lows.items() if k not in highs]
    if missing and require_target:
        raise FmcInputError(
            f"missing pair partner: {len(missing)} input(s) have no match for {high!r} (first: {missing[0]}); "
            "fix the globs or add the targets"
        )
    orphans = [str(p.relative_to(root)) for k, p in highs.items() if k not in lows]
    if orphans:
        raise FmcInputError(f"missing pair partner: target {orphans[0]} has no input matching {low!r}")
    pairs = []
    for key, p in lows.items():
        name = "_".join(k for k in key if k) or p.stem
        pairs.append(Pair(name, p, highs.get(key), None, channel))
    return pairs


def write_manifest(root: str | os.PathLike, *, kind: str, low: str, high: str, **info: Any) -> Path:
    """Record how a dataset's files pair up (``low``/``high`` globs) and what it holds."""
    doc = {"format": "fmc-ij dataset", "version": 1, "kind": kind, "low": low, "high": high, **info}
    return write_text_atomic(Path(root) / MANIFEST, json.dumps(doc, indent=2) + "\n")


def read_manifest(root: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise FmcInputError(f"{path}: invalid JSON ({e}); fix or delete it") from None
    if not isinstance(doc, dict) or "low" not in doc or "high" not in doc:
        raise FmcInputError(f"{path}: needs 'low' and 'high' globs")
    return doc


def discover(
    root: str | os.PathLike, *, low: str | None = None, high: str | None = None, require_target: bool = True
) -> list[Pair]:
    """Find the pairs of a dataset folder.

    Order of precedence: explicit ``low``/``high`` globs, the folder's ``fmc-dataset.json``
    manifest, then the Fuse My Cells naming.
    """
    root = Path(root)
    if not root.exists():
        raise FmcInputError(f"{root}: no such folder")
    if not root.is_dir():
        raise FmcInputError(f"{root}: is a file; pass the dataset folder")
    if (low is None) != (high is None):
        raise FmcInputError("give both --low and --high globs, or neither")
    if low is not None and high is not None:
        return pair_by_glob(root, low, high, require_target=require_target)
    manifest = read_manifest(root)
    if manifest is not None:
        return pair_by_glob(
            root, manifest["low"], manifest["high"], require_target=require_target, channel=manifest.get("channel")
        )
    pairs = discover_fmc(root, require_target=require_target)
    if not pairs:
        tifs = [p for p in root.rglob("*") if p.suffix.lower() in _TIFF_SUFFIXES]
        hint = f" ({len(tifs)} TIFF files found, none named image_N_<channel>_<angle|fused>.tif)" if tifs else ""
        raise FmcInputError(
            f"no pairs found in {root}{hint}: use the challenge naming, an {MANIFEST} manifest, or --low/--high globs"
        )
    return pairs
