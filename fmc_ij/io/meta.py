"""Image metadata that travels with every array: axes, voxel size, unit, channel, study.

The Fuse My Cells files carry their metadata in two places (see ``shared/specs/fuse-my-cells.md``):
a JSON "shaped" description written by the organisers' template (``PhysicalSizeX``, ``spacing``,
``unit``, ``axes``, ``channel``, ``study``, ...) and an ImageJ description, where ImageJ lower-cases
every extra key (``physicalsizex``). :func:`meta_from_dict` accepts all of these spellings and
:meth:`ImageMeta.to_fmc_dict` writes the template's own.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from fmc_ij.errors import FmcInputError

#: Axis letters: T time, C channel, Z/Y/X space, S samples (RGB).
VALID_AXES = "TCZYXS"
SPATIAL_AXES = "ZYX"
#: ImageJ hyperstacks store axes in this order.
IMAGEJ_ORDER = "TZCYXS"
#: Default axes by dimensionality, CSBDeep-style (the challenge volumes are ZYX).
DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "CZYX", 5: "TCZYX"}
#: Keys that describe the TIFF layout itself and are not carried over as extra metadata.
_LAYOUT_KEYS = {
    "imagej",
    "images",
    "channels",
    "slices",
    "frames",
    "hyperstack",
    "mode",
    "loop",
    "min",
    "max",
    "shape",
    "ranges",
    "luts",
    "labels",
    "finterval",
    "tunit",
    "yorigin",
    "xorigin",
    "zorigin",
}
_UNIT_ALIASES = {"micron": "µm", "microns": "µm", "um": "µm", "\\u00b5m": "µm", "μm": "µm"}


def _norm_key(key: str) -> str:
    """``PhysicalSizeX``, ``physicalsizex`` and ``physical_size_x`` all become ``physicalsizex``."""
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


def normalize_unit(unit: str | None) -> str:
    """Canonical spelling of a length unit (``micron``, ``um``, ``\\u00B5m`` -> ``µm``)."""
    if unit is None or str(unit).strip() == "":
        return "pixel"
    u = str(unit).strip()
    return _UNIT_ALIASES.get(u.lower(), u)


def check_axes(axes: str, ndim: int | None = None) -> str:
    """Validate an axes string (upper-cased) against the allowed letters and ``ndim``."""
    ax = str(axes).upper()
    bad = sorted(set(ax) - set(VALID_AXES))
    if bad or len(set(ax)) != len(ax):
        raise FmcInputError(
            f"unknown axes {axes!r}: use each of the letters {VALID_AXES} at most once (e.g. 'ZYX', 'CZYX')"
        )
    if not set(ax) & set("YX") == {"Y", "X"}:
        raise FmcInputError(f"axes {axes!r} must contain both Y and X")
    if ndim is not None and len(ax) != ndim:
        raise FmcInputError(f"axes {axes!r} has {len(ax)} letters but the array has {ndim} dimensions")
    return ax


@dataclasses.dataclass
class ImageMeta:
    """Metadata of one image.

    Parameters
    ----------
    axes : str
        One letter per array dimension, e.g. ``"ZYX"`` or ``"CZYX"``.
    spacing : dict of str to float
        Voxel size per spatial axis present in ``axes`` (``{"Z": 1.0, "Y": 0.195, "X": 0.195}``).
    unit : str
        Length unit of ``spacing`` (``"µm"``; ``"pixel"`` when the file has no calibration).
    channel : str, optional
        The Fuse My Cells channel, ``"nucleus"`` or ``"membrane"``, or any stain name.
    study : int or str, optional
        The Fuse My Cells study number.
    extra : dict
        Every other key found in the file, carried through unchanged.
    """

    axes: str
    spacing: dict[str, float] = dataclasses.field(default_factory=dict)
    unit: str = "µm"
    channel: str | None = None
    study: int | str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.axes = check_axes(self.axes)
        self.unit = normalize_unit(self.unit)
        self.spacing = {a: float(self.spacing.get(a, 1.0)) for a in self.axes if a in SPATIAL_AXES}
        for a, v in self.spacing.items():
            if not np.isfinite(v) or v <= 0:
                raise FmcInputError(f"voxel size along {a} must be a positive number, got {v}")

    @property
    def spatial_axes(self) -> str:
        return "".join(a for a in self.axes if a in SPATIAL_AXES)

    def voxel_size(self, axes: str | None = None) -> tuple[float, ...]:
        """Voxel size as a tuple in the order of ``axes`` (default: the spatial axes of the image)."""
        return tuple(self.spacing.get(a, 1.0) for a in (axes or self.spatial_axes))

    def replace(self, **changes: Any) -> ImageMeta:
        """A copy with some fields changed (``extra`` and ``spacing`` are copied, not shared)."""
        fields = {
            "axes": self.axes,
            "spacing": dict(self.spacing),
            "unit": self.unit,
            "channel": self.channel,
            "study": self.study,
            "extra": dict(self.extra),
        }
        fields.update(changes)
        return ImageMeta(**fields)

    def to_fmc_dict(self, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        """The Fuse My Cells template's metadata dictionary (``PhysicalSizeX/Y/Z``, ``spacing``, ...)."""
        out: dict[str, Any] = dict(self.extra)
        for a in self.spatial_axes:
            out[f"PhysicalSize{a}"] = self.spacing[a]
        out["spacing"] = self.spacing.get("Z", 1.0)
        out["unit"] = self.unit
        out["axes"] = self.axes
        if self.channel is not None:
            out["channel"] = self.channel
        if self.study is not None:
            out["study"] = self.study
        if shape is not None:
            out["shape"] = list(shape)
        return out


def _as_float(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise FmcInputError(f"metadata {what}={value!r} is not a number: fix or remove it") from None


def _as_study(value: Any) -> int | str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    s = str(value).strip()
    return int(s) if re.fullmatch(r"[+-]?\d+", s) else s


def meta_from_dict(
    raw: Mapping[str, Any],
    ndim: int,
    *,
    axes: str | None = None,
    xy_resolution: tuple[float, float] | None = None,
) -> ImageMeta:
    """Build :class:`ImageMeta` from a metadata dictionary in any of the known spellings.

    Parameters
    ----------
    raw : mapping
        Shaped (JSON), ImageJ or OME-derived metadata.
    ndim : int
        Number of array dimensions.
    axes : str, optional
        Axes from the file layout; ``raw["axes"]`` wins when present and consistent.
    xy_resolution : (float, float), optional
        Pixel size (X, Y) from the TIFF resolution tags, used when no ``PhysicalSize`` key exists.
    """
    by_norm = {_norm_key(k): (k, v) for k, v in raw.items()}

    def take(*names: str) -> Any:
        for n in names:
            if n in by_norm:
                return by_norm.pop(n)[1]
        return None

    raw_axes = take("axes")
    if raw_axes is not None and len(str(raw_axes)) == ndim and set(str(raw_axes).upper()) <= set(VALID_AXES):
        axes = str(raw_axes)
    elif raw_axes is not None and axes is None:
        raise FmcInputError(f"unknown axes {raw_axes!r} in metadata for a {ndim}-D image: fix the 'axes' key")
    if axes is None or not set(axes.upper()) <= set(VALID_AXES):
        if ndim not in DEFAULT_AXES:
            raise FmcInputError(f"cannot guess the axes of a {ndim}-D image: pass axes explicitly")
        axes = DEFAULT_AXES[ndim]
    axes = check_axes(axes, ndim)

    spacing: dict[str, float] = {}
    calibrated = False
    for a in SPATIAL_AXES:
        v = take(f"physicalsize{a.lower()}")
        if v is not None:
            spacing[a] = _as_float(v, f"PhysicalSize{a}")
            calibrated = True
    sp = take("spacing")
    if sp is not None:
        if isinstance(sp, (list, tuple)):
            # A per-axis list: interpret it in the order of the spatial axes.
            sp_axes = "".join(a for a in axes if a in SPATIAL_AXES)
            if len(sp) == len(sp_axes):
                for a, v in zip(sp_axes, sp):
                    spacing.setdefault(a, _as_float(v, "spacing"))
                calibrated = True
        elif "Z" in axes:
            spacing.setdefault("Z", _as_float(sp, "spacing"))
            calibrated = True
    if xy_resolution is not None:
        for a, v in zip("XY", xy_resolution):
            if a not in spacing and v and np.isfinite(v) and v > 0:
                spacing[a] = float(v)
                calibrated = True
    unit = take("unit", "physicalsizexunit")
    if unit is None:
        unit = "µm" if calibrated else "pixel"
    channel = take("channel")
    study = _as_study(take("study"))
    extra = {k: v for n, (k, v) in by_norm.items() if n not in _LAYOUT_KEYS}
    return ImageMeta(
        axes=axes,
        spacing=spacing,
        unit=str(unit),
        channel=None if channel is None else str(channel),
        study=study,
        extra=extra,
    )


@dataclasses.dataclass
class Image:
    """An array with its :class:`ImageMeta`. ``data`` may be a lazy array (memmap, zarr)."""

    data: Any
    meta: ImageMeta

    def __post_init__(self) -> None:
        check_axes(self.meta.axes, len(self.data.shape))

    @property
    def axes(self) -> str:
        return self.meta.axes

    @property
    def spacing(self) -> dict[str, float]:
        return self.meta.spacing

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    def numpy(self) -> np.ndarray:
        """The data as an in-memory numpy array (reads a lazy array completely)."""
        return np.asarray(self.data[...]) if not isinstance(self.data, np.ndarray) else self.data

    def transpose(self, axes: str) -> Image:
        """The same image with its dimensions reordered to ``axes`` (a permutation of ``self.axes``)."""
        axes = check_axes(axes)
        if sorted(axes) != sorted(self.axes):
            raise FmcInputError(f"cannot reorder axes {self.axes!r} to {axes!r}: they must hold the same letters")
        order = [self.axes.index(a) for a in axes]
        return Image(np.transpose(self.numpy(), order), self.meta.replace(axes=axes))
