"""Trained models ready to predict: any stored fmc-ij model (:mod:`fmc_ij.model_io`) or another tool's bundle."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from fmc_ij.errors import FmcInputError
from fmc_ij.model_io import ChannelModels, ModelContract, StoredModel, is_bundle, is_fmc_bundle, read_model
from fmc_ij.nn.factory import ModelConfig
from fmc_ij.nn.infer import (
    bottleneck,
    channels_last,
    fuse_batchnorm,
    inference_precision,
    receptive_radius,
    resolve_device,
    return_freed_memory,
    size_multiple,
    to_channels_last,
)
from fmc_ij.nn.lean import lean
from fmc_ij.predict.foreign import BundlePredictor, load_bundle_predictor

#: Peak activation bytes per voxel of a tile, per first-level filter, of the lean U-Net (fmc_ij.nn.lean; measured
#: on 64x160x160 and 48x160x160 tiles: 15.8 for 16 filters with nearest upsampling, 12.1-12.3 for 32; the plain
#: U-Net held 24-34).
BYTES_PER_VOXEL_PER_BASE = 16


@dataclass
class Predictor:
    """One network or an ensemble with its contract, ready to run on normalised tensors.

    Attributes
    ----------
    nets : list of torch.nn.Module
        Ensemble members (one for a plain run), in eval mode on ``device``.
    contract : ModelContract
        What the model promises (normalisation, task, channels, output floor...); a bare
        :class:`~fmc_ij.nn.factory.ModelConfig` is taken as a same-grid model with the default normalisation.
    """

    nets: list[torch.nn.Module]
    contract: ModelContract | ModelConfig
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    source: str = ""
    #: Activation memory one tile may use (MB); sets the default tile size (the same tiles as 1024 MB gave before
    #: the U-Net ran as :class:`~fmc_ij.nn.lean.LeanUNet`, which holds half the feature maps).
    memory_mb: float = 512.0
    #: Test-time augmentation: average over the four lateral flips (which training augments with) and report
    #: their spread as uncertainty. Four times the compute.
    tta: bool = False

    @classmethod
    def from_stored(cls, stored: StoredModel, device: str | torch.device = "auto") -> Predictor:
        dev = resolve_device(device) if isinstance(device, str) else device
        return cls(stored.networks(dev), stored.contract, dev, str(stored.source))

    @property
    def model(self) -> ModelConfig:
        assert isinstance(self.contract, ModelContract)
        return self.contract.network

    @property
    def pmin(self) -> float:
        return self.contract.normalization.pmin  # type: ignore[union-attr]

    @property
    def pmax(self) -> float:
        return self.contract.normalization.pmax  # type: ignore[union-attr]

    @property
    def task(self) -> Literal["restore", "isotropic", "projection"]:
        return self.contract.task  # type: ignore[union-attr]

    @property
    def channel_names(self) -> tuple[str, ...]:
        """A multi-channel model's channels, in the order it takes and returns them."""
        return tuple(self.contract.channels)  # type: ignore[union-attr]

    def __post_init__(self) -> None:
        if isinstance(self.contract, ModelConfig):
            self.contract = ModelContract(network=self.contract)
        return_freed_memory()  # tiles' feature maps go back to the system, not to a fragmenting heap
        # Channels-last convolutions are faster on CPUs (oneDNN, ~1.3x measured for the 3D U-Net) and GPUs.
        self._layout = channels_last(self.model.ndim)
        self.nets = [to_channels_last(n, self.model.ndim) for n in self.nets]
        # What runs: BatchNorm folded into the convolutions (``nets`` keep their layers for export).
        # Always a copy: the feature hook below stays off the networks that are exported or fine-tuned.
        # The U-Net then runs as its prediction-only rearrangement (half the activation memory, fmc_ij.nn.lean).
        self._run = [lean(to_channels_last(_copy(fuse_batchnorm(n), n), self.model.ndim)) for n in self.nets]
        # The first member's deepest activations on the last batch (the gate's out-of-distribution score; free:
        # a hook on the pass that runs anyway). Per thread: a Dask worker runs tasks in several threads.
        self._local = threading.local()
        deep = bottleneck(self._run[0])
        if deep is not None:
            deep.register_forward_hook(self._keep_activations)

    @property
    def last_activations(self) -> torch.Tensor | None:
        return getattr(self._local, "activations", None)

    def _keep_activations(self, _module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if getattr(self._local, "activations", None) is None:  # the un-flipped pass of the first member
            self._local.activations = output.detach()

    @property
    def ndim(self) -> int:
        return self.model.ndim

    @property
    def channels(self) -> int:
        """Channels in and out: above 1, images are channel first (``CYX``, ``CZYX``; see ``data.multichannel``)."""
        return self.model.in_channels

    @property
    def multiple(self) -> list[int]:
        return size_multiple(self.nets[0], self.ndim)

    @property
    def radius(self) -> list[int]:
        return receptive_radius(self.nets[0], self.ndim)

    @property
    def whole_z(self) -> bool:
        """The network needs the whole Z extent in one pass (ProjectionCARE): tiles split only Y and X."""
        return bool(getattr(self.nets[0], "whole_z", False))

    @property
    def max_tile_voxels(self) -> int:
        """Largest tile for :attr:`memory_mb`: inference holds about :data:`BYTES_PER_VOXEL_PER_BASE` x ``base``
        bytes per voxel."""
        return int(self.memory_mb * 2**20 / (BYTES_PER_VOXEL_PER_BASE * self.model.base))

    @property
    def has_uncertainty(self) -> bool:
        return self.model.probabilistic or len(self.nets) > 1 or self.tta

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, uncertainty) for a normalised (N, C, *spatial) batch whose size fits :attr:`multiple`.

        The uncertainty is the Laplace scale (``sqrt(2) * b``, a standard deviation) for a probabilistic
        model, the standard deviation over ensemble members and test-time flips (:attr:`tta`), the two
        combined when both apply, else None.
        """
        x = x.to(self.device).contiguous(memory_format=self._layout)
        self._local.activations = None
        nd = self.ndim
        flips = [(), (nd + 1,), (nd,), (nd, nd + 1)] if self.tta else [()]
        means, scales = [], []
        oc = self.model.out_channels
        for net in self._run:
            for dims in flips:
                with inference_precision(self.device):
                    out = net(x.flip(dims) if dims else x).float()
                if dims:
                    out = out.flip(dims)
                means.append(out[:, :oc])
                if self.model.probabilistic:
                    scales.append(torch.exp(out[:, oc : 2 * oc].clamp(-10, 10)) * 2**0.5)
        mean = torch.stack(means).mean(0)
        var = torch.stack(means).var(0, unbiased=False) if len(means) > 1 else None
        if scales:
            s2 = torch.stack(scales).pow(2).mean(0)
            k = self.contract.calibration.uncertainty_scale  # type: ignore[union-attr]
            if k:  # measured on held-out data when training ended: mean +- 1.645 sd holds 90 % of the voxels
                s2 = s2 * k * k
            var = s2 if var is None else var + s2
        if self.model.output_floor is not None:
            mean = mean.clamp_min(self.model.output_floor)
        return mean, (var.sqrt() if var is not None else None)


def _copy(run: torch.nn.Module, original: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(original) if run is original else run


@dataclass
class ChannelPredictors:
    """One model per channel (``fmc-ij train --per-channel``; Wang et al. trained one per channel): each input
    goes to the model of its channel (the image's channel metadata, else its Fuse My Cells file name)."""

    by_channel: dict[str, Predictor]

    @property
    def tta(self) -> bool:
        return any(p.tta for p in self.by_channel.values())

    @tta.setter
    def tta(self, value: bool) -> None:
        for p in self.by_channel.values():
            p.tta = value

    def select(self, channel: str | None, name: str) -> Predictor:
        """The model for an image of ``channel`` (``name`` is used for the error message)."""
        if channel is None:
            raise FmcInputError(
                f"{name}: no channel in its metadata or name; name it image_N_<channel>_angle.tif, set its channel "
                f"metadata, or pass one channel's model (--model RUN/{next(iter(self.by_channel))})"
            )
        if channel.lower() not in self.by_channel:
            raise FmcInputError(f"{name}: channel {channel!r} has no model here; models: {', '.join(self.by_channel)}")
        return self.by_channel[channel.lower()]


def load_predictor(path: str | os.PathLike, device: str = "auto") -> Predictor | ChannelPredictors | BundlePredictor:
    """Any stored fmc-ij model (:func:`fmc_ij.model_io.read_model`: run, ensemble, per-channel folder, model file,
    checkpoint, fmc-ij bundle) ready to predict, or another tool's bioimage.io bundle (zip, folder or rdf yaml; run
    as its own pre/post-processing says: :mod:`fmc_ij.predict.foreign`)."""
    path = Path(path)
    if path.exists() and is_bundle(path) and not is_fmc_bundle(path):
        return load_bundle_predictor(path, device)
    stored = read_model(path)
    if isinstance(stored, ChannelModels):
        return ChannelPredictors({c: Predictor.from_stored(m, device) for c, m in stored.by_channel.items()})
    return Predictor.from_stored(stored, device)


def load_one(path: str | os.PathLike, device: str = "auto") -> Predictor:
    """:func:`load_predictor` for callers that need one fmc-ij model (one volume spread over a cluster)."""
    p = load_predictor(path, device)
    if isinstance(p, ChannelPredictors):
        first = next(iter(p.by_channel))
        raise FmcInputError(f"{path} holds one model per channel ({', '.join(p.by_channel)}); pass one, e.g. "
                            f"{Path(path) / first}")  # fmt: skip
    if not isinstance(p, Predictor):
        raise FmcInputError(f"{path}: a model from another tool; this step needs an fmc-ij model (run or bundle)")
    return p
