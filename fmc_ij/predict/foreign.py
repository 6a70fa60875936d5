"""bioimage.io models from other tools (CSBDeep, CAREamics, the zoo...) run faithfully and offline:
``fmc-ij predict --model THEIR_MODEL.zip`` (or the bundle's folder, or its rdf yaml) on YX / ZYX images.

What "faithfully" means here, following the spec and bioimage.io's reference implementation:

1. The description is read without network look-ups (no hash checks of remote files); only weights stored in
   the bundle run: TorchScript first, then ONNX. A state-dict entry whose file is remote, or one that would run
   the bundle's own Python code, is never used. A bundle with nothing runnable gets one clear line.
2. Pre-processing runs on the whole sample (its statistics, e.g. percentiles or mean/std, span the whole image),
   then the network, then post-processing on the whole result, as the spec says.
3. The network sees the whole image when its size is valid for the model (exactly how the bundle's test output
   was made); a parameterised model gets the image padded (symmetric, centred) to its next valid size. A
   fixed-size model, or an image too large for one pass, is run in tiles that lie inside the image, evenly
   spread, with each voxel taken from the tile where it has the most context (at least the declared halo), so
   the result equals a whole-image pass up to what lies beyond the model's declared halo.

fmc-ij's own bundles load as fmc-ij networks instead (:func:`fmc_ij.predict.model.load_predictor`). A 2D model
on a volume runs plane by plane (each plane is a sample, as the model declares); a multi-channel output is
returned channel first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmc_ij.errors import FmcInputError

#: Largest input (voxels) a foreign network sees in one pass; larger images are tiled.
MAX_PASS_VOXELS = 2**24
#: Weight formats run here, in order of preference (both need no code from the bundle).
RUNNABLE = ("torchscript", "onnx")


@dataclass
class AxisPlan:
    """Windows of one tile length along one axis: ``starts`` (may be negative or overrun: mirrored padding) and
    the core ``[lo, hi)`` each window writes."""

    length: int
    starts: list[int]
    cores: list[tuple[int, int]]


def _valid(size: Any, n: int) -> bool:
    if isinstance(size, int):
        return n == size
    mn, step = int(size.min), int(size.step)
    return n >= mn and (step == 0 and n == mn or step > 0 and (n - mn) % step == 0)


def _next_valid(size: Any, n: int) -> int:
    mn, step = int(size.min), int(size.step)
    return mn if n <= mn or step == 0 else mn + math.ceil((n - mn) / step) * step


def plan_axis(n: int, size: Any, halo: int, limit: int | None = None) -> AxisPlan:
    """How one axis of length ``n`` is covered for a model axis of ``size`` (fixed ``int`` or ``min``/``step``).

    One window when the image (or its padded next valid size, within ``limit``) fits; else windows of the
    fixed size (or the largest valid size within ``limit``) spread evenly inside the image, overlapping by at
    least ``2 * halo``, each core ending at the middle of an overlap.
    """
    if isinstance(size, int):
        length = size
    else:
        length = n if _valid(size, n) else _next_valid(size, n)
        if limit is not None and length > limit and n > limit:
            length = max(_next_valid(size, 2 * halo + 1), _largest_valid(size, limit))
    if length >= n:  # one window, centred (mirrored beyond the image)
        start = -((length - n) // 2)
        return AxisPlan(length, [start], [(0, n)])
    if length <= 2 * halo:
        raise FmcInputError(f"the model's tile {length} leaves no core after its halo {halo}")
    k = 1 + math.ceil((n - length) / (length - 2 * halo))
    starts = [round(i * (n - length) / (k - 1)) for i in range(k)]
    bounds = [0] + [(starts[i + 1] + starts[i] + length) // 2 for i in range(k - 1)] + [n]
    return AxisPlan(length, starts, [(bounds[i], bounds[i + 1]) for i in range(k)])


def _largest_valid(size: Any, limit: int) -> int:
    mn, step = int(size.min), int(size.step)
    return mn if step == 0 or limit <= mn else mn + (limit - mn) // step * step


def _mirror_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Symmetric (edge-repeating) mirroring of indices outside ``[0, n)``, as numpy's ``symmetric`` pad."""
    period = 2 * n
    idx = np.mod(idx, period)
    return np.where(idx < n, idx, period - 1 - idx)


@dataclass
class BundlePredictor:
    """A bioimage.io model description with its prediction pipeline (bioimageio.core) and the weights it runs."""

    source: str
    descr: Any
    pipeline: Any = field(repr=False)
    weight_format: str = "torchscript"
    tta: bool = False
    max_pass_voxels: int = MAX_PASS_VOXELS

    @property
    def spatial(self) -> list[str]:
        """The model's spatial axis ids in z, y, x order (``["y", "x"]`` or ``["z", "y", "x"]``)."""
        ids = [str(a.id) for a in self.descr.inputs[0].axes if a.type == "space"]
        return [a for a in "zyx" if a in ids]

    @property
    def channels(self) -> int:
        return 1

    def predict(self, image: np.ndarray, axes: str) -> np.ndarray:
        """The model's first output for a YX or ZYX ``image``: float32 on the input's grid (channel first when
        the output has several channels)."""
        if self.tta:
            raise FmcInputError("--tta flips fmc-ij networks; a model from another tool runs as it is (drop --tta)")
        sp = self.spatial
        if axes not in ("YX", "ZYX") or len(sp) > len(axes):
            raise FmcInputError(f"a {len(sp)}D model cannot predict a {axes} image; give YX or ZYX data")
        if len(sp) == 2 and axes == "ZYX":  # plane by plane: each plane is one sample for a 2D model
            planes = [self.predict(plane, "YX") for plane in image]
            return np.stack(planes, axis=-3)
        return self._predict(np.asarray(image, np.float32), axes.lower())

    def _predict(self, image: np.ndarray, axes: str) -> np.ndarray:
        from bioimageio.core import Sample, Tensor

        inp, out = self.descr.inputs[0], self.descr.outputs[0]
        order = [str(a.id) if a.type == "space" else a.type for a in inp.axes]
        arr = image.transpose([axes.index(a) for a in order if a in axes])
        shape, it = [], iter(arr.shape)
        for a in order:
            shape.append(next(it) if a in axes else 1)
        dims = [str(a.id) for a in inp.axes]
        sample = Sample(members={inp.id: Tensor.from_numpy(arr.reshape(shape), dims=dims)}, stat={}, id="fmc-ij")
        self.pipeline.apply_preprocessing(sample)  # statistics over the whole sample
        result = self._network(sample.members[inp.id].data.values, dims, order)
        res = Sample(members={out.id: Tensor.from_numpy(result, dims=[str(a.id) for a in out.axes])},
                     stat=sample.stat, id="fmc-ij")  # fmt: skip
        self.pipeline.apply_postprocessing(res)
        data = res.members[out.id].data
        names = {str(a.id): (str(a.id) if a.type == "space" else a.type) for a in out.axes}
        batch = [d for d in data.dims if names.get(str(d)) == "batch"]
        chan = [d for d in data.dims if names.get(str(d)) == "channel"]
        space = sorted((d for d in data.dims if names.get(str(d)) in axes), key=lambda d: axes.index(names[str(d)]))
        values = data.isel({d: 0 for d in batch}).transpose(*chan, *space).values
        if chan and values.shape[0] == 1:
            values = values[0]
        return np.asarray(values, np.float32)

    def _network(self, x: np.ndarray, dims: list[str], order: list[str]) -> np.ndarray:
        """The network on the pre-processed input ``x`` (axes ``order``): whole, padded or in tiles (see module)."""
        from bioimageio.core import Sample, Tensor

        inp, out = self.descr.inputs[0], self.descr.outputs[0]
        halo = {str(a.id): int(getattr(a, "halo", 0) or 0) for a in out.axes if a.type == "space"}
        space = [i for i, a in enumerate(order) if a not in ("batch", "channel")]
        sizes = {str(a.id): a.size for a in inp.axes if a.type == "space"}
        limit = max(16, int(self.max_pass_voxels ** (1 / len(space))))
        plans = [plan_axis(x.shape[i], sizes[order[i]], halo.get(order[i], 0), limit) for i in space]
        result = None
        for combo in np.ndindex(*[len(p.starts) for p in plans]):
            idx: list[Any] = [slice(None)] * x.ndim
            for i, p, k in zip(space, plans, combo):
                idx[i] = _mirror_index(np.arange(p.starts[k], p.starts[k] + p.length), x.shape[i])
            tile = x[np.ix_(*[np.arange(x.shape[d]) if isinstance(s, slice) else s for d, s in enumerate(idx)])]
            pred = self.pipeline.predict_sample_without_blocking(
                Sample(members={inp.id: Tensor.from_numpy(np.ascontiguousarray(tile), dims=dims)}, stat={}, id=None),
                skip_preprocessing=True, skip_postprocessing=True, skip_input_padding=True,
                skip_output_cropping=True,
            ).members[out.id].data.values  # fmt: skip
            if result is None:
                shape = list(pred.shape)
                for i in space:
                    shape[i] = x.shape[i]
                result = np.zeros(shape, np.float32)
            dst: list[slice] = [slice(None)] * x.ndim
            src: list[slice] = [slice(None)] * x.ndim
            for i, p, k in zip(space, plans, combo):
                lo, hi = p.cores[k]
                dst[i], src[i] = slice(lo, hi), slice(lo - p.starts[k], hi - p.starts[k])
            result[tuple(dst)] = pred[tuple(src)]
        assert result is not None
        return result


def _check(descr: Any, path: Path) -> None:
    """One input, one channel in, spatial axes only, outputs on the input's grid: what fmc-ij runs."""
    if len(descr.inputs) != 1:
        raise FmcInputError(f"{path}: the model takes {len(descr.inputs)} inputs; fmc-ij runs one-input models "
                            "(use bioimageio.core directly)")  # fmt: skip
    inp = descr.inputs[0]
    for a in inp.axes:
        if a.type not in ("batch", "channel", "space"):
            raise FmcInputError(f"{path}: input axis {a.id} of type {a.type} is not supported here")
        if a.type == "channel" and len(a.channel_names) != 1:
            raise FmcInputError(f"{path}: the model takes {len(a.channel_names)} channels; give it multi-channel "
                                "images through bioimageio.core")  # fmt: skip
    in_ids = {str(a.id): a for a in inp.axes if a.type == "space"}
    for a in descr.outputs[0].axes:
        if a.type not in ("batch", "channel", "space"):
            raise FmcInputError(f"{path}: output axis {a.id} of type {a.type} is not supported here")
        if a.type != "space":
            continue
        ref = getattr(a.size, "axis_id", None)
        same = str(ref) == str(a.id) and int(getattr(a.size, "offset", 0) or 0) == 0
        same = same and float(getattr(a, "scale", 1.0)) == float(getattr(in_ids.get(str(a.id)), "scale", 1.0))
        if not same and not (isinstance(a.size, int) and isinstance(getattr(in_ids.get(str(a.id)), "size", None), int)
                             and a.size == in_ids[str(a.id)].size):  # fmt: skip
            raise FmcInputError(f"{path}: its output axis {a.id} is not on the input's grid; fmc-ij runs same-size "
                                "restoration models (use bioimageio.core for this one)")  # fmt: skip


def _weight_format(descr: Any, path: Path) -> str:
    """The first runnable weight format stored in the bundle (TorchScript, then ONNX)."""
    present = [f for f in RUNNABLE if getattr(descr.weights, f, None) is not None]
    local = [f for f in present if not str(getattr(descr.weights, f).source).startswith(("http://", "https://"))]
    if "onnx" in local:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            local.remove("onnx")
            if not local:
                raise FmcInputError(f"{path}: only ONNX weights run offline here; install onnxruntime "
                                    "(pip install onnxruntime)") from None  # fmt: skip
    if not local:
        what = ", ".join(f for f in ("pytorch_state_dict", "tensorflow_saved_model_bundle", "keras_hdf5")
                         if getattr(descr.weights, f, None) is not None) or "none"  # fmt: skip
        raise FmcInputError(
            f"{path}: no TorchScript or ONNX weights inside the bundle (it has: {what}); state-dict weights would run "
            "the bundle's own Python code or need a download, which fmc-ij does not do (use bioimageio.core)"
        )
    return local[0]


def _describe(src: Path, path: Path, version: str) -> Any:
    from bioimageio.spec import load_description

    try:
        return load_description(str(src), format_version=version, perform_io_checks=False)
    except Exception as err:  # noqa: BLE001 - any loader failure is one line for the user
        raise FmcInputError(f"{path}: not a readable bioimage.io model ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:200]})") from None  # fmt: skip


def _valid_model(descr: Any) -> bool:
    from bioimageio.spec import InvalidDescr

    return getattr(descr, "type", None) == "model" and not isinstance(descr, InvalidDescr)


def _first_error(descr: Any) -> str:
    errors = getattr(getattr(descr, "validation_summary", None), "errors", None) or []
    if not errors:
        return ""
    loc = ".".join(map(str, errors[0].loc or ()))
    return f" ({loc + ': ' if loc else ''}{errors[0].msg})"[:200]


def load_bundle_predictor(path: str | Path, device: str = "cpu") -> BundlePredictor:
    """Another tool's bioimage.io bundle (zip, folder or rdf yaml), ready for :meth:`BundlePredictor.predict`;
    read offline (no look-ups of remote files)."""
    try:
        from bioimageio.core import create_prediction_pipeline
    except ImportError:  # pragma: no cover - bioimageio.core is installed by make test
        raise FmcInputError("running bioimage.io models from other tools needs bioimageio.core: pip install "
                            "'fmc-ij[bioimageio]'") from None  # fmt: skip
    path = Path(path)
    src = path
    if path.is_dir():
        from fmc_ij.model_io.bundle import rdf_path

        src = rdf_path(path) or path
    descr = _describe(src, path, "latest")  # converted to format 0.5, which the code below reads
    if not _valid_model(descr):
        native = _describe(src, path, "discover")
        if not _valid_model(native):
            raise FmcInputError(f"{path}: not a valid bioimage.io model{_first_error(descr)}; check it with fmc-ij "
                                "validate")  # fmt: skip
        _weight_format(native, path)  # a model that cannot run here says why first
        raise FmcInputError(f"{path}: a format {native.format_version} model that bioimage.io cannot convert to 0.5"
                            f"{_first_error(descr)}; fmc-ij runs format 0.5 models")  # fmt: skip
    _check(descr, path)
    fmt = _weight_format(descr, path)
    devices = None if device in ("auto", "cpu") else [device]
    try:
        pipeline = create_prediction_pipeline(descr, devices=devices, weight_format=fmt)
    except Exception as err:  # noqa: BLE001
        raise FmcInputError(f"{path}: its {fmt} weights do not load ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:200]})") from None  # fmt: skip
    return BundlePredictor(str(path), descr, pipeline, fmt)
