"""scikit-image as a peer: global sub-pixel registration and 3D SSIM. Run with the skimage venv's Python.

    python skimage_job.py shift IN.npz      # ref, movs (stacked); prints shifts d with mov(p) = ref(p - d)
    python skimage_job.py ssim IN.npz       # a, b, data_range; prints the value, seconds, extra peak MiB

Registration uses skimage in its best configuration (peers.md): mean subtracted, a Tukey window (alpha 0.25)
on both images, ``normalization=None`` (plain cross-correlation; the default phase normalisation fails on
images with real edges), ``upsample_factor=100``.
"""

from __future__ import annotations

import sys

import numpy as np
from _job import done, peak_mb, rss_mb, timed


def windowed(img: np.ndarray) -> np.ndarray:
    from scipy.signal.windows import tukey

    w = np.ones((), np.float32)
    for ax, n in enumerate(img.shape):
        w = w * tukey(n, 0.25).astype(np.float32).reshape([n if i == ax else 1 for i in range(img.ndim)])
    return (img - img.mean()) * w


def shift(ref: np.ndarray, mov: np.ndarray) -> np.ndarray:
    from skimage.registration import phase_cross_correlation

    d, _, _ = phase_cross_correlation(windowed(ref), windowed(mov), upsample_factor=100, normalization=None)
    return -np.asarray(d)  # skimage returns the shift that registers mov onto ref


def main() -> None:
    task, path = sys.argv[1], sys.argv[2]
    data = np.load(path)
    if task == "shift":
        ref, movs = data["ref"], data["movs"]
        out = [timed(lambda m=m: shift(ref, m), repeat=1) for m in movs]
        done({"shifts": [o[0].tolist() for o in out], "seconds": [o[1] for o in out],
              "config": "Tukey window + mean subtraction, normalization=None, upsample_factor=100"})  # fmt: skip
    elif task == "ssim":
        from skimage.metrics import structural_similarity

        a, b, rng = data["a"], data["b"], float(data["data_range"])
        base = rss_mb()
        val, sec = timed(lambda: structural_similarity(a, b, data_range=rng, gaussian_weights=True, sigma=1.5,
                                                       use_sample_covariance=False), repeat=1)  # fmt: skip
        done({"ssim": float(val), "seconds": sec, "extra_peak_mb": peak_mb() - base})
    else:
        raise SystemExit(f"unknown task {task}")


if __name__ == "__main__":
    main()
