"""The training loop: CARE (supervised losses) and the Wang et al. GAN, single process or distributed.

Run layout (``out/``)::

    config.yaml          the full TrainConfig (rebuilds the model)
    model.pt             best weights + config (what prediction and export read)
    checkpoints/last.pt  full state every ``checkpoint_every`` steps and at each validation
    checkpoints/best.pt  full state at the best validation N_SSIM
    log.csv              one row per validation (step, time, lr, losses, val SSIM / N_SSIM overall and per channel)
    training.png         loss and validation curves

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) each process takes an equal share of every global batch
and gradients are averaged by DistributedDataParallel (NCCL on GPUs, gloo on CPU), so the loss curve is that of
one process with the same global batch. Rank 0 validates, logs and writes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from fmc_ij.data.pairs import AnyPair, PatchBatches, StackedPair, load_pairs, stack_channels
from fmc_ij.data.semisynthetic import isotropic_dataset
from fmc_ij.errors import FmcInputError
from fmc_ij.metrics.ssim import n_ssim, ssim
from fmc_ij.model_io import TrainingData, read_one, write_model
from fmc_ij.nn.factory import build_discriminator, build_model
from fmc_ij.nn.infer import (
    autocast,
    channels_last,
    forward_padded,
    guard_bf16_conv3d,
    inference_precision,
    resolve_device,
    size_multiple,
    to_channels_last,
)
from fmc_ij.nn.losses import LOSSES, laplace_nll, n_ssim_loss, wang_discriminator_loss
from fmc_ij.nn.losses import ssim as ssim_t
from fmc_ij.progress import Bar
from fmc_ij.train.calibrate import calibrate
from fmc_ij.train.checkpoint import (
    BEST,
    LAST,
    MODEL,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    save_model,
    set_rng_state,
)
from fmc_ij.train.config import TrainConfig, split_data, stored_config
from fmc_ij.train.init import freeze_encoder, load_init
from fmc_ij.train.log import write_log


@dataclass
class TrainResult:
    """Where a run went and how it ended."""

    out: Path
    step: int
    best_step: int
    best_n_ssim: float
    stopped: str  # "steps", "early-stopping", "time-limit"
    history: list[dict[str, Any]]


# -- environment ------------------------------------------------------------------------------------------
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _setup_torch(cfg: TrainConfig, device: torch.device, world: int) -> None:
    if device.type == "cpu":
        # CPU processes share the cores: each distributed process gets its share.
        threads = cfg.threads or max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world))))
        torch.set_num_threads(threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


# -- losses -----------------------------------------------------------------------------------------------
def make_loss(weights: dict[str, float], probabilistic: bool) -> Callable[..., torch.Tensor]:
    """The weighted sum of the configured losses, as ``loss(out, target, input)``."""

    def loss(out: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = out.float()  # under bf16 autocast the network's output is bf16: the losses sum in float32
        mean = out[:, : y.shape[1]] if probabilistic else out
        total = out.new_zeros(())
        for name, w in weights.items():
            if w == 0:
                continue
            if name == "laplace":
                term = laplace_nll(out, y)
            elif name == "n_ssim":
                term = n_ssim_loss(mean, y, x)
            else:
                term = LOSSES[name](mean, y)
            total = total + w * term
        return total

    return loss


# -- validation -------------------------------------------------------------------------------------------
def _centre_crop(shape: tuple[int, ...], crop: list[int], multiple: list[int]) -> tuple[slice, ...]:
    crop = list(crop)[-len(shape) :] if len(crop) >= len(shape) else [1] * (len(shape) - len(crop)) + list(crop)
    out = []
    for i, (n, c) in enumerate(zip(shape, crop)):
        m = multiple[i - (len(shape) - len(multiple))] if i >= len(shape) - len(multiple) else 1
        size = min(n, c)
        size = max(m, size - size % m) if n >= m else n
        lo = (n - size) // 2
        out.append(slice(lo, lo + size))
    return tuple(out)


@torch.no_grad()
def validate(model: torch.nn.Module, pairs: list[AnyPair], cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """Challenge metrics on the centre crop (``data.val_crop``) of every validation pair.

    N_SSIM and SSIM are computed exactly as :mod:`fmc_ij.evaluate` does (each image percentile-normalised);
    a 2D model on volumes predicts the crop plane by plane.
    """
    model.eval()
    mult = size_multiple(model, cfg.model.ndim)
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for p in pairs:
        sl = _centre_crop(p.shape, cfg.data.val_crop, mult)
        xc, yc = p.arrays(sl)  # channel first
        planes = cfg.model.ndim == 2 and xc.ndim == 4  # a 2D model on volumes: the planes are the batch
        xt = torch.from_numpy(xc).to(device)
        xt = xt.transpose(0, 1) if planes else xt[None]
        with inference_precision(device):  # as prediction computes: the best model is chosen on what users get
            out = forward_padded(model, xt, mult, halo=[4 * m for m in mult])[:, : len(xc)].float()
        if cfg.model.output_floor is not None:
            out = out.clamp_min(cfg.model.output_floor)
        preds = (out.transpose(0, 1) if planes else out[0]).cpu().numpy()
        for k, (pred, x, y) in enumerate(zip(preds, xc, yc)):
            mae = float(np.abs(pred - y).mean())
            # A crop thinner than the SSIM window (a few planes for a 2D model) is scored plane by plane; a
            # surface projection is one plane, against the maximum projection as the baseline.
            if cfg.model.arch == "projection":
                trios = [(pred[0], y[0], x.max(0))]
            else:
                trios = [(pred, y, x)] if pred.ndim == 2 or pred.shape[0] > 10 else list(zip(pred, y, x))
            s = float(np.mean([ssim(a, b, data_range=1.0) for a, b, _ in trios]))
            ns = float(np.nanmean([n_ssim(a, b, c) for a, b, c in trios]))
            rows.setdefault(p.channels[k], []).append((mae, s, ns))
    model.train()
    res: dict[str, float] = {}
    every = [r for v in rows.values() for r in v]
    for key, vals in [("", every), *((f"_{k}", v) for k, v in rows.items() if len(rows) > 1)]:
        arr = np.array(vals, float)
        res[f"val_mae{key}"], res[f"val_ssim{key}"] = float(arr[:, 0].mean()), float(arr[:, 1].mean())
        res[f"val_n_ssim{key}"] = float(np.nanmean(arr[:, 2])) if np.isfinite(arr[:, 2]).any() else float("nan")
    return res


#: Training batches that re-estimate BatchNorm statistics before each validation (PreciseBN), and where their
#: batch numbers start (far beyond any run's steps, so they are not the batches the run trains on).
PRECISE_BN_BATCHES = 8
_PRECISE_BN_BASE = 2**40


@torch.no_grad()
def precise_batchnorm(model: torch.nn.Module, batches: PatchBatches, items: range, step: int,
                      device: torch.device) -> None:  # fmt: skip
    """Recompute the running statistics of every (tracking) BatchNorm as the plain average over
    :data:`PRECISE_BN_BATCHES` training batches with the current weights (Wu & Johnson's PreciseBN).

    The momentum average still remembers the weights of earlier steps, so early in training eval mode would
    normalise with stale statistics (a model of a few steps then outputs one value everywhere). Under DDP every
    process passes its share of each batch and the statistics span all of them (:mod:`fmc_ij.nn.syncbn`).
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative: the plain average of the batches below
    was = model.training
    model.train()
    for k in range(PRECISE_BN_BATCHES):
        x, _ = batches.batch(_PRECISE_BN_BASE + step * PRECISE_BN_BATCHES + k, items)
        model(_to(x, device))  # float32 (no autocast): the statistics are for float32 prediction
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was)


def _score(metrics: dict[str, float]) -> float:
    v = metrics.get("val_n_ssim", float("nan"))
    return v if math.isfinite(v) else -metrics.get("val_mae", float("inf"))


# -- optimisation -----------------------------------------------------------------------------------------
def _optimizer(params, cfg: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    o = cfg.optim
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr or o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, clock: list[float]):
    """Warm-up then cosine (or constant); ``clock[0]`` is the fraction of the time budget used (``clock: time``)."""
    o = cfg.optim
    if o.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)

    def factor(step: int) -> float:
        if step < o.warmup_steps:
            w = (step + 1) / (o.warmup_steps + 1)
            if o.clock == "time":  # a short budget must not spend itself warming up: done at 5 % of it
                w = max(w, min(1.0, clock[0] / 0.05))
            if w < 1.0:
                return w
        if o.schedule == "constant":
            return 1.0
        t = min(1.0, (step - o.warmup_steps) / max(1, cfg.steps - o.warmup_steps))
        if o.clock == "time":
            t = max(t, min(1.0, clock[0]))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _to(x: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(x).to(device, non_blocking=True)
    return t.contiguous(memory_format=channels_last(t.dim() - 2))


def _load_pairs(cfg: TrainConfig) -> list[AnyPair]:
    d = cfg.data
    if not d.root:
        raise FmcInputError("no training data: set data.root (fmc-ij train --data DIR)")
    if d.mode == "isotropic":
        return isotropic_dataset(d.root, d.low or "*.tif*", psf_axial_fwhm=d.psf_axial_fwhm,
                                 psf_lateral_fwhm=d.psf_lateral_fwhm, pmin=d.pmin, pmax=d.pmax)  # fmt: skip
    pairs = load_pairs(d.root, channels=d.channels, low=d.low, high=d.high, pmin=d.pmin, pmax=d.pmax,
                       projection=d.mode == "projection")  # fmt: skip
    return list(stack_channels(pairs, d.channels)) if d.multichannel else list(pairs)


def training_data(pairs: list[AnyPair], cfg: TrainConfig) -> TrainingData:
    """What a model's contract records about its training data: the pairs' axes and voxel size (a 2D model on
    volumes learned the last two), the median raw intensity range of inputs and targets, channels, specimens."""
    parts = [q for p in pairs for q in (p.parts if isinstance(p, StackedPair) else [p])]
    first = parts[0]
    sp = np.array([q.spacing for q in parts if len(q.spacing) == len(first.spacing)], float)
    axes, spacing = first.axes, list(np.median(sp, axis=0))
    varies = bool(np.any(sp.max(0) > 1.05 * sp.min(0)))
    lo_in = np.median([(q.norm_low.lo, q.norm_low.hi) for q in parts], axis=0)
    lo_gt = np.median([(q.norm_high.lo, q.norm_high.hi) for q in parts], axis=0)
    return TrainingData(axes=axes, voxel_size=[float(v) for v in spacing], unit=first.unit,
                        voxel_range=[sp.min(0).tolist(), sp.max(0).tolist()] if varies else None,
                        input_range=[float(v) for v in lo_in], target_range=[float(v) for v in lo_gt],
                        channels=sorted({q.channel for q in parts if q.channel}) if not cfg.data.multichannel
                        else [str(c) for c in cfg.data.channels or []],
                        specimens=sorted({q.specimen for q in parts}), root=cfg.data.root)  # fmt: skip


# -- the loop ---------------------------------------------------------------------------------------------
def train(
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    pairs: list[AnyPair] | None = None,
    overwrite: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> list[TrainResult]:
    """Train ``cfg.ensemble`` models (seeds ``seed``, ``seed + 1``, ...) into ``out`` (or ``out/member_K``).

    Parameters
    ----------
    cfg : TrainConfig
    out : path
        The run folder; must be empty unless ``resume`` or ``overwrite``.
    resume : bool
        Continue from ``checkpoints/last.pt`` (the config saved there wins over ``cfg``).
    pairs : list of TrainPair, optional
        Training data in memory (default: ``cfg.data.root`` opened lazily).
    on_step : callable, optional
        Called with the step number after every optimisation step (tests use it to interrupt a run).
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise FmcInputError(f"{out} exists and is not empty; pass --resume to continue it or --overwrite")
    if resume and (out / "config.yaml").is_file():
        cfg = TrainConfig.load(out / "config.yaml")
    if pairs is None:
        pairs = _load_pairs(cfg)
    train_pairs, val_pairs = split_data(pairs, cfg)
    init_state = None
    if cfg.init and not resume:  # the architecture comes with the weights (a resumed run has both saved)
        init_contract, init_state = load_init(cfg.init)
        cfg = cfg.model_copy(update={"model": init_contract.network})
    n_ch = len(train_pairs[0].channels)
    if (cfg.model.in_channels, cfg.model.out_channels) != (n_ch, n_ch):
        if cfg.init:
            raise FmcInputError(f"the init model takes {cfg.model.in_channels} channel(s) and returns "
                                f"{cfg.model.out_channels}; the data have {n_ch}")  # fmt: skip
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"in_channels": n_ch, "out_channels": n_ch})})
    if cfg.data.multichannel:  # the order the model takes the channels in travels with it
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"channels": train_pairs[0].channels})})
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    dist_info = _init_distributed(device)
    if dist_info.main:
        cfg.save(out / "config.yaml")
    results = []
    for k in range(cfg.ensemble):
        member = cfg.model_copy(update={"seed": cfg.seed + k})
        run = out if cfg.ensemble == 1 else out / f"member_{k}"
        results.append(
            _train_one(
                member, run, train_pairs, val_pairs, device, dist_info, resume, on_step, init_state, volumes=pairs
            )
        )
    return results


def _train_one(
    cfg: TrainConfig,
    out: Path,
    train_pairs: list[AnyPair],
    val_pairs: list[AnyPair],
    device: torch.device,
    dd: _Dist,
    resume: bool,
    on_step: Callable[[int], None] | None,
    init_state: dict[str, torch.Tensor] | None = None,
    volumes: list[AnyPair] | None = None,
) -> TrainResult:
    _setup_torch(cfg, device, dd.world)
    if cfg.data.batch % dd.world:
        raise FmcInputError(f"batch {cfg.data.batch} does not split over {dd.world} processes; use a multiple")
    mcfg = cfg.model.resolve_pool(train_pairs[0].spacing)
    cfg = cfg.model_copy(update={"model": mcfg})
    batches = _patch_batches(train_pairs, cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    if cfg.freeze_encoder:
        freeze_encoder(model)
    model = model.to(device)
    mult = size_multiple(model, mcfg.ndim)
    if any(p % m for p, m in zip(cfg.data.patch, mult)):
        raise FmcInputError(f"patch {cfg.data.patch} must be a multiple of {mult} for this network")
    model = to_channels_last(model, mcfg.ndim)
    guard_bf16_conv3d(model, (mcfg.in_channels, *cfg.data.patch), device, cfg.optim.precision)
    opt = _optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    clock = [0.0]  # fraction of max_minutes used, read by the schedule when optim.clock is "time"
    sched = _scheduler(opt, cfg, clock)
    disc = d_opt = None
    if cfg.gan is not None:
        disc = build_discriminator(cfg.gan.discriminator, mcfg.ndim).to(device)
        d_opt = _optimizer(disc.parameters(), cfg, lr=cfg.gan.d_lr)
    loss_fn = make_loss(cfg.loss, mcfg.probabilistic)
    seen = training_data(train_pairs, cfg)  # what the model's contract records about its data

    step, best, best_step, bad, elapsed0, history = 0, -math.inf, 0, 0, 0.0, []
    run_loss, run_d, n_run, n_d = 0.0, 0.0, 0, 0  # loss sums since the last log row
    ckpt_dir = out / "checkpoints"
    if resume:
        st = load_checkpoint(ckpt_dir / LAST, device)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        if disc is not None:
            disc.load_state_dict(st["disc"])
            d_opt.load_state_dict(st["disc_optimizer"])
        step, best, best_step, bad = st["step"], st["best"], st["best_step"], st["bad"]
        elapsed0, history = st["elapsed"], st["history"]
        run_loss, run_d, n_run, n_d = st["running"]
        set_rng_state(st["rng"])
        if step >= cfg.steps or st.get("stopped"):
            return TrainResult(out, step, best_step, best, st.get("stopped") or "steps", history)

    ddp_model, ddp_disc = model, disc
    if dd.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        from fmc_ij.nn.syncbn import sync_batchnorm

        sync_batchnorm(model)  # BatchNorm over the global batch: the run one process would do
        if disc is not None:
            sync_batchnorm(disc)

        ids = [device.index] if device.type == "cuda" else None
        ddp_model = DDP(model, device_ids=ids)
        if disc is not None:
            ddp_disc = DDP(disc, device_ids=ids)

    share = cfg.data.batch // dd.world
    items = range(dd.rank * share, (dd.rank + 1) * share)
    t_start = time.perf_counter()
    stopped = "steps"

    def state(stop: str | None = None) -> dict[str, Any]:
        s = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "step": step, "best": best, "best_step": best_step, "bad": bad, "history": history,
             "elapsed": elapsed0 + time.perf_counter() - t_start, "rng": rng_state(),
             "config": cfg.model_dump(mode="json"), "stopped": stop, "data": seen.model_dump(mode="json"),
             "running": (run_loss, run_d, n_run, n_d)}  # fmt: skip
        if disc is not None:
            s["disc"], s["disc_optimizer"] = disc.state_dict(), d_opt.state_dict()
        return s

    bar = Bar(cfg.steps, f"train {out.name}", completed=step) if dd.main else None
    with bar if bar is not None else nullcontext():
        while step < cfg.steps:
            x_np, y_np = batches.batch(step, items)
            x, y = _to(x_np, device), _to(y_np, device)
            with autocast(device, cfg.optim.precision):
                if cfg.gan is None:
                    loss = loss_fn(ddp_model(x), y, x)
                    d_loss = None
                else:
                    loss, d_loss = _gan_losses(cfg, ddp_model, disc, ddp_disc, d_opt, x, y, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            if cfg.max_minutes:
                clock[0] = (elapsed0 + time.perf_counter() - t_start) / (60 * cfg.max_minutes)
            if cfg.optim.schedule != "plateau":
                sched.step()
            step += 1
            stats = torch.tensor([loss.item(), d_loss.item() if d_loss is not None else 0.0, float(d_loss is not None)])
            if dd.world > 1:
                dist.all_reduce(stats)
                stats /= dd.world
            run_loss, run_d, n_run = run_loss + float(stats[0]), run_d + float(stats[1]), n_run + 1
            n_d += int(stats[2])
            if not math.isfinite(float(stats[0])):
                raise FmcInputError(f"the loss became {float(stats[0])} at step {step}; lower optim.lr")
            if on_step is not None:
                on_step(step)

            # Rank 0's clock decides for every process; a run cut by the time limit validates its last step too.
            time_up = bool(cfg.max_minutes and elapsed0 + time.perf_counter() - t_start > 60 * cfg.max_minutes)
            if dd.world > 1:
                flag = torch.tensor([float(time_up)])
                dist.broadcast(flag, 0)
                time_up = bool(flag[0])
            stop_now = 2.0 if time_up else 0.0
            if step % cfg.val_every == 0 or step == cfg.steps or time_up:
                row: dict[str, Any] = {"step": step, "time_s": round(elapsed0 + time.perf_counter() - t_start, 2),
                                       "lr": opt.param_groups[0]["lr"], "loss": run_loss / n_run,
                                       "d_loss": run_d / n_d if n_d else None}  # fmt: skip
                run_loss, run_d, n_run, n_d = 0.0, 0.0, 0, 0
                # every process (statistics span all)
                precise_batchnorm(model, batches, items, step, device)
                if dd.main:
                    metrics = validate(model, val_pairs, cfg, device) if val_pairs else {}
                    row.update(metrics)
                    history.append(row)
                    score = _score(metrics) if metrics else -row["loss"]
                    if cfg.optim.schedule == "plateau":
                        sched.step(score)
                    if score > best:
                        best, best_step, bad = score, step, 0
                        save_checkpoint(ckpt_dir / BEST, state())
                        save_model(out / MODEL, model, cfg.model_dump(mode="json"), data=seen, step=step,
                                   metrics=metrics)  # fmt: skip
                    else:
                        bad += 1
                    if cfg.patience and bad >= cfg.patience and not time_up:
                        stop_now = 1.0
                    write_log(out, history, cfg)
                    if bar is not None:
                        bar.update(0, info=_info(row))
            if dd.world > 1:  # rank 0's early-stopping decides for every process
                flag = torch.tensor([stop_now])
                dist.broadcast(flag, 0)
                stop_now = float(flag[0])
            if stop_now:
                stopped = "early-stopping" if stop_now == 1.0 else "time-limit"
            if dd.main and (stop_now or step % cfg.val_every == 0 or step == cfg.steps
                            or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)):  # fmt: skip
                save_checkpoint(ckpt_dir / LAST, state(stopped if stop_now else None))
            if bar is not None:
                bar.update(1, info=None)
            if stop_now:
                break
    if dd.main and not (out / MODEL).exists():
        save_model(out / MODEL, model, cfg.model_dump(mode="json"), data=seen, step=step, metrics={})
    if dd.main:
        _calibrate_saved(out / MODEL, batches, train_pairs, val_pairs, cfg, device, volumes or val_pairs + train_pairs)
    if dd.world > 1:
        dist.barrier()
    return TrainResult(out, step, best_step, best, stopped, history)


def _patch_batches(train_pairs: list[AnyPair], cfg: TrainConfig) -> PatchBatches:
    """The training patches of ``cfg`` (training draws them; calibration measures the same again)."""
    patch = cfg.data.patch if len(cfg.data.patch) == len(train_pairs[0].shape) else [1, *cfg.data.patch]
    if cfg.data.mode == "projection":  # the projection must see whole stacks: the patch spans Z
        zs = sorted({p.shape[0] for p in train_pairs})
        if len(zs) > 1:
            raise FmcInputError(f"projection training needs volumes of one Z size, got {zs}; crop or pad them")
        patch = [zs[0], *patch[1:]]
    return PatchBatches(train_pairs, patch, seed=cfg.seed, fg_fraction=cfg.data.fg_fraction,
                        min_fg=cfg.data.min_fg, augment=cfg.data.augment,
                        flip_axial=cfg.data.flip_axial)  # fmt: skip


def recalibrate(run: str | os.PathLike, device: str = "auto") -> Path:
    """Measure again the calibration of a trained run (``model.pt`` and its training data, as in its config), e.g.
    for a model trained before calibration existed; returns the model file."""
    path = Path(run) / MODEL if Path(run).is_dir() else Path(run)
    cfg = stored_config(read_one(path).training or {})
    pairs = _load_pairs(cfg)
    train_pairs, val_pairs = split_data(pairs, cfg)
    _calibrate_saved(path, _patch_batches(train_pairs, cfg), train_pairs, val_pairs, cfg, resolve_device(device), pairs)
    return path


def _calibrate_saved(path: Path, batches: PatchBatches, train_pairs: list[AnyPair], val_pairs: list[AnyPair],
                     cfg: TrainConfig, device: torch.device, pairs: list[AnyPair]) -> None:  # fmt: skip
    """Measure the saved model's calibration (:mod:`fmc_ij.train.calibrate`) and store it in its contract; the
    per-volume statistics on the whole ``pairs``, validation specimens first."""
    held = {p.specimen for p in val_pairs}
    volumes = [p for p in pairs if p.specimen in held] + [p for p in pairs if p.specimen not in held]
    saved = read_one(path)
    net = saved.networks(device)[0]
    m = saved.contract.network
    cal = calibrate(net, batches, train_pairs, val_pairs, crop=cfg.data.val_crop, ndim=m.ndim,
                    probabilistic=m.probabilistic, output_floor=m.output_floor, device=device,
                    batch=cfg.data.batch, volumes=volumes)  # fmt: skip
    contract = saved.contract.model_copy(update={"calibration": cal})
    write_model(path, net, contract, training=saved.training, **saved.extra)
    best = path.parent / "checkpoints" / BEST  # the same weights as the model: the same contract
    if best.is_file():
        state = load_checkpoint(best)
        state["contract"] = contract.dump()
        save_checkpoint(best, state)


def _gan_losses(cfg, g, disc, ddp_disc, d_opt, x, y, step) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One discriminator update, then the generator loss (Wang et al.); regularisers only while pretraining."""
    gc = cfg.gan
    fake = g(x)
    reg = (
        gc.mse_weight * F.mse_loss(fake, y)
        - gc.ssim_weight * torch.log((1 + ssim_t(fake, y).clamp(-0.999, 1)) / 2).mean()
    )
    if step < gc.pretrain_steps:
        return reg, None
    # Discriminator: real and (detached) fake in one forward pass, so DDP sees one forward per backward.
    d_out = ddp_disc(torch.cat([y, fake.detach()]))
    d_loss = wang_discriminator_loss(d_out[: len(y)], d_out[len(y) :])
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    d_opt.step()
    # Generator: through the bare discriminator (no DDP hook: its gradients are discarded).
    d_fake = disc(fake)
    adv = -torch.log(d_fake.clamp_min(1e-7)).mean()
    return gc.adv_weight * adv + reg, d_loss.detach()


def _info(row: dict[str, Any]) -> str:
    s = f"loss {row['loss']:.4f}"
    if row.get("val_n_ssim") is not None and math.isfinite(row.get("val_n_ssim", float("nan"))):
        s += f"  val N_SSIM {row['val_n_ssim']:+.3f}"
    return s
