"""The prediction-only U-Net (fmc_ij.nn.lean): the same outputs as the U-Net it wraps, with less memory."""

from __future__ import annotations

import pytest
import torch

from fmc_ij.nn.infer import fuse_batchnorm, to_channels_last
from fmc_ij.nn.lean import LeanUNet, _FoldedNearestConv, lean
from fmc_ij.nn.unet import UNet


@pytest.mark.parametrize("upsample", ["nearest", "transposed", "linear"])
@pytest.mark.parametrize(
    "ndim,kernel,pool,shape",
    [
        (3, 3, None, (2, 1, 16, 24, 32)),
        (3, 3, [[1, 2, 2], [2, 2, 2]], (1, 1, 8, 32, 24)),  # anisotropic pooling: one phase along Z first
        (2, 5, None, (2, 1, 36, 20)),  # CARE's 2D kernel: 3 coarse taps per phase
        (2, 3, None, (1, 1, 12, 16)),
    ],
)
def test_the_lean_unet_computes_what_the_unet_does(upsample, ndim, kernel, pool, shape):
    torch.manual_seed(0)
    net = UNet(ndim=ndim, depth=2, base=8, kernel=kernel, norm=True, residual=True, pool=pool, upsample=upsample,
               probabilistic=True, mean_floor=-0.5)  # fmt: skip
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so fusing them matters
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    net.eval()
    x = torch.randn(shape)
    with torch.inference_mode():
        ref = net(x)
        for run in (net, to_channels_last(fuse_batchnorm(net), ndim)):
            lean_net = lean(run)
            assert isinstance(lean_net, LeanUNet)
            xi = x.contiguous(memory_format=torch.channels_last_3d if ndim == 3 else torch.channels_last)
            torch.testing.assert_close(lean_net(xi), ref, rtol=1e-4, atol=1e-4)
    if upsample == "nearest":
        assert all(isinstance(f, _FoldedNearestConv) for f in lean_net.folded)


def test_a_folded_convolution_is_the_convolution_of_the_upsampled_map():
    torch.manual_seed(1)
    w = torch.randn(4, 3, 3, 3, 3, dtype=torch.float64)
    h = torch.randn(1, 3, 5, 6, 7, dtype=torch.float64)
    for factors in ([2, 2, 2], [1, 2, 2], [2, 1, 2]):
        up = torch.nn.functional.interpolate(h, scale_factor=factors, mode="nearest")
        ref = torch.nn.functional.conv3d(up, w, padding=1)
        folded = _FoldedNearestConv(w, factors)
        torch.testing.assert_close(folded(h, torch.contiguous_format), ref)
        # 2 taps per pooled axis instead of 3
        assert list(folded.weight.shape[2:]) == [2 if f == 2 else 3 for f in factors]


def test_training_networks_and_other_architectures_are_left_alone():
    net = UNet(ndim=3, base=4)
    assert lean(net) is net  # train mode: autograd needs the plain graph
    other = torch.nn.Conv3d(1, 1, 3)
    assert lean(other.eval()) is other
