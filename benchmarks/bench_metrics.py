"""3D SSIM: fmc_ij.metrics.ssim (torch, tiled, compiled or eager) against skimage, same run, same data.

Each method runs in a fresh process so its peak memory (max RSS above the process's RSS once the two
input volumes exist) is its own.

    python benchmarks/bench_metrics.py [--shape 128,1024,1024] [--methods skimage,eager,compiled]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def make(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.random(shape, dtype=np.float32)
    b = a.copy()
    for z in range(shape[0]):  # plane by plane: no float64 temporary inflates the peak we measure
        b[z] += rng.standard_normal(shape[1:], dtype=np.float32) * np.float32(0.1)
    return a, b


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def child(method: str, shape: tuple[int, ...]) -> None:
    import torch

    from fmc_ij.metrics import ssim

    a, b = make(shape)
    base = rss_kb()
    t = time.perf_counter()
    if method == "skimage":
        from skimage.metrics import structural_similarity

        val = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        first = time.perf_counter() - t
        warm = first
    else:
        engine = "compiled" if method == "compiled" else "eager"
        dtype = torch.float32 if method != "eager64" else torch.float64
        val = ssim(a, b, data_range=1.0, engine=engine, dtype=dtype)
        first = time.perf_counter() - t
        t = time.perf_counter()
        ssim(a, b, data_range=1.0, engine=engine, dtype=dtype)
        warm = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "method": method,
                "ssim": float(val),
                "first_s": first,
                "warm_s": warm,
                "extra_peak_mb": (peak - base) / 1024,
                "input_mb": a.nbytes / 2**20,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="128,1024,1024")
    ap.add_argument("--methods", default="skimage,eager,compiled")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    if args.child:
        child(args.child, shape)
        return
    results = {}
    for m in args.methods.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--shape", args.shape, "--child", m], capture_output=True, text=True, check=True
        )
        results[m] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(results[m]), flush=True)
    ref = results.get("skimage")
    print(
        f"\n3D SSIM on {'x'.join(map(str, shape))} float32 "
        f"(one image = {next(iter(results.values()))['input_mb']:.0f} MB)"
    )
    print(
        f"{'method':10s} {'first s':>8s} {'warm s':>8s} {'x skimage':>10s} "
        f"{'extra peak MB':>14s} {'/ input':>8s} {'|d SSIM|':>10s}"
    )
    for m, r in results.items():
        speed = ref["warm_s"] / r["warm_s"] if ref else float("nan")
        diff = abs(r["ssim"] - ref["ssim"]) if ref else float("nan")
        print(
            f"{m:10s} {r['first_s']:8.2f} {r['warm_s']:8.2f} {speed:10.2f} {r['extra_peak_mb']:14.0f} "
            f"{r['extra_peak_mb'] / r['input_mb']:8.2f} {diff:10.2e}"
        )


if __name__ == "__main__":
    main()
