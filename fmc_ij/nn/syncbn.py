"""BatchNorm whose training statistics span every process of a distributed run, on any backend.

PyTorch's ``SyncBatchNorm`` runs on GPUs only; on CPUs (gloo) each process would normalise with the statistics
of its own share of the batch, so a distributed run would no longer train the model one process trains with the
same global batch. :func:`sync_batchnorm` swaps every BatchNorm for :class:`GlobalBatchNorm`, which all-reduces
the per-channel sums (differentiably) and normalises with the global-batch mean and (biased) variance, updating
the running statistics as ``nn.BatchNorm`` does (unbiased variance). The parameters and buffers are the same
objects under the same names, so optimisers and state dicts are unaffected.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce

_BN = nn.modules.batchnorm._BatchNorm


class GlobalBatchNorm(_BN):
    """Training-mode batch normalisation over the global batch of all processes (eval mode: running stats)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 3:
            raise ValueError(f"expected (N, C, *spatial) input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return super().forward(x)
        c, dims = x.shape[1], [0, *range(2, x.dim())]
        n = torch.full((1,), float(x.numel() // c), device=x.device, dtype=x.dtype)
        stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), n]))
        count = stats[-1]
        mean = stats[:c] / count
        var = (stats[c : 2 * c] / count - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                # momentum None: the cumulative average, as nn.BatchNorm does
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * unbiased)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm replaced by a :class:`GlobalBatchNorm` on the same parameters (in place)."""
    for name, child in module.named_children():
        if isinstance(child, _BN) and not isinstance(child, GlobalBatchNorm):
            g = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            g.weight, g.bias = child.weight, child.bias
            g.running_mean, g.running_var = child.running_mean, child.running_var
            g.num_batches_tracked = child.num_batches_tracked
            g.train(child.training)
            setattr(module, name, g)
        else:
            sync_batchnorm(child)
    return module
