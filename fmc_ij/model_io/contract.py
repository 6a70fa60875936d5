"""What a stored model promises: one typed value written with its weights and read back wherever it runs.

A :class:`ModelContract` holds everything prediction, fine-tuning and export must repeat from training: the
network, how inputs are normalised, the task (same-grid restoration, isotropic restoration or surface
projection), the channels and their order, the output floor, the voxel size and intensity ranges of the training
data, and where the model came from. ``model.pt``, training checkpoints and the ``config.yaml`` attached to a
bioimage.io bundle all carry it, so a run, a checkpoint and its bundle predict the same.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fmc_ij.errors import FmcInputError
from fmc_ij.nn.factory import ModelConfig
from fmc_ij.norm import PMAX, PMIN

#: Written into every model file and bundle config; files without it are read as the earlier layout.
CONTRACT_FORMAT = "fmc-ij-model/2"
Task = Literal["restore", "isotropic", "projection"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Normalization(_Strict):
    """Inputs are scaled by their own ``pmin`` / ``pmax`` percentiles (:class:`fmc_ij.norm.Normalizer`) over the
    whole image (``ZYX`` for volumes, also for a 2D model run plane by plane), each channel on its own."""

    method: Literal["percentile"] = "percentile"
    pmin: float = PMIN
    pmax: float = PMAX


class TrainingData(_Strict):
    """What the model was trained on: the scale and intensities it knows (``None`` where unknown)."""

    axes: str | None = None
    #: Voxel size of the training pairs along ``axes`` (the grid the network learned), in ``unit``: the median
    #: over the pairs, and (``voxel_range``) the smallest and largest per axis when they vary (randomised data).
    voxel_size: list[float] | None = None
    voxel_range: list[list[float]] | None = None
    unit: str | None = None
    #: Median raw percentiles (pmin, pmax) of the training inputs and targets.
    input_range: list[float] | None = None
    target_range: list[float] | None = None
    #: The data channels the model saw (one for a per-channel model; several for a shared or multi-channel one).
    channels: list[str] = Field(default_factory=list)
    specimens: list[str] = Field(default_factory=list)
    root: str | None = None


class Provenance(_Strict):
    fmc_ij: str = ""
    created: str = ""
    preset: str | None = None
    step: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    #: Where the weights came from (the ``--init`` model when fine-tuned).
    init: str | None = None


class GateCalibration(_Strict):
    """What the prediction gate compares an input with (:mod:`fmc_ij.predict.gate`), measured after training."""

    #: Mean and standard deviation of the network's deepest activations (per channel: means, then standard
    #: deviations) over training patches.
    feature_mean: list[float] = Field(default_factory=list)
    feature_std: list[float] = Field(default_factory=list)
    #: The out-of-distribution score of training and validation volumes (in domain by definition).
    in_domain: list[float] = Field(default_factory=list)
    #: The structure density (fraction of the normalised input above the gate's level) of those volumes.
    foreground: list[float] = Field(default_factory=list)
    #: The share of the input's light (above the normalised background) the network kept on those volumes.
    kept_light: list[float] = Field(default_factory=list)


class Calibration(_Strict):
    gate: GateCalibration | None = None
    #: Multiplies the reported standard deviation so that mean +- 1.645 sd covers 90% of held-out voxels.
    uncertainty_scale: float | None = None


class ModelContract(_Strict):
    """The stored model's promise (see the module docstring)."""

    format: Literal["fmc-ij-model/2"] = CONTRACT_FORMAT
    network: ModelConfig
    task: Task = "restore"
    normalization: Normalization = Field(default_factory=Normalization)
    #: The model's channels in the order it takes and returns them (``network.in_channels`` names, or empty).
    channels: list[str] = Field(default_factory=list)
    data: TrainingData = Field(default_factory=TrainingData)
    provenance: Provenance = Field(default_factory=Provenance)
    calibration: Calibration = Field(default_factory=Calibration)

    @property
    def output_floor(self) -> float | None:
        """Outputs are clipped below at this value (target-normalised units), or not at all (None)."""
        return self.network.output_floor

    @property
    def ndim(self) -> int:
        return self.network.ndim

    def with_output_floor(self, floor: float | None) -> ModelContract:
        return self.model_copy(update={"network": self.network.model_copy(update={"output_floor": floor})})

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def parse(cls, d: Any, source: str = "model") -> ModelContract:
        try:
            return cls.model_validate(d)
        except ValidationError as err:
            e = err.errors()[0]
            where = ".".join(str(p) for p in e["loc"]) or "contract"
            raise FmcInputError(f"{source}: unreadable model contract ({where}: {e['msg']}); re-export it with this "
                                "fmc-ij version") from None  # fmt: skip


def task_of(data_mode: str | None, arch: str) -> Task:
    """The task of a training config's ``data.mode`` and network."""
    if data_mode == "isotropic":
        return "isotropic"
    return "projection" if arch == "projection" or data_mode == "projection" else "restore"


def contract_from_config(
    config: dict[str, Any], *, data: TrainingData | None = None, **provenance: Any
) -> ModelContract:
    """The contract of a training config (``TrainConfig`` as a dict): also how files written before contracts
    existed are read (their config held everything but the training data's scale)."""
    from fmc_ij import __version__

    try:
        net = ModelConfig(**config["model"])
    except (KeyError, TypeError, ValidationError) as err:
        raise FmcInputError(f"not an fmc-ij model config ({type(err).__name__})") from None
    d = config.get("data") or {}
    chans = [str(c) for c in d.get("channels") or []]
    provenance.setdefault("fmc_ij", __version__)
    provenance.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    provenance.setdefault("preset", config.get("preset"))
    provenance.setdefault("init", config.get("init"))
    data = data or TrainingData()
    if not data.channels and chans:
        data = data.model_copy(update={"channels": chans, "root": data.root or d.get("root")})
    return ModelContract(
        network=net,
        task=task_of(d.get("mode"), net.arch),
        normalization=Normalization(pmin=float(d.get("pmin", PMIN)), pmax=float(d.get("pmax", PMAX))),
        channels=chans if net.in_channels > 1 and len(chans) == net.in_channels else [],
        data=data,
        provenance=Provenance(**{k: v for k, v in provenance.items() if v is not None or k in ("preset", "init")}),
    )
