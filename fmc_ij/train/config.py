"""Training configuration: one pydantic model, saved as ``config.yaml`` beside every trained model.

Presets (``care2d``, ``care3d``, ``projection``, ``subdiffraction``, ``isotropic``, ``gan2d``, ``gan3d``) are
complete configs; any field can be overridden, e.g.
``TrainConfig.from_preset("care3d", data={"root": "registered"}, steps=4000)``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fmc_ij.data.pairs import AnyPair
from fmc_ij.data.split import split_pairs
from fmc_ij.errors import FmcInputError
from fmc_ij.io import write_text_atomic
from fmc_ij.nn.factory import DiscriminatorConfig, ModelConfig

LossName = Literal["mse", "mae", "ssim", "laplace", "n_ssim"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    """Where the registered pairs are and how patches are drawn from them."""

    root: str | None = None
    low: str | None = None  # glob of the inputs (default: challenge naming or the dataset manifest)
    high: str | None = None
    channels: list[str] | None = None
    #: One network for all channels: the channels of a specimen are stacked (order ``channels``, default
    #: sorted) and the model takes and returns them together (``model.in_channels`` = ``out_channels`` = C).
    multichannel: bool = False
    #: ``paired`` (same grid in and out), ``isotropic`` (semi-synthetic pairs from lateral planes; a 2D model
    #: for axial planes), ``projection`` (ZYX inputs, YX targets; model.arch projection, patch Z = the volumes' Z)
    mode: Literal["paired", "isotropic", "projection"] = "paired"
    patch: list[int] = Field(default_factory=lambda: [16, 64, 64])
    batch: int = Field(4, ge=1)
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    #: ``specimen``: hold out whole specimens; ``region``: a slab at the end of each specimen's longest lateral
    #: axis (every specimen trains); ``auto``: by specimen from 10 specimens on or with ``val_names``, else by
    #: region (paired data; see :mod:`fmc_ij.data.split`).
    val_split: Literal["auto", "specimen", "region"] = "auto"
    val_names: list[str] | None = None
    val_crop: list[int] = Field(default_factory=lambda: [64, 256, 256])
    fg_fraction: float = Field(0.8, ge=0.0, le=1.0)
    min_fg: float = Field(0.02, ge=0.0, le=1.0)
    augment: bool = True
    #: Flip along Z too (off for a single light-sheet view, whose degradation grows with depth).
    flip_axial: bool = True
    pmin: float = 2.0
    pmax: float = 99.8
    # isotropic mode: PSF widths in the data's length unit (default: axial = z step, lateral = 2 pixels)
    psf_axial_fwhm: float | None = None
    psf_lateral_fwhm: float | None = None


class OptimConfig(_Strict):
    name: Literal["adam", "adamw"] = "adamw"
    lr: float = Field(4e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "constant", "plateau"] = "cosine"
    #: What the cosine decays over: ``steps`` (reproducible) or ``time``, the fraction of ``max_minutes`` used
    #: (whichever of steps and time runs out first ends the decay): train for a wall-clock budget.
    clock: Literal["steps", "time"] = "steps"
    warmup_steps: int = Field(50, ge=0)
    min_lr_ratio: float = Field(0.05, ge=0, le=1)
    grad_clip: float | None = 1.0
    #: ``auto``: bf16 autocast where the hardware computes it (CUDA, CPUs with AVX512-BF16/AMX), else float32.
    #: Weights, optimiser state and losses stay float32; prediction is always float32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"


class GanConfig(_Strict):
    """Wang et al. 2019: L(G) = adv_weight * -log D(G(x)) + mse_weight * MSE - ssim_weight * log((1 + SSIM) / 2).

    The generator first trains on the regularisers alone for ``pretrain_steps`` (a stable start on small
    compute budgets), then adversarially.
    """

    discriminator: DiscriminatorConfig = Field(default_factory=DiscriminatorConfig)
    adv_weight: float = Field(1.0, ge=0)
    mse_weight: float = Field(1.0, ge=0)
    ssim_weight: float = Field(0.1, ge=0)
    d_lr: float = Field(1e-4, gt=0)
    pretrain_steps: int = Field(0, ge=0)


class TrainConfig(_Strict):
    """Everything a training run needs; ``TrainConfig.load(path)`` / ``cfg.save(path)`` round-trip it as YAML."""

    name: str = "model"
    preset: str | None = None
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    gan: GanConfig | None = None
    loss: dict[LossName, float] = Field(default_factory=lambda: {"mae": 1.0})
    optim: OptimConfig = Field(default_factory=OptimConfig)
    steps: int = Field(2000, ge=1)
    val_every: int = Field(100, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)
    patience: int | None = Field(None, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    #: Start from this model's weights (run folder, model.pt, checkpoint or fmc-ij bundle); its architecture
    #: replaces ``model``. ``freeze_encoder`` then trains the decoder only.
    init: str | None = None
    freeze_encoder: bool = False
    ensemble: int = Field(1, ge=1)
    deterministic: bool = False
    threads: int | None = Field(None, ge=1)
    device: str = "auto"

    @field_validator("loss")
    @classmethod
    def _loss_nonempty(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or all(w == 0 for w in v.values()):
            raise ValueError("give at least one loss with a non-zero weight, e.g. {mae: 1.0}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if len(self.data.patch) != self.model.ndim:
            raise ValueError(f"data.patch has {len(self.data.patch)} sizes but the model is {self.model.ndim}D")
        if ("laplace" in self.loss) != self.model.probabilistic:
            raise ValueError("the laplace loss and model.probabilistic go together: set both or neither")
        if self.data.mode == "isotropic" and self.model.ndim != 2:
            raise ValueError("isotropic restoration trains a 2D network on lateral planes: use model.ndim 2")
        if (self.data.mode == "projection") != (self.model.arch == "projection"):
            raise ValueError("surface projection: set data.mode projection and model.arch projection together")
        if self.data.multichannel and (self.data.mode != "paired" or self.model.probabilistic or self.gan):
            raise ValueError(
                "data.multichannel trains a paired CARE model (not isotropic, projection, probabilistic or GAN)"
            )
        if self.gan is not None and self.model.probabilistic:
            raise ValueError("a GAN generator cannot be probabilistic")
        if self.freeze_encoder and not self.init:
            raise ValueError("freeze_encoder fine-tunes a model: give init (fmc-ij train --init RUN_OR_BUNDLE)")
        if self.optim.clock == "time" and not self.max_minutes:
            raise ValueError("optim.clock 'time' decays the learning rate over max_minutes: set max_minutes")
        return self

    # -- presets and YAML -------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """A preset (see :data:`PRESETS`) with nested ``overrides`` merged in."""
        if name not in PRESETS:
            raise FmcInputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls.from_dict(_merge(copy.deepcopy(PRESETS[name]), {"preset": name, **overrides}))

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """A validated copy with nested ``overrides`` merged in."""
        return self.from_dict(_merge(self.model_dump(mode="json"), copy.deepcopy(overrides)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        try:
            return cls.model_validate(d)
        except ValidationError as err:
            e = err.errors()[0]
            where = ".".join(str(p) for p in e["loc"]) or "config"
            raise FmcInputError(f"invalid training config: {where}: {e['msg']}") from None

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FmcInputError(f"{path}: no such config file")
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise FmcInputError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(d, dict):
            raise FmcInputError(f"{path}: expected a mapping of config fields")
        base = copy.deepcopy(PRESETS[d["preset"]]) if d.get("preset") in PRESETS else {}
        return cls.from_dict(_merge(base, d))

    def save(self, path: str | Path) -> Path:
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        return write_text_atomic(Path(path), text)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k != "loss":
            base[k] = _merge(base[k], v)
        else:
            base[k] = v
    return base


#: Complete starting points. The 3D presets are sized for CPUs (about 4 patches/s on 2 cores for care3d); on a
#: GPU raise ``data.patch``, ``data.batch`` and ``model.base``.
PRESETS: dict[str, dict[str, Any]] = {
    "care2d": {
        "model": {"arch": "care", "ndim": 2, "depth": 2, "base": 32, "kernel": 5},
        "data": {"patch": [128, 128], "batch": 16, "val_crop": [1, 512, 512]},
        "loss": {"mae": 1.0},
        "steps": 3000,
        "val_every": 150,
    },
    # BatchNorm, a direct (not residual) output and lr 1e-3: on the light-sheet benchmark (make bench, 240 s on
    # 2 cores) held-out N_SSIM 0.74 where the residual, norm-free U-Net at 4e-4 reached 0.46 (residual + BatchNorm
    # 0.67). Nearest-neighbour upsampling (then a convolution) instead of transposed convolutions, and no flips
    # along Z (a single view degrades with depth: a flipped pair teaches the opposite direction): 0.865 where the
    # same 16-filter network reached 0.735 with transposed upsampling and 0.846 with Z flips (patches 32x64x64,
    # 240 s; the 32-filter network 0.766 in that time). Then bf16 autocast (262 steps in 240 s instead of 133: 0.846
    # with one of the 4 specimens held out) and the region split (all 4 specimens train: 0.908; no validation at
    # all 0.912). MAE alone: the 0.1 SSIM term had been computed in bf16 (noise: SSIM up to 2, NaN gradients); in
    # float32 it costs 15 % of a step and did not pay: 0.885 / 0.897 in 237-244 steps against MAE alone 0.906 in
    # 277 (240 s, one run each). Under DDP the BatchNorm statistics span all processes.
    "care3d": {
        "model": {
            "arch": "care",
            "ndim": 3,
            "depth": 2,
            "base": 16,
            "kernel": 3,
            "norm": True,
            "residual": False,
            "upsample": "nearest",
        },
        "optim": {"lr": 1e-3},
        "data": {"patch": [16, 64, 64], "batch": 4, "flip_axial": False},
        "loss": {"mae": 1.0},
        "steps": 1200,
        "val_every": 100,
    },
    "projection": {
        "model": {"arch": "projection", "ndim": 3, "depth": 2, "base": 32, "kernel": 3, "residual": False},
        "data": {"mode": "projection", "patch": [32, 64, 64], "batch": 8, "val_crop": [512, 256, 256]},
        "optim": {"lr": 1e-3},
        "loss": {"mae": 1.0},
        "steps": 2000,
        "val_every": 100,
    },
    # Sub-diffraction restoration from synthetic beads / filaments (CARE Fig. 4, Wang Fig. 3): BatchNorm and a direct
    # output learn the narrower PSF: bead FWHM 293 -> 116 nm against 111 nm truth in 360 steps (9.3 CPU min), where
    # the residual care2d reached 153 nm in 256 steps (benchmarks/care_tasks.py beads).
    "subdiffraction": {
        "model": {"arch": "care", "ndim": 2, "depth": 2, "base": 32, "kernel": 5, "norm": True, "residual": False},
        "data": {"patch": [64, 64], "batch": 16, "val_crop": [1, 256, 256]},
        "optim": {"lr": 1e-3},
        "loss": {"mae": 1.0},
        "steps": 360,
        "val_every": 100,
    },
    # CARE's IsotropicCARE: a 2D network trained on lateral planes degraded like the axial direction (fmc-ij
    # predict then restores every XZ and YZ plane of the volume upsampled along Z).
    "isotropic": {
        "model": {"arch": "care", "ndim": 2, "depth": 2, "base": 32, "kernel": 5},
        "data": {"mode": "isotropic", "patch": [64, 64], "batch": 16, "val_crop": [1, 256, 256]},
        "loss": {"mae": 1.0},
        "steps": 2000,
        "val_every": 100,
    },
    "gan2d": {
        "model": {"arch": "wang", "ndim": 2, "depth": 4, "base": 16},
        "gan": {"pretrain_steps": 500},
        "data": {"patch": [128, 128], "batch": 16, "val_crop": [1, 512, 512]},
        "loss": {"mse": 1.0},
        "optim": {"lr": 1e-4, "betas": [0.5, 0.999]},
        "steps": 3000,
        "val_every": 150,
    },
    "gan3d": {
        "model": {"arch": "wang", "ndim": 3, "depth": 4, "base": 8},
        "gan": {"pretrain_steps": 400, "discriminator": {"base": 8}},
        "data": {"patch": [16, 64, 64], "batch": 4},
        "loss": {"mse": 1.0},
        "optim": {"lr": 2e-4, "betas": [0.5, 0.999]},
        "steps": 1500,
        "val_every": 100,
    },
}


def stored_config(raw: dict[str, Any]) -> TrainConfig:
    """The config of a trained run as it was: runs from before ``data.val_split`` held out whole specimens, so
    their validation data stays those specimens (a region of a trained specimen would not be held out)."""
    cfg = TrainConfig.from_dict(raw)
    if "val_split" not in (raw.get("data") or {}):
        cfg = cfg.with_overrides({"data": {"val_split": "specimen"}})
    return cfg


def split_data(pairs: list[AnyPair], cfg: TrainConfig) -> tuple[list[AnyPair], list[AnyPair]]:
    """The run's training and validation pairs (``data.val_split``; regions only for paired data)."""
    d = cfg.data
    mode = d.val_split if d.mode == "paired" or d.val_split == "specimen" else "specimen"
    return split_pairs(pairs, mode=mode, val_fraction=d.val_fraction, val_names=d.val_names, patch=d.patch,
                       seed=cfg.seed)  # fmt: skip
