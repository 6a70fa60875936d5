"""SQUIRREL error maps: fmc_ij.squirrel.error_map against NanoPyx's calculate_error_map, same run, same data;
plus NanoJ's own Figure-3 stack (3 x 300x300 vs 60x60, m = 5) next to NanoJ's published figures.

Data: the benchmark's 1024x1024 light-sheet plane, the single view as the reference (diffraction-limited) and the
fused view as the image under test (m = 1). NanoPyx ports the eSRRF variant of the error map (no registration,
no border handling; see peers.md), so it is a speed peer; its RSP is printed beside ours, not scored.
Both times are the median of 3 runs after a warm-up.

    python benchmarks/bench_squirrel.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _bench import ROOT, Row, emit, run_peer
from _data import load

from fmc_ij.squirrel import error_map

REPEAT = 3  # median of 3 for fmc-ij and for NanoPyx (its job times the same way, after its own warm-up)
NANOJ_FIG3 = [(2.0000, 34.12, 0.8657), (2.0765, 29.26, 0.9032), (2.6000, 43.73, 0.7671)]  # sigma, RSE, RSP


def figure3() -> None:
    fig3 = ROOT.parent / "shared" / "data" / "squirrel-fig3"
    if not fig3.is_dir():
        print("NanoJ Figure 3 data not found; skipped")
        return
    from fmc_ij.io import imread

    ref, sr = imread(fig3 / "widefield_reference.tif").data, imread(fig3 / "super_resolution_stack.tif").data
    t = time.perf_counter()
    res = error_map(ref, sr)
    print(f"NanoJ Figure 3 (3 frames, 300x300 vs 60x60, m=5): {time.perf_counter() - t:.2f} s in all")
    for k, (r, w) in enumerate(zip(res, NANOJ_FIG3), 1):
        print(f"  frame {k}: sigma {r.sigma:.4f} (NanoJ {w[0]:.4f})  RSE {r.rse:.2f} ({w[1]:.2f})  "
              f"RSP {r.rsp:.4f} ({w[2]:.4f})")  # fmt: skip


def main() -> None:
    ref, sr = load("plane/low"), load("plane/high")
    error_map(ref[:256, :256], sr[:256, :256])  # warm-up
    times = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        ours = error_map(ref, sr)[0]
        times.append(time.perf_counter() - t)
    dt = sorted(times)[REPEAT // 2]
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", ref=ref, sr=sr)
        peer = run_peer("nanopyx", "nanopyx_job.py", "squirrel", str(Path(tmp) / "in.npz"))
    note = f"RSP fmc-ij {ours.rsp:.4f}, NanoPyx {peer['rsp']:.4f} (RSF sigma {ours.sigma:.2f} px)"
    emit([Row("SQUIRREL error map", "time, 1024x1024, m=1", "s", dt, "nanopyx", peer["seconds"], note=note)])
    figure3()


if __name__ == "__main__":
    main()
