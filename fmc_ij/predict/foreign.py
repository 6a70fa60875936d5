"""bioimage.io models from other tools (CSBDeep, CAREamics, ...) run through bioimageio.core, with the model's own
pre-/post-processing and tiling: ``fmc-ij predict --model THEIR_MODEL.zip`` on YX / ZYX images.

fmc-ij's own bundles load as fmc-ij networks instead (:func:`fmc_ij.predict.model.load_predictor`): seam-free
tiles, uncertainty and the input's intensity scale. A foreign model's output is written as float32 in the model's
own output units; a 2D model on a volume runs plane by plane; a multi-channel output keeps its first channel.
Only TorchScript or ONNX weights run: state-dict weights need the bundle's own Python code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmc_ij.errors import FmcInputError


@dataclass
class BundlePredictor:
    """A bioimage.io model description with its prediction pipeline (bioimageio.core)."""

    source: str
    descr: Any
    pipeline: Any = field(repr=False)
    tta: bool = False

    @property
    def spatial(self) -> list[str]:
        """The model's spatial axis ids in z, y, x order (``["y", "x"]`` or ``["z", "y", "x"]``)."""
        ids = [str(a.id) for a in self.descr.inputs[0].axes if a.type == "space"]
        return [a for a in "zyx" if a in ids]

    @property
    def channels(self) -> int:
        return 1

    def _check(self) -> None:
        inp = self.descr.inputs[0]
        if len(self.descr.inputs) != 1:
            raise FmcInputError(f"{self.source}: the model takes {len(self.descr.inputs)} inputs; fmc-ij runs "
                                "one-input models (use bioimageio.core directly)")  # fmt: skip
        for a in inp.axes:
            if a.type not in ("batch", "channel", "space"):
                raise FmcInputError(f"{self.source}: input axis {a.id} of type {a.type} is not supported here")
            if a.type == "channel" and len(a.channel_names) != 1:
                raise FmcInputError(f"{self.source}: the model takes {len(a.channel_names)} channels; give it "
                                    "one-channel images through bioimageio.core")  # fmt: skip
        if self.tta:
            raise FmcInputError("--tta flips fmc-ij networks; a model from another tool runs as it is (drop --tta)")

    def predict(self, image: np.ndarray, axes: str) -> np.ndarray:
        """The model's first output for a YX or ZYX ``image`` (float32, same spatial shape)."""
        from bioimageio.core import Tensor, predict

        self._check()
        sp = self.spatial
        if axes not in ("YX", "ZYX") or len(sp) > len(axes):
            raise FmcInputError(f"a {len(sp)}D model cannot predict a {axes} image; give YX or ZYX data")
        if len(sp) == 2 and axes == "ZYX":  # plane by plane
            return np.stack([self.predict(plane, "YX") for plane in image])
        inp = self.descr.inputs[0]
        dims, arr = [], np.asarray(image, np.float32)
        order = {a: i for i, a in enumerate(axes.lower())}
        arr = arr.transpose([order[str(a.id)] for a in inp.axes if a.type == "space"])
        shape_iter = iter(arr.shape)
        full = []
        for a in inp.axes:
            dims.append(str(a.id))
            full.append(next(shape_iter) if a.type == "space" else 1)
        t = Tensor.from_numpy(arr.reshape(full), dims=dims)
        sample = predict(model=self.pipeline, inputs={inp.id: t})
        out_descr = self.descr.outputs[0]
        res = sample.members[out_descr.id]
        keep = [d for d in res.dims if str(d) in sp]
        data = res.data.isel({d: 0 for d in res.dims if str(d) not in sp}).transpose(*keep).values
        if data.shape != image.shape:
            raise FmcInputError(f"{self.source}: the model returned shape {data.shape} for an input of "
                                f"{image.shape}; fmc-ij runs same-size restoration models")  # fmt: skip
        return np.asarray(data, np.float32)


def load_bundle_predictor(path: str | Path, device: str = "cpu") -> BundlePredictor:
    """A foreign bioimage.io bundle (zip or rdf.yaml), ready for :meth:`BundlePredictor.predict`."""
    try:
        from bioimageio.core import create_prediction_pipeline, load_description
    except ImportError:  # pragma: no cover - bioimageio.core is installed by make test
        raise FmcInputError("running bioimage.io models from other tools needs bioimageio.core: pip install "
                            "'fmc-ij[bioimageio]'") from None  # fmt: skip
    descr = load_description(str(path))
    if getattr(descr, "type", None) != "model":
        raise FmcInputError(f"{path}: not a valid bioimage.io model ({type(descr).__name__}); check it with "
                            "fmc-ij validate")  # fmt: skip
    # TorchScript / ONNX only: state-dict weights would run the bundle's own Python architecture file.
    fmt = next((f for f in ("torchscript", "onnx") if getattr(descr.weights, f, None) is not None), None)
    if fmt is None:
        raise FmcInputError(
            f"{path}: no TorchScript or ONNX weights; its state-dict weights would run the bundle's Python code, "
            "which fmc-ij does not do (run it with bioimageio.core if you trust it)"
        )
    devices = None if device in ("auto", "cpu") else [device]
    return BundlePredictor(str(path), descr, create_prediction_pipeline(descr, devices=devices, weight_format=fmt))
