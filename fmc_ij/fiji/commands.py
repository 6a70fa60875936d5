"""Exact ImageJ command strings for NanoJ-Core and NanoJ-SQUIRREL, built by ImageJ's own rules.

ImageJ 1 turns each dialog label into an option key with ``ij.Macro.trimKey`` (the label up to the first space or
colon, lower-cased); a checkbox is true when its key is present and **false when absent**; a numeric field whose
key is absent takes the plugin's saved preference, so every key is always passed. Values with spaces go in
brackets; ImageJ 1.53's ``Macro.getValue`` cannot read a bracketed value holding ``[`` or ``]``, so a path with
either is passed through a bracket-free symbolic link (:func:`ij_path`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fmc_ij.errors import FmcInputError

DRIFT_REFERENCES = {
    "first": "first frame (default, better for fixed)",
    "previous": "previous frame (better for live)",
}
RSF_ESTIMATE = "-- RSF unknown, estimate via optimisation --"


def trim_key(label: str) -> str:
    """The option key ImageJ derives from a dialog label (``ij.Macro.trimKey``): "Max. Mag." -> "max."."""
    key = label.split(" ", 1)[0].split(":", 1)[0]
    return key.lower()


_LINKS: list[str] = []
_BRACKETS = set("[]")


def _cleanup_links() -> None:
    for d in _LINKS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup_links)


def ij_path(path: str | os.PathLike) -> str:
    """An absolute path ImageJ can read back from an option string.

    ImageJ's option parser cannot read a bracketed value holding ``[`` or ``]``: a folder with either is reached
    through a symbolic link in a temporary folder (removed at exit), so files written there land in the real
    folder; spaces and unicode pass as they are.
    """
    p = Path(path).resolve()
    if _BRACKETS & set(p.name):
        if not p.exists():
            raise FmcInputError(f"ImageJ cannot be given a new file whose name holds '[' or ']': {p.name}; rename it")
        d = tempfile.mkdtemp(prefix="fmc-ij-link-")
        _LINKS.append(d)
        link = Path(d) / p.name.replace("]", "_").replace("[", "_")
        link.symlink_to(p, target_is_directory=p.is_dir())
        p = link
    if _BRACKETS & set(str(p.parent)):
        d = tempfile.mkdtemp(prefix="fmc-ij-link-")
        _LINKS.append(d)
        (Path(d) / "dir").symlink_to(p.parent, target_is_directory=True)
        p = Path(d) / "dir" / p.name
    return str(p)


def option_value(v: object) -> str:
    """One option value as ImageJ reads it back: bracketed when it holds a space, a slash or (text) an ``=``."""
    text = f"{v:g}" if isinstance(v, float) else str(v)
    if _BRACKETS & set(text):
        raise FmcInputError(f"ImageJ cannot read the option value {text!r} ('[' or ']'); use ij_path() for paths")
    bracket = not text or any(c in text for c in " /\\") or (isinstance(v, str) and "=" in text)
    return f"[{text}]" if bracket else text


def options(fields: Mapping[str, object]) -> str:
    """An option string from ``{label or key: value}``: booleans as present / absent keys, the rest ``key=value``."""
    parts = []
    for label, v in fields.items():
        key = trim_key(label)
        if isinstance(v, bool):
            if v:
                parts.append(key)
        elif v is not None:
            parts.append(f"{key}={option_value(v)}")
    return " ".join(parts)


def _macro_literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Command:
    """A menu command and its options: ``IJ.run(imp, name, options)`` or :meth:`macro` for a macro file."""

    name: str
    options: str

    def macro(self) -> str:
        """The ImageJ macro statement ``run("name", "options");``."""
        return f"run({_macro_literal(self.name)}, {_macro_literal(self.options)});"


# -- NanoJ-Core ----------------------------------------------------------------------------------------------
def estimate_drift(
    save_to: str | os.PathLike,
    *,
    time_averaging: int = 1,
    max_drift: int = 0,
    reference: str = "first",
    show_cross_correlation: bool = False,
    show_drift_plot: bool = False,
    show_drift_table: bool = True,
    apply: bool = True,
    batch: bool = False,
) -> Command:
    """NanoJ-Core *Estimate Drift* on the current stack; NanoJ writes ``<save_to minus .njt>DriftTable.njt``."""
    if reference not in DRIFT_REFERENCES:
        raise FmcInputError(f"reference {reference!r}: use first or previous")
    return Command("Estimate Drift", options({
        "time": int(time_averaging), "max": int(max_drift), "reference": DRIFT_REFERENCES[reference],
        "show_cross-correlation": show_cross_correlation, "show_drift_plot": show_drift_plot,
        "show_drift_table": show_drift_table, "apply": apply, "do_batch-analysis": batch,
        "choose": ij_path(save_to),
    }))  # fmt: skip


def correct_drift(drift_table: str | os.PathLike) -> Command:
    """NanoJ-Core *Correct Drift* with a saved drift table (an OpenDialog: key ``choose``, not ``load``)."""
    return Command("Correct Drift", options({"choose": ij_path(drift_table)}))


def register_channels_estimate(
    *,
    reference: int = 1,
    channels: int = 2,
    max_shift: int = 0,
    blocks: int = 5,
    min_similarity: float = 0.5,
    gaussian: float = 0,
    apply: bool = True,
) -> Command:
    """NanoJ-Core *Register Channels - Estimate* (channels interleaved in one stack, channel fastest)."""
    return Command("Register Channels - Estimate", options({
        "reference": int(reference), "number": int(channels), "max": int(max_shift), "blocks": int(blocks),
        "min": float(min_similarity), "gaussian": gaussian, "apply": apply,
    }))  # fmt: skip


def register_channels_apply(mask: str | os.PathLike) -> Command:
    """NanoJ-Core *Register Channels - Apply* with a saved translation mask (OpenDialog key ``open``)."""
    return Command("Register Channels - Apply", options({"open": ij_path(mask)}))


# -- NanoJ-SQUIRREL -------------------------------------------------------------------------------------------
def squirrel_error_map(reference_title: str, image_title: str, *, max_magnification: int = 5) -> Command:
    """NanoJ-SQUIRREL *Calculate Error-Map, RSE and RSP* on two open images (by window title), RSF optimised."""
    return Command("Calculate Error-Map, RSE and RSP", options({
        "reference": reference_title, "super-resolution": image_title, "rsf": RSF_ESTIMATE,
        "max.": int(max_magnification),
    }))  # fmt: skip
