"""Networks: shapes, anisotropic pooling, TorchScript (deepImageJ needs it); losses against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fmc_ij.metrics import ssim as metric_ssim
from fmc_ij.nn import (
    UNet,
    WangDiscriminator,
    WangGenerator,
    laplace_nll,
    n_ssim_loss,
    pool_factors,
    ssim,
    wang_discriminator_loss,
    wang_generator_loss,
)


def test_anisotropic_pool_factors():
    assert pool_factors(2, 3, (1.0, 0.4, 0.4)) == [[1, 2, 2], [2, 2, 2]]
    assert pool_factors(2, 3, (3.0, 0.33, 0.33)) == [[1, 2, 2], [1, 2, 2]]
    assert pool_factors(2, 3, (1.0, 1.0, 1.0)) == [[2, 2, 2], [2, 2, 2]]
    assert pool_factors(3, 2) == [[2, 2]] * 3


@pytest.mark.parametrize("ndim,shape", [(2, (1, 1, 32, 48)), (3, (1, 1, 8, 32, 32))])
def test_unet_shapes_and_script(ndim, shape):
    torch.manual_seed(0)
    pool = pool_factors(2, ndim, (1.0, 0.4, 0.4)[-ndim:] if ndim == 3 else None)
    for prob in (False, True):
        net = UNet(ndim, depth=2, base=8, pool=pool, probabilistic=prob).eval()
        x = torch.rand(shape)
        y = net(x)
        assert y.shape == (shape[0], 2 if prob else 1, *shape[2:])
        scripted = torch.jit.script(net)
        torch.testing.assert_close(scripted(x), y)
        # A different size that respects the size multiple also runs scripted (deepImageJ tiles vary).
        other = [s + m for s, m in zip(shape[2:], net.size_multiple())]
        assert scripted(torch.rand(1, 1, *other)).shape[2:] == tuple(other)
    assert UNet(3, pool=pool_factors(2, 3, (1.0, 0.4, 0.4))).size_multiple() == [2, 4, 4]


def test_unet_residual_starts_near_identity():
    net = UNet(2, base=4, residual=True)
    torch.nn.init.zeros_(net.head.weight)
    torch.nn.init.zeros_(net.head.bias)
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(net(x), x)


@pytest.mark.parametrize("ndim,size", [(2, 32), (3, 16)])
def test_wang_gan_shapes_and_script(ndim, size):
    torch.manual_seed(0)
    g = WangGenerator(ndim, base=4, depth=4).eval()
    d = WangDiscriminator(ndim, base=4).eval()
    x = torch.rand(2, 1, *([size] * ndim))
    y = g(x)
    assert y.shape == x.shape
    p = d(y)
    assert p.shape == (2, 1) and bool(((p > 0) & (p < 1)).all())
    torch.testing.assert_close(torch.jit.script(g)(x), y)
    torch.testing.assert_close(torch.jit.script(d)(y), p)


def test_ssim_loss_equals_metric_and_has_gradients():
    rng = np.random.default_rng(0)
    a = rng.random((12, 20, 24))
    b = a + rng.normal(0, 0.1, a.shape)
    ta = torch.tensor(a)[None, None].requires_grad_(True)
    tb = torch.tensor(b)[None, None]
    s = ssim(ta, tb)
    assert float(s) == pytest.approx(metric_ssim(a, b, data_range=1.0), abs=1e-9)
    (1 - s).sum().backward()
    assert ta.grad is not None and float(ta.grad.abs().sum()) > 0


def test_laplace_and_n_ssim_losses():
    y = torch.zeros(1, 1, 4, 4)
    out = torch.cat([torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)], 1)  # mean 1, scale e^0 = 1
    assert float(laplace_nll(out, y)) == pytest.approx(math.log(2.0) + 1.0)
    torch.manual_seed(0)
    gt = torch.rand(2, 1, 24, 24)
    inp = gt + 0.2 * torch.randn_like(gt)
    assert float(n_ssim_loss(inp, gt, inp)) == pytest.approx(0.0, abs=1e-9)  # identity: N_SSIM 0
    assert float(n_ssim_loss(gt, gt, inp)) == pytest.approx(-1.0, abs=1e-6)  # perfect: N_SSIM 1


def test_wang_losses_definition():
    pred = torch.rand(2, 1, 16, 16)
    target = pred.clone()
    d_fake = torch.full((2, 1), 0.25)
    d_real = torch.full((2, 1), 0.8)
    # Perfect prediction: MSE 0, SSIM 1, so L(G) = -log D(G(x)).
    assert float(wang_generator_loss(d_fake, pred, target)) == pytest.approx(-math.log(0.25), rel=1e-5)
    assert float(wang_discriminator_loss(d_real, d_fake)) == pytest.approx(-math.log(0.8) - math.log(0.75), rel=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: UNet(3, depth=2, base=4, pool=pool_factors(2, 3, (1.0, 0.4, 0.4))),
        lambda: UNet(2, depth=2, base=4, kernel=5),
        lambda: WangGenerator(2, base=2, depth=2),
    ],
    ids=["unet3d-anisotropic", "unet2d-k5", "wang2d"],
)
def test_receptive_radius_bounds_the_influence(make):
    """No input voxel beyond the stated radius changes an output voxel; the bound is tight to a pooling cell."""
    torch.manual_seed(0)  # weights drawn here, not at collection: the test must not depend on the test order
    net = make()
    r = net.receptive_radius()
    m = net.size_multiple()
    size = [2 * (ri + mi) + mi - (2 * (ri + mi)) % mi for ri, mi in zip(r, m)]
    x = torch.rand(1, 1, *size, requires_grad=True)
    centre = tuple(s // 2 for s in size)
    net(x)[(0, 0, *centre)].backward()
    nz = np.argwhere(x.grad[0, 0].abs().numpy() > 0)
    reach = np.abs(nz - np.array(centre)).max(0)
    assert (reach <= np.array(r)).all(), (reach, r)
    assert (reach >= np.array(r) - 2 * (np.array(m) - 1)).all(), (reach, r)  # pooling cells are one-sided


def _weights(n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """A loss weight for every output voxel of the whole batch (so every gradient path is exercised)."""
    return torch.arange(n * int(np.prod(shape)), dtype=torch.float32).reshape(n, *shape).sin()


def _global_bn_worker(rank: int, port: int, x: torch.Tensor, out: dict) -> None:
    import torch.distributed as dist

    from fmc_ij.nn.syncbn import sync_batchnorm

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    net = sync_batchnorm(torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3), torch.nn.BatchNorm3d(3)))
    xs = x[2 * rank : 2 * rank + 2].clone().requires_grad_(True)
    y = net(xs)
    (y * _weights(2 * y.shape[0], y.shape[1:])[2 * rank : 2 * rank + 2]).sum().backward()
    for p in net.parameters():
        dist.all_reduce(p.grad)  # what DDP does (sum here; the single process sums over the whole batch)
    out[rank] = (y.detach(), xs.grad, [p.grad for p in net.parameters()], net[1].running_var.clone())
    dist.destroy_process_group()


def test_global_batchnorm_over_two_gloo_processes_equals_one_batchnorm():
    """fmc_ij.nn.syncbn: two processes with half a batch each normalise, back-propagate and track running
    statistics exactly as one BatchNorm over the whole batch (DDP on CPUs, where SyncBatchNorm cannot run)."""
    import socket

    import torch.multiprocessing as mp

    x = torch.randn(4, 2, 6, 7, 8)
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3), torch.nn.BatchNorm3d(3))
    xr = x.clone().requires_grad_(True)
    y = ref(xr)
    (y * _weights(4, y.shape[1:])).sum().backward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_global_bn_worker, args=(port, x, out), nprocs=2)
    got_y = torch.cat([out[0][0], out[1][0]])
    got_gx = torch.cat([out[0][1], out[1][1]])
    torch.testing.assert_close(got_y, y.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_gx, xr.grad, rtol=1e-4, atol=1e-5)
    for g, p in zip(out[0][2], ref.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[0][3], ref[1].running_var, rtol=1e-5, atol=1e-6)


def _bn_unet(depth: int) -> UNet:
    """A BatchNorm U-Net in eval mode whose BatchNorm statistics and scales are not the identity."""
    torch.manual_seed(0)
    net = UNet(3, 1, 1, depth=depth, base=4, norm=True, residual=False).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return net


def test_batchnorm_unet_loads_weights_saved_with_conv_biases():
    """Convolutions before BatchNorm have no bias (BatchNorm cancels it); weights saved by earlier versions, which
    had one, load with the bias folded into the running mean: the same eval-mode output."""
    import copy

    net = _bn_unet(depth=1)
    old = copy.deepcopy(net)  # the earlier layout: a bias on every convolution before a BatchNorm
    for blk in [m for m in old.modules() if hasattr(m, "body")]:
        for i, layer in enumerate(blk.body):
            if isinstance(layer, torch.nn.Conv3d) and isinstance(blk.body[i + 1], torch.nn.BatchNorm3d):
                conv = torch.nn.Conv3d(layer.in_channels, layer.out_channels, layer.kernel_size, padding=layer.padding)
                conv.weight.data.copy_(layer.weight.data)
                conv.bias.data.uniform_(-0.3, 0.3)
                blk.body[i] = conv
    assert any(k.endswith("body.0.bias") for k in old.state_dict())
    x = torch.randn(1, 1, 8, 16, 16)
    fresh = UNet(3, 1, 1, depth=1, base=4, norm=True, residual=False).eval()
    fresh.load_state_dict(old.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), old(x), rtol=1e-5, atol=1e-5)


def test_batchnorm_folds_into_the_convolutions_for_inference():
    """Prediction runs a copy with BatchNorm folded into the preceding convolutions: same output, no BatchNorm
    layers left; the original (what export writes) is untouched."""
    from fmc_ij.nn.infer import fuse_batchnorm

    net = _bn_unet(depth=2)
    fused = fuse_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules())
    x = torch.randn(1, 1, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), net(x), rtol=1e-4, atol=1e-5)


def test_training_precision_is_bf16_only_where_the_hardware_has_it():
    from fmc_ij.nn.infer import autocast, native_bf16
    from fmc_ij.train.loop import make_loss

    cpu = torch.device("cpu")
    conv, x = torch.nn.Conv3d(1, 2, 3, padding=1), torch.randn(1, 1, 4, 8, 8)
    with autocast(cpu, "fp32"):
        assert conv(x).dtype == torch.float32
    with autocast(cpu, "bf16"):
        out = conv(x)
        assert out.dtype == torch.bfloat16
        # the losses sum in float32 whatever the network computed in
        assert make_loss({"mae": 1.0, "ssim": 0.1}, False)(out, x, x).dtype == torch.float32
    with autocast(cpu, "auto"):
        assert conv(x).dtype == (torch.bfloat16 if native_bf16(cpu) else torch.float32)


def test_ssim_loss_is_float32_under_bf16_autocast():
    # Bright, low-contrast patches: in bf16 E[x^2] - E[x]^2 cancels to noise above c2 (SSIM 2.1 or NaN gradients);
    # the loss must equal the float32 one and give finite gradients.
    from fmc_ij.nn.losses import ssim

    g = torch.Generator().manual_seed(0)
    y = torch.rand(8, 1, 4, 16, 16, generator=g) * 0.05 + torch.rand(8, 1, 1, 1, 1, generator=g) * 2
    p = (y + 0.01 * torch.randn(y.shape, generator=g)).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = ssim(p, y)
    s.mean().backward()
    assert s.dtype == torch.float32 and torch.isfinite(p.grad).all()
    torch.testing.assert_close(s, ssim(p.detach(), y), rtol=1e-6, atol=1e-6)
    assert (s <= 1).all()


def test_bf16_weight_gradients_of_two_plane_3d_convolutions_are_exact():
    # oneDNN's bf16 weight gradient of a 3x3x3 convolution on a 2-plane input reads memory it never wrote (1e18 or
    # NaN, in either layout; the gan3d preset's deepest level, and CI's "loss became nan at step 2"). Freed
    # NaN-filled blocks make the garbage show; the guarded convolution must match float64 on the same inputs.
    from fmc_ij.nn.infer import guard_bf16_conv3d, to_channels_last

    torch.manual_seed(0)
    cpu = torch.device("cpu")
    for layout in ("channels_last", "contiguous"):
        net = torch.nn.Sequential(torch.nn.Conv3d(16, 16, 3, padding=1))
        if layout == "channels_last":
            net = to_channels_last(net, 3)
        assert guard_bf16_conv3d(net, (16, 4, 8, 8), cpu, "bf16") == 0
        assert guard_bf16_conv3d(net, (16, 2, 8, 8), cpu, "fp32") == 0
        assert guard_bf16_conv3d(net, (16, 2, 8, 8), cpu, "bf16") == 1
        for _ in range(3):
            junk = [
                torch.full((n,), float("nan"), dtype=dt)
                for n in (512, 4096, 20000, 10**6)
                for dt in (torch.bfloat16, torch.float32)
            ]
            del junk
            x = torch.randn(4, 16, 2, 8, 8)
            net.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = net(x)
            g = torch.randn(y.shape)
            y.backward(g.to(y.dtype))
            w = net[0].weight.detach().double().requires_grad_()
            torch.nn.functional.conv3d(x.double(), w, padding=1).backward(g.to(y.dtype).double())
            assert (net[0].weight.grad.double() - w.grad).abs().max() < 1e-3 * w.grad.abs().max(), layout


def test_presets_guard_exactly_their_two_plane_convolutions():
    # gan3d: 16-plane patches, 3 poolings -> the 2-plane level's 3 convolutions, down and up (6); care3d stops at 4.
    from fmc_ij.nn.factory import build_model
    from fmc_ij.nn.infer import guard_bf16_conv3d, to_channels_last
    from fmc_ij.train import TrainConfig

    for preset, n in (("gan3d", 6), ("care3d", 0)):
        cfg = TrainConfig.from_preset(preset)
        m = cfg.model.resolve_pool((1.0, 1.0, 1.0))
        net = to_channels_last(build_model(m), 3)
        assert guard_bf16_conv3d(net, (m.in_channels, *cfg.data.patch), torch.device("cpu"), "bf16") == n


def test_freed_feature_maps_are_returned_to_the_system():
    # glibc's dynamic threshold: once a 16 MiB mapped block is freed, the next 8 MiB block comes from the heap and
    # stays resident after it is freed (8 MiB here without the setting); with it, it is mapped and returned.
    import os
    import subprocess
    import sys

    # glibc's defaults: a Dask Nanny started earlier in this process sets MALLOC_TRIM_THRESHOLD_ (64 KiB) in
    # os.environ for its workers, and a child inheriting it trims the freed heap top (0 MiB kept without the setting).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def leftover(setting: str) -> tuple[str, float]:
        code = (
            f"{setting}\n"
            "import numpy as np\n"
            "def rss():\n"
            "    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
            "a = np.ones(2**22, np.float32); del a\n"
            "r0 = rss(); b = np.ones(2**21, np.float32); del b\n"
            "print(ok, rss() - r0)\n"
        )
        ok, mib = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                 check=True).stdout.split()  # fmt: skip
        return ok, float(mib)

    on = leftover("from fmc_ij.nn.infer import return_freed_memory; ok = return_freed_memory()")
    if not sys.platform.startswith("linux"):
        assert on[0] == "False"
        return
    off = leftover("ok = None")
    assert on[0] == "True" and on[1] < 1.0
    assert off[1] > 4.0  # the heap kept it: what the setting prevents
