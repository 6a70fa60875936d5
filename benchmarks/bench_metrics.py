"""3D SSIM: fmc_ij.metrics.ssim (torch, tiled) against scikit-image's structural_similarity, same run, same data.

Data: the benchmark's held-out light-sheet pair (single view vs fused view, 64x256x256) tiled 2x2 laterally to
64x512x512 float32 (64 MiB an image). Both use the Gaussian window (sigma 1.5, population covariance) and the
same data range. Each method runs in a fresh process, so its extra peak memory (max RSS above the RSS once the
two volumes are loaded) is its own. Times are warm (after one call).

    python benchmarks/bench_metrics.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _bench import Row, emit, peak_rss_mb, rss_mb, run_peer, run_self
from _data import load


def volumes() -> tuple[np.ndarray, np.ndarray, float]:
    a, b = (np.tile(load(f"heldout/{k}"), (1, 2, 2)) for k in ("high", "low"))
    return a, b, float(a.max() - a.min())


def child() -> None:
    from fmc_ij.metrics import ssim

    a, b, rng = volumes()
    base = rss_mb()
    ssim(a, b, data_range=rng)  # warm-up (and compilation where the engine compiles)
    t = time.perf_counter()
    val = ssim(a, b, data_range=rng)
    print(json.dumps({"ssim": float(val), "seconds": time.perf_counter() - t, "extra_peak_mb": peak_rss_mb() - base}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    if ap.parse_args().child:
        child()
        return
    ours = run_self("bench_metrics.py", "--child")
    a, b, rng = volumes()
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", a=a, b=b, data_range=rng)
        del a, b
        peer = run_peer("skimage", "skimage_job.py", "ssim", str(Path(tmp) / "in.npz"))
    note = f"SSIM {ours['ssim']:.6f} (skimage {peer['ssim']:.6f}); 64x512x512 float32"
    emit([Row("3D SSIM", "time, 64x512x512", "s", ours["seconds"], "skimage", peer["seconds"], note=note),
          Row("3D SSIM", "extra peak memory", "MiB", ours["extra_peak_mb"], "skimage", peer["extra_peak_mb"],
              note=note)])  # fmt: skip


if __name__ == "__main__":
    main()
