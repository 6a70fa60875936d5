"""Trained models for prediction: an fmc-ij run (``model.pt`` + config), or an ensemble of runs' members."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from fmc_ij.errors import FmcInputError
from fmc_ij.nn.factory import ModelConfig, build_model
from fmc_ij.nn.infer import (
    autocast,
    channels_last,
    fuse_batchnorm,
    receptive_radius,
    resolve_device,
    size_multiple,
    to_channels_last,
)
from fmc_ij.predict.foreign import BundlePredictor, load_bundle_predictor
from fmc_ij.train.checkpoint import MODEL, safe_load


@dataclass
class Predictor:
    """One network or an ensemble, ready to run on normalised tensors.

    Attributes
    ----------
    nets : list of torch.nn.Module
        Ensemble members (one for a plain run), in eval mode on ``device``.
    model : ModelConfig
    pmin, pmax : float
        The percentiles the inputs were normalised with in training (applied the same way here).
    """

    nets: list[torch.nn.Module]
    model: ModelConfig
    pmin: float = 2.0
    pmax: float = 99.8
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    source: str = ""
    #: Activation memory one tile may use (MB); sets the default tile size.
    memory_mb: float = 1024.0
    #: Test-time augmentation: average over the four lateral flips (which training augments with) and report
    #: their spread as uncertainty. Four times the compute.
    tta: bool = False
    #: ``restore`` (same grid in and out) or ``isotropic`` (a 2D model restoring axial planes of a volume
    #: upsampled along Z; see :mod:`fmc_ij.predict.isotropic`), from the training data's mode.
    task: Literal["restore", "isotropic"] = "restore"
    #: A multi-channel model's channels, in the order it takes and returns them (``data.channels``).
    channel_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Channels-last convolutions are faster on CPUs (oneDNN, ~1.3x measured for the 3D U-Net) and GPUs.
        self._layout = channels_last(self.model.ndim)
        self.nets = [to_channels_last(n, self.model.ndim) for n in self.nets]
        # What runs: BatchNorm folded into the convolutions (``nets`` keep their layers for export).
        self._run = [to_channels_last(fuse_batchnorm(n), self.model.ndim) for n in self.nets]

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
        """Largest tile for :attr:`memory_mb`: inference holds about 32 x ``base`` bytes per voxel (measured)."""
        return int(self.memory_mb * 2**20 / (32 * self.model.base))

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
        nd = self.ndim
        flips = [(), (nd + 1,), (nd,), (nd, nd + 1)] if self.tta else [()]
        means, scales = [], []
        oc = self.model.out_channels
        for net in self._run:
            for dims in flips:
                with autocast(self.device):
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
            var = s2 if var is None else var + s2
        if self.model.output_floor is not None:
            mean = mean.clamp_min(self.model.output_floor)
        return mean, (var.sqrt() if var is not None else None)


def _model_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if (path / MODEL).is_file():
        return [path / MODEL]
    members = sorted(path.glob(f"member_*/{MODEL}"))
    if members:
        return members
    raise FmcInputError(f"{path}: no {MODEL} (nor member_*/{MODEL}); pass an fmc-ij training run folder")


_KINDS = {"UNet": "care", "WangGenerator": "wang", "ProjectionUNet": "projection"}


def _fmc_architecture(path: Path) -> bool:
    """Whether a bundle was exported by fmc-ij (its tag and one of its networks), read from rdf.yaml alone."""
    import zipfile

    import yaml

    from fmc_ij.bioimageio import safe_extract

    if not zipfile.is_zipfile(path):
        safe_extract(path, path.parent)  # the one-line error for a damaged file
    with zipfile.ZipFile(path) as z:
        name = next((n for n in z.namelist() if n.rsplit("/", 1)[-1] in ("rdf.yaml", "bioimageio.yaml")), None)
        if name is None:
            raise FmcInputError(f"{path}: no rdf.yaml inside; not a bioimage.io bundle")
        rdf = yaml.safe_load(z.read(name)) or {}
    arch = ((rdf.get("weights") or {}).get("pytorch_state_dict") or {}).get("architecture") or {}
    return "fmc-ij" in (rdf.get("tags") or []) and arch.get("callable") in _KINDS


def _from_bundle(path: Path, dev: torch.device) -> Predictor:
    """A bioimage.io bundle exported by fmc-ij (its architecture file is one of fmc-ij's networks)."""
    import tempfile

    from fmc_ij.bioimageio import load_bundle

    with tempfile.TemporaryDirectory(prefix="fmc-bundle-") as tmp:
        rdf, state = load_bundle(path, tmp)
    arch = rdf["weights"]["pytorch_state_dict"].get("architecture", {})
    kwargs = dict(arch.get("kwargs", {}))
    kwargs.pop("keep_z", None)  # the bundle's projection network returns 2D; fmc-ij's tiler wants it repeated
    if "mean_floor" in kwargs:  # a probabilistic bundle's in-network floor is our output floor
        kwargs["output_floor"] = kwargs.pop("mean_floor")
    mcfg = ModelConfig(arch=_KINDS[arch["callable"]], **kwargs)
    pre = {op["id"]: op.get("kwargs", {}) for op in rdf["inputs"][0].get("preprocessing", [])}
    rng = pre.get("scale_range", {})
    net = build_model(mcfg)
    net.load_state_dict(state)
    pmin, pmax = float(rng.get("min_percentile", 2.0)), float(rng.get("max_percentile", 99.8))
    names = ()
    if mcfg.in_channels > 1:
        ch_axis = [a for a in rdf["inputs"][0]["axes"] if a.get("type") == "channel"]
        names = tuple(ch_axis[0].get("channel_names", ())) if ch_axis else ()
    return Predictor([net.to(dev).eval()], mcfg, pmin, pmax, dev, str(path), channel_names=names)


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


def _per_channel(path: Path, device: str) -> ChannelPredictors | None:
    """A folder of ``<channel>/model.pt`` runs, each trained on that one channel."""
    runs = sorted(d for d in path.iterdir() if (d / MODEL).is_file()) if path.is_dir() else []
    if not runs or (path / MODEL).is_file() or any(d.name.startswith("member_") for d in runs):
        return None
    out = {}
    for d in runs:
        chans = (safe_load(d / MODEL)["config"].get("data") or {}).get("channels") or []
        if len(chans) != 1:
            return None
        out[chans[0].lower()] = load_predictor(d, device)
    return ChannelPredictors(out)


def load_predictor(path: str | os.PathLike, device: str = "auto") -> Predictor | ChannelPredictors | BundlePredictor:
    """Load a run folder (``model.pt``), an ensemble run (``member_*/model.pt``), a per-channel run
    (``<channel>/model.pt``), one ``model.pt`` file, a training checkpoint (``checkpoints/last.pt``), a
    bioimage.io bundle exported by fmc-ij (``.zip``, as an fmc-ij network) or another tool's bioimage.io bundle
    (run by bioimageio.core: :mod:`fmc_ij.predict.foreign`)."""
    path = Path(path)
    if not path.exists():
        raise FmcInputError(f"{path}: no such model; pass a training run folder (fmc-ij train --out)")
    dev = resolve_device(device)
    if path.suffix.lower() == ".zip":
        if _fmc_architecture(path):
            return _from_bundle(path, dev)
        return load_bundle_predictor(path, device)  # another tool's model: bioimageio.core runs it
    channels = _per_channel(path, device)
    if channels is not None:
        return channels
    nets, cfg, data = [], None, {}
    for f in _model_files(path):
        try:
            saved = safe_load(f)  # no code from the file runs
            mcfg = ModelConfig(**saved["config"]["model"])
        except Exception as err:
            raise FmcInputError(f"{f}: not an fmc-ij model file ({type(err).__name__})") from None
        if cfg is not None and mcfg != cfg:
            raise FmcInputError(f"{f}: ensemble members differ in architecture; train them with one config")
        net = build_model(mcfg)
        net.load_state_dict(saved["state_dict"] if "state_dict" in saved else saved["model"])  # model.pt / checkpoint
        nets.append(net.to(dev).eval())
        cfg, data = mcfg, saved["config"].get("data", {})
    assert cfg is not None
    task = "isotropic" if data.get("mode") == "isotropic" else "restore"
    names = tuple(data.get("channels") or ()) if cfg.in_channels > 1 else ()
    return Predictor(nets, cfg, float(data.get("pmin", 2.0)), float(data.get("pmax", 99.8)), dev, str(path),
                     task=task, channel_names=names)  # fmt: skip


def load_one(path: str | os.PathLike, device: str = "auto") -> Predictor:
    """:func:`load_predictor` for callers that need one model (export, fine-tuning, one volume on a cluster)."""
    p = load_predictor(path, device)
    if isinstance(p, ChannelPredictors):
        first = next(iter(p.by_channel))
        raise FmcInputError(f"{path} holds one model per channel ({', '.join(p.by_channel)}); pass one, e.g. "
                            f"{Path(path) / first}")  # fmt: skip
    if not isinstance(p, Predictor):
        raise FmcInputError(f"{path}: a model from another tool; this step needs an fmc-ij model (run or bundle)")
    return p
