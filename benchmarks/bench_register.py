"""Global sub-pixel registration: fmc_ij.register.estimate_shift against skimage's phase_cross_correlation
(upsample_factor=100), same run, same pairs with known shifts; plus a full elastic pyramid on 2048x2048.

    python benchmarks/bench_register.py [--n 3] [--skip-3d]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage


def pair(shape: tuple[int, ...], d: np.ndarray, rng: np.random.Generator, snr: float = 20.0):
    """Periodic smooth texture and its copy moved by a known sub-pixel shift (moving[p - d] = ref[p])."""
    big = [n + 64 for n in shape]
    base = ndimage.gaussian_filter(rng.random(big, dtype=np.float32), 2.0, mode="wrap")
    spec = np.fft.fftn(base)
    for ax, n in enumerate(big):
        k = np.fft.fftfreq(n).reshape([n if i == ax else 1 for i in range(len(big))])
        spec *= np.exp(2j * np.pi * k * d[ax])
    moved = np.fft.ifftn(spec).real
    sl = tuple(slice(32, 32 + n) for n in shape)
    a, b = base[sl].astype(np.float32), moved[sl].astype(np.float32)
    s = a.std() / snr
    return a + rng.normal(0, s, shape).astype(np.float32), b + rng.normal(0, s, shape).astype(np.float32)


def run(shape: tuple[int, ...], n: int) -> None:
    from skimage.registration import phase_cross_correlation

    from fmc_ij.register import estimate_shift

    rng = np.random.default_rng(0)
    res = {"fmc-ij": ([], []), "skimage phase": ([], []), "skimage cc": ([], [])}
    for _ in range(n):
        d = rng.uniform(-20, 20, len(shape))
        ref, mov = pair(shape, d, rng)
        for name, fn in (
            ("fmc-ij", lambda ref=ref, mov=mov: estimate_shift(ref, mov).shift),
            ("skimage phase", lambda ref=ref, mov=mov: -phase_cross_correlation(ref, mov, upsample_factor=100)[0]),
            (
                "skimage cc",
                lambda ref=ref, mov=mov: -phase_cross_correlation(ref, mov, upsample_factor=100, normalization=None)[0],
            ),
        ):
            t = time.perf_counter()
            est = fn()
            res[name][0].append(time.perf_counter() - t)
            res[name][1].append(est + d)
    ref_t = np.median(res["skimage phase"][0])
    print(f"\nglobal shift, {'x'.join(map(str, shape))}, {n} pairs, shifts up to +-20 px, SNR 20")
    print(f"{'method':16s} {'median s':>9s} {'speed vs skimage':>17s} {'RMS error px':>13s} {'max error px':>13s}")
    for name, (times, errs) in res.items():
        e = np.asarray(errs)
        print(f"{name:16s} {np.median(times):9.3f} {ref_t / np.median(times):17.2f} "
              f"{np.sqrt((e**2).mean()):13.4f} {np.abs(e).max():13.4f}")  # fmt: skip


def elastic(size: int = 2048) -> None:
    from fmc_ij.register import register_pair
    from fmc_ij.synthetic.warp import apply_displacement, random_displacement

    rng = np.random.default_rng(1)
    img = ndimage.gaussian_filter(rng.random((size, size), dtype=np.float32), 2.0, mode="wrap")
    _, d = random_displacement(img.shape, rng, shift_px=5.0, elastic_px=3.0, smoothness_px=size / 3)
    mov = apply_displacement(img, -d)
    register_pair(img[:256, :256], mov[:256, :256])  # warm-up (thread pools, allocator)
    t = time.perf_counter()
    r = register_pair(img, mov)
    dt = time.perf_counter() - t
    print(f"\nfull pipeline (global + elastic pyramid {[lv.block[0] for lv in r.levels]}) on {size}x{size}: "
          f"{dt:.2f} s; NCC {r.ncc_before:.4f} -> rigid {r.ncc_rigid:.4f} -> elastic {r.ncc_after:.4f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--skip-3d", action="store_true")
    args = ap.parse_args()
    run((2048, 2048), args.n)
    if not args.skip_3d:
        run((128, 512, 512), args.n)
    elastic()


if __name__ == "__main__":
    main()
