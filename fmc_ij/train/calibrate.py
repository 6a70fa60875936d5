"""Calibration measured when training ends, stored in the model's contract (:class:`fmc_ij.model_io.Calibration`).

- **Gate statistics**: the summary of the network's deepest activations (per channel mean and spread over a whole
  volume) on training and validation volumes (in domain by definition): their mean and spread, and each volume's
  out-of-distribution score against them. The prediction gate (:mod:`fmc_ij.predict.gate`) trusts the network
  fully up to these scores and not at all well beyond them. Also each volume's structure density and the share of
  its light the network kept: the ranges a new image is compared with.
- **Uncertainty scale**: for a probabilistic model, the factor that makes ``mean +- 1.645 sd`` cover 90 % of the
  validation voxels (the Laplace head is trained on training patches; held-out data is what counts).
"""

from __future__ import annotations

import numpy as np
import torch

from fmc_ij.data.pairs import AnyPair, PatchBatches
from fmc_ij.model_io import Calibration, GateCalibration
from fmc_ij.nn.infer import bottleneck, channel_moments, forward_padded, moments_summary, ood_score, size_multiple
from fmc_ij.norm import kept_share, light_sums, structure_count

#: Training batches whose patches set the centre and spread of the activation summaries, and volumes (centre
#: crops of validation, then training pairs) scored as in domain.
CALIBRATION_BATCHES, IN_DOMAIN_VOLUMES = 16, 12
#: Where calibration batches are numbered (far beyond any run's steps and PreciseBN's batches).
CALIBRATION_BASE = 2**41
#: The two-sided 90 % quantile of a unit Gaussian: mean +- 1.645 sd is a 90 % interval.
Z90 = 1.6449


class _Moments:
    """Collects the channel moments of the network's deepest activations while it runs."""

    def __init__(self, net: torch.nn.Module):
        self.moments: np.ndarray | None = None
        self.samples: list[np.ndarray] = []
        mod = bottleneck(net)
        self.handle = mod.register_forward_hook(self._hook) if mod is not None else None

    def _hook(self, _m: torch.nn.Module, _i: object, out: torch.Tensor) -> None:
        each = [channel_moments(a).cpu().numpy() for a in out]
        self.samples += each
        m = sum(each)
        self.moments = m if self.moments is None else self.moments + m

    def take(self) -> np.ndarray | None:
        m, self.moments, self.samples = self.moments, None, []
        return m

    def close(self) -> None:
        if self.handle is not None:
            self.handle.remove()


def _crop(pair: AnyPair, crop: list[int], multiple: list[int]) -> tuple[slice, ...]:
    shape = pair.shape
    crop = [1] * (len(shape) - len(crop)) + list(crop) if len(crop) < len(shape) else list(crop)[-len(shape) :]
    out = []
    for i, (n, c) in enumerate(zip(shape, crop)):
        m = multiple[i - (len(shape) - len(multiple))] if i >= len(shape) - len(multiple) else 1
        size = max(m, min(n, c) // m * m) if n >= m else n
        lo = (n - size) // 2
        out.append(slice(lo, lo + size))
    return tuple(out)


@torch.no_grad()
def calibrate(
    net: torch.nn.Module,
    batches: PatchBatches,
    train_pairs: list[AnyPair],
    val_pairs: list[AnyPair],
    *,
    crop: list[int],
    ndim: int,
    probabilistic: bool,
    output_floor: float | None,
    device: torch.device,
    batch: int = 4,
    volumes: list[AnyPair] | None = None,
) -> Calibration:
    """Gate statistics and (probabilistic models) the uncertainty scale of a trained ``net`` (eval mode).

    The per-volume statistics (in-domain scores, structure density, kept light) come from ``volumes``, the whole
    pairs (default: the validation then the training pairs; with a region split those are parts of volumes); the
    uncertainty scale from ``val_pairs`` only."""
    was = net.training
    net.eval()
    probe = _Moments(net)
    mult = size_multiple(net, ndim)
    summaries, errs, patches, density, kept = [], [], [], [], []
    try:
        for k in range(CALIBRATION_BATCHES):  # the spread of the summaries over training patches
            x, _ = batches.batch(CALIBRATION_BASE + k, range(batch))
            net(torch.from_numpy(x).to(device))
            patches += [moments_summary(m) for m in probe.samples]
            probe.take()
        whole = list(val_pairs) + list(train_pairs) if volumes is None else list(volumes)
        held = list(val_pairs)[:IN_DOMAIN_VOLUMES] if probabilistic else []
        for pair, held_out in [(p, True) for p in held] + [(p, False) for p in whole[:IN_DOMAIN_VOLUMES]]:
            xc, yc = pair.arrays(_crop(pair, crop, mult))
            planes = ndim == 2 and xc.ndim == 4
            xt = torch.from_numpy(xc).to(device)
            xt = xt.transpose(0, 1) if planes else xt[None]
            out = forward_padded(net, xt, mult, halo=[4 * m for m in mult]).float()
            moments = probe.take()
            if held_out:  # the uncertainty scale: held-out voxels only
                errs.append(_z_errors(out, yc, planes, output_floor))
                continue
            if moments is not None:
                summaries.append(moments_summary(moments))
            density += _density(pair)
            kept += _kept_light(out, xc, planes)
    finally:
        probe.close()
        net.train(was)
    gate = None
    if summaries and patches:
        # Centre and spread from training patches (many, and as varied as the data): a few whole volumes of one
        # study would set a spread so narrow that its next specimen looks foreign.
        ref = np.stack(patches)
        mean, std = ref.mean(0), np.maximum(ref.std(0), 1e-3)
        scores = [ood_score(s, mean, std) for s in summaries]
        gate = GateCalibration(feature_mean=mean.tolist(), feature_std=std.tolist(),
                               in_domain=[float(v) for v in scores if v is not None],
                               foreground=density, kept_light=kept)  # fmt: skip
    scale = None
    if errs:  # the factor that makes mean +- Z90 * scale * sd hold 90 % of held-out voxels
        scale = float(np.quantile(np.concatenate(errs), 0.9) / Z90)
    return Calibration(gate=gate, uncertainty_scale=scale)


def _density(pair: AnyPair) -> list[float]:
    """Structure density of each channel of a whole (normalised) input volume, as the gate measures it."""
    x, _ = pair.arrays(tuple(slice(None) for _ in pair.shape))
    return [structure_count(c) / c.size for c in x]


def _kept_light(out: torch.Tensor, x: np.ndarray, planes: bool) -> list[float]:
    """Per channel, the share of the input's light above the normalised background that the output kept, as the
    gate measures it (none for tasks whose output lies on another grid)."""
    c = x.shape[0]
    o = (out.transpose(0, 1) if planes else out[0])[:c].cpu().numpy()
    if o.shape != x.shape:
        return []
    return [kept_share(*light_sums(x[k], o[k])) for k in range(c)]


def _z_errors(out: torch.Tensor, target: np.ndarray, planes: bool, floor: float | None) -> np.ndarray:
    """|target - mean| / sd per voxel for a probabilistic output (mean, log-scale channels)."""
    c = target.shape[0]
    o = out.transpose(0, 1) if planes else out[0]
    mean, log_b = o[:c], o[c : 2 * c]
    if floor is not None:
        mean = mean.clamp_min(floor)
    sd = torch.exp(log_b.clamp(-10, 10)) * 2**0.5  # the Laplace scale b as a standard deviation
    return (torch.from_numpy(target).to(mean.device) - mean).abs().div(sd).flatten().cpu().numpy()
