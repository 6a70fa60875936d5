"""Patch sampling, stored normalisation and anisotropy-aware augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from fmc_ij.data import Normalizer, augment, foreground_weights, sample_patches
from fmc_ij.errors import FmcInputError


def test_normalizer_roundtrip_and_challenge_percentiles():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 100.0, (20, 30, 30)).astype(np.float32)
    n = Normalizer.fit(x)
    lo, hi = np.percentile(x, (2, 99.8))
    assert (n.lo, n.hi) == pytest.approx((lo, hi))
    np.testing.assert_allclose(n.invert(n(x)), x, rtol=1e-5, atol=1e-3)
    flat = Normalizer.fit(np.full((4, 4), 7.0))
    assert flat.span == 1.0 and np.all(flat(np.full(3, 7.0)) == 0)  # a flat image is shifted, never divided by eps
    np.testing.assert_allclose(n(x), (x - lo) / (hi - lo + 1e-6), rtol=1e-5, atol=1e-6)  # = scale_range
    with pytest.raises(FmcInputError, match="NaN"):
        Normalizer.fit(np.array([1.0, np.nan]))


def test_patches_prefer_foreground_and_reject_background():
    target = np.zeros((32, 128, 128), np.float32)
    target[8:24, 90:120, 90:120] = 100.0  # a small bright object in a corner
    fg = foreground_weights(target)
    rng = np.random.default_rng(1)
    corners = sample_patches(target, (16, 32, 32), 200, rng=rng, foreground=fg)
    shares = [fg[c[0] : c[0] + 16, c[1] : c[1] + 32, c[2] : c[2] + 32].mean() for c in corners]
    assert np.mean(np.array(shares) > 0.02) > 0.95  # uniform sampling would hit the object < 15 % of the time
    again = sample_patches(target, (16, 32, 32), 200, rng=np.random.default_rng(1), foreground=fg)
    np.testing.assert_array_equal(corners, again)  # reproducible from the seed
    with pytest.raises(FmcInputError, match="does not fit"):
        sample_patches(target, (64, 32, 32), 1, rng=rng)


def test_augment_keeps_pairs_aligned_and_z_unrotated():
    rng = np.random.default_rng(2)
    a = np.arange(4 * 6 * 6).reshape(4, 6, 6)
    for _ in range(20):
        x, y = augment([a, a * 2], rng)
        np.testing.assert_array_equal(y, 2 * x)
        assert x.shape == a.shape
        assert sorted(np.unique(x[0] // 36)) in ([0], [3])  # Z planes stay whole: flips only, no rotation into Z
    no_rot = [augment([np.arange(12).reshape(3, 4)], rng, lateral_isotropic=False)[0].shape for _ in range(10)]
    assert set(no_rot) == {(3, 4)}


def test_isotropic_volumes_of_one_specimen_stay_on_one_side_of_the_split(tmp_path):
    """In isotropic mode every volume of a specimen (both channels, single view and fused view) is one specimen, so
    none of it is validated on while the rest trains (the file stem used to be the specimen)."""
    from fmc_ij.data import isotropic_dataset, split_by_specimen
    from fmc_ij.io import ImageMeta, imwrite

    rng = np.random.default_rng(0)
    meta = ImageMeta(axes="ZYX", spacing={"Z": 1.0, "Y": 0.25, "X": 0.25}, unit="um")
    for i in range(3):
        for ch in ("nucleus", "membrane"):
            for kind in ("angle", "fused"):
                imwrite(tmp_path / f"image_{i}_{ch}_{kind}.tif", (rng.random((4, 32, 32)) * 100).astype(np.float32),
                        meta)  # fmt: skip
    pairs = isotropic_dataset(tmp_path)
    assert sorted({p.specimen for p in pairs}) == ["image_0", "image_1", "image_2"]
    assert {p.channel for p in pairs} == {"nucleus", "membrane"} and pairs[0].unit in ("um", "µm")
    for seed in range(5):
        train, val = split_by_specimen(pairs, val_fraction=0.34, seed=seed)
        assert not {p.specimen for p in train} & {p.specimen for p in val}
        assert len(val) == 4  # one specimen: two channels x two views
