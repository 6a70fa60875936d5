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
_UNIT_ALIASES = {
    "micron": "µm", "microns": "µm", "um": "µm", "\\u00b5m": "µm", "μm": "µm", "micrometer": "µm",
    "micrometre": "µm", "micrometers": "µm", "micrometres": "µm", "nanometer": "nm", "nanometre": "nm",
    "nanometers": "nm", "nanometres": "nm", "millimeter": "mm", "millimetre": "mm", "millimeters": "mm",
    "millimetres": "mm", "meter": "m", "metre": "m", "meters": "m", "metres": "m", "centimeter": "cm",
    "centimetre": "cm", "pixels": "pixel", "px": "pixel", "none": "pixel", "a.u.": "pixel",
}  # fmt: skip
#: Length units and their size in micrometres (what voxel sizes are converted through).
UNIT_TO_UM = {"µm": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4}
#: A leading axis of at most this many planes, in a file that does not name its axes, is read as channels.
MAX_INFERRED_CHANNELS = 4


def _norm_key(key: str) -> str:
    """``PhysicalSizeX``, ``physicalsizex`` and ``physical_size_x`` all become ``physicalsizex``."""
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


def normalize_unit(unit: str | None) -> str:
    """Canonical spelling of a length unit (``micron``, ``um``, ``\\u00B5m`` -> ``µm``)."""
    if unit is None or str(unit).strip() == "":
        return "pixel"
    u = str(unit).strip()
    return _UNIT_ALIASES.get(u.lower(), _UNIT_ALIASES.get(u, u))


def unit_to_um(unit: str | None) -> float | None:
    """Size of one ``unit`` in micrometres (``nm`` -> 0.001), or None for ``pixel`` and unknown units."""
    return UNIT_TO_UM.get(normalize_unit(unit))


def infer_axes(shape: tuple[int, ...], *, has_z: bool = False) -> tuple[str, str]:
    """Axes of an array whose file does not name them, and a note saying what was guessed (empty if nothing).

    2D: YX. 3D: CYX when the first axis has at most :data:`MAX_INFERRED_CHANNELS` planes (a 2-3 plane "volume"
    is rarer than a 2-3 channel image) unless ``has_z`` (the file calibrates a Z axis), ZYX otherwise. 4D: the
    smaller of the two leading axes is the channel axis when it has at most 8 entries (ZCYX as ImageJ stores
    hyperstacks, CZYX as numpy users write them). 5D: TCZYX.
    """
    nd = len(shape)
    if nd == 2:
        return "YX", ""
    if nd == 3:
        if shape[0] <= MAX_INFERRED_CHANNELS and not has_z:
            return "CYX", f"axes not stored: {shape[0]} leading planes read as channels (CYX); give axes ZYX if not"
        return "ZYX", ""
    if nd == 4:
        a, b = shape[0], shape[1]
        if b < a and b <= 8:
            return "ZCYX", f"axes not stored: the axis of {b} read as channels (ZCYX); give axes if not"
        if a <= 8:
            return "CZYX", f"axes not stored: the axis of {a} read as channels (CZYX); give axes if not"
        return "TZYX", "axes not stored: no axis short enough for channels, read as time points (TZYX)"
    if nd == 5:
        return "TCZYX", "axes not stored: read as TCZYX"
    raise FmcInputError(f"cannot guess the axes of a {nd}-D image: pass axes explicitly")


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
    channel_names : tuple of str
        Names of the channels along ``C`` (from the file's metadata), in order; empty if unnamed.
    note : str
        What the reader had to guess (e.g. the channel axis of a file without axes); not written to files.
    """

    axes: str
    spacing: dict[str, float] = dataclasses.field(default_factory=dict)
    unit: str = "µm"
    channel: str | None = None
    study: int | str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    channel_names: tuple[str, ...] = ()
    note: str = ""

    def __post_init__(self) -> None:
        self.axes = check_axes(self.axes)
        self.unit = normalize_unit(self.unit)
        self.channel_names = tuple(str(c) for c in self.channel_names or ())
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
            "channel_names": self.channel_names,
            "note": self.note,
        }
        fields.update(changes)
        return ImageMeta(**fields)

    def in_unit(self, unit: str) -> ImageMeta:
        """The same metadata with the voxel size converted to ``unit`` (e.g. nm -> µm); uncalibrated stays so."""
        src, dst = unit_to_um(self.unit), unit_to_um(unit)
        if src is None or dst is None:
            if self.unit == "pixel" or normalize_unit(unit) == self.unit:
                return self.replace()
            raise FmcInputError(f"cannot convert voxel sizes from {self.unit!r} to {unit!r}: unknown length unit")
        f = src / dst
        return self.replace(spacing={a: v * f for a, v in self.spacing.items()}, unit=unit)

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
        if self.channel_names:
            out["channel_names"] = list(self.channel_names)
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
    shape: tuple[int, ...] | None = None,
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
    shape : tuple of int, optional
        The array's shape: when neither the file nor ``axes`` names the axes they are inferred from it
        (:func:`infer_axes`, the guess kept in ``note``); without it the CSBDeep defaults apply.
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
    note = ""
    if axes is None or not set(axes.upper()) <= set(VALID_AXES):
        if shape is not None and len(shape) == ndim:
            axes, note = infer_axes(tuple(shape), has_z="physicalsizez" in by_norm or "spacing" in by_norm)
        elif ndim not in DEFAULT_AXES:
            raise FmcInputError(f"cannot guess the axes of a {ndim}-D image: pass axes explicitly")
        else:
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
    names = take("channelnames")
    if isinstance(names, str):
        names = [c.strip() for c in names.split(",")]
    n_c = shape[axes.index("C")] if shape is not None and "C" in axes and len(shape) == ndim else None
    names = tuple(str(c) for c in names) if isinstance(names, (list, tuple)) and len(names) == n_c else ()
    extra = {k: v for n, (k, v) in by_norm.items() if n not in _LAYOUT_KEYS}
    return ImageMeta(
        axes=axes,
        spacing=spacing,
        unit=str(unit),
        channel=None if channel is None else str(channel),
        study=study,
        extra=extra,
        channel_names=names,
        note=note,
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

    def channels(self) -> list[Image]:
        """One single-channel image per entry of the ``C`` axis (lazy arrays stay lazy: each is a view that reads
        its planes on demand), ``meta.channel`` set from ``meta.channel_names`` (else ``c0``, ``c1``, ...)."""
        if "C" not in self.axes:
            return [self]
        c = self.axes.index("C")
        rest = self.axes.replace("C", "")
        names = self.meta.channel_names or tuple(f"c{k}" for k in range(self.shape[c]))
        out = []
        for k, name in enumerate(names):
            # numpy (and memmap) arrays: a view, no copy; other lazy arrays: a view object that slices on demand.
            data = (
                self.data[(slice(None),) * c + (k,)]
                if isinstance(self.data, np.ndarray)
                else ChannelView(self.data, c, k)
            )
            out.append(Image(data, self.meta.replace(axes=rest, channel=name, channel_names=())))
        return out


class ChannelView:
    """Channel ``k`` along axis ``c`` of a lazy array (memmap, zarr, HDF5): slicing reads only what it touches."""

    def __init__(self, src: Any, c: int, k: int) -> None:
        self.src, self.c, self.k = src, c, k
        self.shape = tuple(n for i, n in enumerate(src.shape) if i != c)
        self.dtype = np.dtype(src.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, idx: Any) -> np.ndarray:
        if idx is Ellipsis:
            idx = ()
        idx = idx if isinstance(idx, tuple) else (idx,)
        if any(i is Ellipsis for i in idx):
            e = idx.index(Ellipsis)
            idx = idx[:e] + (slice(None),) * (self.ndim - len(idx) + 1) + idx[e + 1 :]
        idx = idx + (slice(None),) * (self.ndim - len(idx))
        return np.asarray(self.src[idx[: self.c] + (self.k,) + idx[self.c :]])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        a = self[...]
        return a.astype(dtype) if dtype is not None else a

    def __len__(self) -> int:
        return self.shape[0]
