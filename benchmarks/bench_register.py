"""Registration against the peers, same run, same pairs with known misregistration.

Data: the benchmark's synthetic light-sheet pairs (``_data.py``, 2048x2048 planes and 128x512x512 volumes), moved
by known shifts up to +-20 px laterally and +-5 px axially (or a known smooth warp) and registered as `fmc-ij
register` does with real pairs. Two kinds of pair per size:

- *known truth*: the fused view and its shifted copy, each with its own Gaussian noise at SNR 20: the answer is
  exactly the applied shift;
- *views*: the shifted single view onto the fused view, a real training pair; their differing blur (and, in 3D,
  the single view's axial asymmetry) makes the best answer differ from the applied shift by up to ~0.002 px
  laterally and ~0.16 px axially, for every method alike.

- Global shift, 2D: fmc-ij ``estimate_shift`` vs scikit-image ``phase_cross_correlation`` in its best
  configuration and NanoPyx ``DriftEstimator``; time (median) and RMS error.
- Global shift, 3D: fmc-ij vs scikit-image (NanoPyx has no 3D registration).
- Elastic, 2D (2048x2048, 5 px shift + 3 px smooth warp): fmc-ij ``register_pair`` (global + block pyramid down
  to 64 px) vs NanoPyx ``ChannelRegistrationEstimator`` (NanoJ's block-wise elastic registration), at its best of
  5 / 10 blocks per axis; time and RMS field error inside the specimen.

    python benchmarks/bench_register.py [--n 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _bench import Row, emit, run_peer
from _data import load
from scipy import ndimage


def shifted(img: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``img`` moved by ``d`` voxels: out(p) = img(p - d), cubic spline, edges continued."""
    return ndimage.shift(img, d, order=3, mode="nearest").astype(np.float32)


def shift_rows(ref: np.ndarray, low: np.ndarray, n: int, peers: list[str], seed: int, kind: str) -> list[Row]:
    """Global shift rows: ``kind`` "views" moves ``low`` onto ``ref``; "known truth" moves a noisy copy of ``ref``."""
    from fmc_ij.register import estimate_shift

    rng = np.random.default_rng(seed)
    span = np.array([5.0] * (ref.ndim - 2) + [20.0, 20.0])
    truth = rng.uniform(-span, span, (n, ref.ndim))
    if kind == "known truth":
        sigma = float(ref.std()) / 20.0  # SNR 20
        src = ref
        ref = (src + rng.normal(0, sigma, src.shape)).astype(np.float32)
        movs = np.stack([shifted(src, d) + rng.normal(0, sigma, src.shape).astype(np.float32) for d in truth])
    else:
        movs = np.stack([shifted(low, d) for d in truth])
    estimate_shift(ref, movs[0])  # warm-up: FFT plans, thread pools
    times, est = [], []
    for m in movs:
        t = time.perf_counter()
        est.append(estimate_shift(ref, m).shift)
        times.append(time.perf_counter() - t)
    ours_t, ours_e = float(np.median(times)), float(np.sqrt(((np.asarray(est) - truth) ** 2).sum(1).mean()))
    dims = "x".join(map(str, ref.shape))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", ref=ref, movs=movs)
        for peer in peers:
            r = run_peer(peer, f"{peer}_job.py", "shift", str(Path(tmp) / "in.npz"))
            err = float(np.sqrt(((np.asarray(r["shifts"]) - truth) ** 2).sum(1).mean()))
            cap = f"global registration {ref.ndim}D, {kind}"
            note = r.get("config", "")
            rows += [Row(cap, f"time, {dims}", "s", ours_t, peer, float(np.median(r["seconds"])), note=note),
                     Row(cap, f"RMS error, {n} shifts", "px", ours_e, peer, err, note=note)]  # fmt: skip
    return rows


def truth_field(g: np.ndarray) -> np.ndarray:
    """The registration field f of a warp ``mov[q] = ref[q + g(q)]``: mov[p + f(p)] = ref[p], i.e. the fixed
    point f(p) = -g(p + f(p))."""
    grid = np.indices(g.shape[1:], dtype=np.float32)
    f = -g.copy()
    for _ in range(8):
        f = -np.stack([ndimage.map_coordinates(c, grid + f, order=1, mode="nearest") for c in g])
    return f


def elastic_rows(seed: int) -> list[Row]:
    from fmc_ij.register import register_pair
    from fmc_ij.synthetic.warp import apply_displacement, random_displacement

    ref, low = load("large/plane_high"), load("large/plane_low")
    rng = np.random.default_rng(seed)
    _, g = random_displacement(ref.shape, rng, shift_px=5.0, elastic_px=3.0, smoothness_px=ref.shape[0] / 3)
    mov = apply_displacement(low, g).astype(np.float32)
    f_true = truth_field(g)
    # Only the specimen can be registered (the background is flat): score inside it, away from the border.
    mask = ndimage.binary_dilation(ndimage.gaussian_filter(ref, 4) > np.percentile(ref, 60), iterations=8)
    mask[:64], mask[-64:], mask[:, :64], mask[:, -64:] = False, False, False, False

    def rms(f: np.ndarray) -> float:
        return float(np.sqrt(((f - f_true) ** 2).sum(0)[mask].mean()))

    c = tuple(slice(n // 2 - 128, n // 2 + 128) for n in ref.shape)
    register_pair(ref[c], mov[c])  # warm-up (the centre: the corners may be empty background)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        res = register_pair(ref, mov)
        times.append(time.perf_counter() - t)
    ours_t = float(np.median(times))
    ours_e = rms(res.field)
    best = None
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", ref=ref, mov=mov, blocks=0, max_shift=0)
        for blocks in (5, 10):
            np.savez(Path(tmp) / "in.npz", ref=ref, mov=mov, blocks=blocks, max_shift=16)
            r = run_peer("nanopyx", "nanopyx_job.py", "elastic", str(Path(tmp) / "in.npz"), str(Path(tmp) / "f.npy"))
            e = rms(np.load(Path(tmp) / "f.npy"))
            if best is None or e < best[1]:
                best = (r["seconds"], e, blocks)
    assert best is not None
    cap, dims = "elastic registration 2D", "x".join(map(str, ref.shape))
    note = (f"NanoPyx at its best of 5/10 blocks per axis ({best[2]}); "
            f"fmc-ij NCC {res.ncc_before:.3f} -> {res.ncc_after:.3f}")  # fmt: skip
    return [Row(cap, f"time, {dims}", "s", ours_t, "nanopyx", best[0], note=note),
            Row(cap, "RMS field error", "px", ours_e, "nanopyx", best[1], note=note)]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3, help="shifted pairs per case")
    a = ap.parse_args()
    rows = []
    for dim, peers in (("plane", ["skimage", "nanopyx"]), ("volume", ["skimage"])):
        high, low = load(f"large/{dim}_high"), load(f"large/{dim}_low")
        for seed, kind in enumerate(("known truth", "views")):
            rows += shift_rows(high, low, a.n, peers, seed=seed, kind=kind)
    rows += elastic_rows(seed=2)
    emit(rows)


if __name__ == "__main__":
    main()
