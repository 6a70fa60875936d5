"""Property-based tests (hypothesis): I/O round trips, tiling equivalence, registration invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmc_ij.io import ImageMeta, imread, imwrite
from fmc_ij.nn.factory import ModelConfig, build_model
from fmc_ij.predict import Predictor, predict_array
from fmc_ij.register import estimate_shift

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

DTYPES = st.sampled_from([np.uint8, np.uint16, np.float32])
SPACING = st.floats(0.05, 5.0, allow_nan=False).map(lambda v: round(v, 4))


@SETTINGS
@given(
    dtype=DTYPES,
    shape=st.tuples(st.integers(1, 6), st.integers(2, 40), st.integers(2, 40)),  # 1-px planes: see the note
    spacing=st.tuples(SPACING, SPACING, SPACING),
    flavour=st.sampled_from(["imagej", "ome", "fmc"]),
    seed=st.integers(0, 2**16),
)
def test_tiff_round_trip(tmp_path_factory, dtype, shape, spacing, flavour, seed):
    rng = np.random.default_rng(seed)
    data = (rng.random(shape) * 200).astype(dtype)
    meta = ImageMeta(axes="ZYX", spacing=dict(zip("ZYX", spacing)), unit="µm", channel="nucleus", study=3)
    path = tmp_path_factory.mktemp("rt") / ("x.ome.tif" if flavour == "ome" else "x.tif")
    imwrite(path, data, meta, flavour=flavour)
    back = imread(path)
    if shape[0] == 1 and flavour != "fmc":  # ImageJ and OME keep no singleton Z: one plane reads back as YX
        data, spacing, axes = data[0], spacing[1:], "YX"
    else:
        axes = "ZYX"
    np.testing.assert_array_equal(back.data, data)
    assert back.dtype == data.dtype and back.meta.axes == axes
    assert back.meta.voxel_size() == pytest.approx(spacing, rel=1e-5)


_NET: dict[int, Predictor] = {}


def _predictor(ndim: int) -> Predictor:
    if ndim not in _NET:
        torch.manual_seed(ndim)
        mc = ModelConfig(ndim=ndim, depth=2, base=4, output_floor=None)
        mc = mc.resolve_pool((1.0, 0.4, 0.4)) if ndim == 3 else mc
        _NET[ndim] = Predictor([build_model(mc).eval()], mc)
    return _NET[ndim]


@settings(max_examples=15, deadline=None)
@given(
    ndim=st.sampled_from([2, 3]),
    size=st.tuples(st.integers(5, 14), st.integers(20, 60), st.integers(20, 60)),
    tile=st.tuples(st.integers(2, 8), st.integers(8, 32), st.integers(8, 32)),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_tiling_never_changes_the_answer(ndim, size, tile, batch, seed):
    p = _predictor(ndim)
    shape, core = size[-ndim:], tile[-ndim:]
    img = (np.random.default_rng(seed).random(shape) * 500).astype(np.float32)
    whole = predict_array(p, img, tile=[n + 128 for n in shape], progress=False).image
    tiled = predict_array(p, img, tile=[c + 2 * r for c, r in zip(core, p.radius)], batch=batch, progress=False)
    assert np.abs(tiled.image - whole).max() <= 1e-4


@settings(max_examples=12, deadline=None)
@given(
    dy=st.floats(-12, 12, allow_nan=False),
    dx=st.floats(-12, 12, allow_nan=False),
    seed=st.integers(0, 2**16),
)
def test_shift_then_register_recovers_the_shift(dy, dx, seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    big = ndimage.gaussian_filter(rng.random((192, 192)), 2.0, mode="wrap")
    k = np.meshgrid(*[np.fft.fftfreq(192)] * 2, indexing="ij")
    moved = np.fft.ifftn(np.fft.fftn(big) * np.exp(2j * np.pi * (k[0] * dy + k[1] * dx))).real
    sl = (slice(32, 160), slice(32, 160))
    ref, mov = big[sl], moved[sl]
    noise = ref.std() / 20
    res = estimate_shift(ref + rng.normal(0, noise, ref.shape), mov + rng.normal(0, noise, ref.shape))
    np.testing.assert_allclose(res.shift, (-dy, -dx), atol=0.05)  # moving[p - d] = ref[p]: the answer is -d
