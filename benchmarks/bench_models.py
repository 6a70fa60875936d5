"""Training and prediction against CAREamics and CSBDeep: the same data, patches, batch and wall-clock budgets.

Every tool trains its own default 3D CARE network on the same 4 synthetic light-sheet pairs (single view -> fused
view, 48x192x192) with patches 32x64x64 and batch 4, for the same wall-clock budgets (60, 240 and 900 s by
default), each with its own defaults otherwise (network, loss, optimiser, normalisation, validation split):
CAREamics and CSBDeep a depth-2 U-Net with 32 first filters (their defaults), fmc-ij its ``care3d`` preset (a
depth-2 U-Net with 16 first filters, nearest-neighbour upsampling, BatchNorm; its learning rate decaying over the
time budget, as ``fmc-ij train --minutes`` does; bf16 autocast on a CPU with AVX512-BF16; validation on a slab of
each of the 4 specimens, since fewer than 10). Then each predicts the held-out 64x256x256 volume in a fresh
process (its own peak RSS, default tiling) and the prediction is scored here, the same way for all, with the Fuse
My Cells N_SSIM against the fused view.

Rows: held-out N_SSIM after each budget; from the run closest to 240 s, training CPU-seconds per patch
(``process_time`` of the training process over the steps after the first two), prediction Mvoxel/s and peak RSS.
What a user gets is quality per CPU-second: the per-patch row compares each tool's default network, not equal
FLOPs (``bench_predict.py`` and ``roofline.py`` compare the same network).

    python benchmarks/bench_models.py [--budgets 60,240,900] [--peers careamics,csbdeep]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _bench import Row, emit, peak_rss_mb, peer_python, run_peer, run_self
from _data import ensure_data, load

PATCH, BATCH = [32, 64, 64], 4
FAST_HALO = "4,16,16"


def child_train(data: Path, out: Path, budget: float) -> None:
    from fmc_ij.train import TrainConfig, train

    marks: list[float] = []
    cfg = TrainConfig.from_preset(
        "care3d", data={"root": str(data / "train"), "low": "low/*.tif", "high": "high/*.tif", "patch": PATCH,
        "batch": BATCH}, steps=10**7, max_minutes=budget / 60, optim={"clock": "time"}, seed=0,
    )  # fmt: skip
    t = time.perf_counter()
    res = train(cfg, out, on_step=lambda s: marks.append(time.process_time()))[0]
    wall = time.perf_counter() - t
    timed = max(1, len(marks) - 2)
    cpu = (marks[-1] - marks[1]) / (timed * BATCH) if len(marks) > 2 else float("nan")
    print(json.dumps({"steps": res.step, "patches": res.step * BATCH, "cpu_s_per_patch": cpu, "train_wall_s": wall}))


def child_predict(run: Path, src: Path, dst: Path, halo: str = "") -> None:
    import tifffile

    from fmc_ij.predict import load_predictor, predict_array

    img = tifffile.imread(src).astype(np.float32)
    p = load_predictor(run)
    t = time.perf_counter()
    pred = predict_array(p, img, halo=[int(v) for v in halo.split(",")] if halo else None, progress=False)
    sec = time.perf_counter() - t
    np.save(dst, np.asarray(pred.image, np.float32))
    print(json.dumps({"seconds": sec, "peak_mb": peak_rss_mb(), "voxels": int(img.size)}))


def mvox(r: dict, run: str = "pred") -> float:
    """Mvoxel/s of a prediction result (``pred_*`` keys; ``fast_*`` for the approximate-halo run)."""
    return r[f"{run}_voxels"] / r[f"{run}_seconds"] / 1e6


def score(pred: np.ndarray) -> float:
    from fmc_ij.metrics import n_ssim

    return float(n_ssim(pred, load("heldout/high"), load("heldout/low")))


def run_tool(tool: str, data: Path, tmp: Path, budget: float, predict_speed: bool) -> dict:
    """Train ``tool`` for ``budget`` seconds, predict the held-out volume, score it (and, for fmc-ij with
    ``predict_speed``, the approximate-halo prediction too)."""
    src = data / "heldout" / "low.tif"
    run, dst = tmp / f"{tool}-{budget:.0f}", tmp / f"{tool}-{budget:.0f}.npy"
    print(f"{tool}: training for {budget:.0f} s, then predicting", flush=True)
    if tool == "fmc-ij":
        tr = run_self("bench_models.py", "--child", "train", str(data), str(run), str(budget))
        pr = run_self("bench_models.py", "--child", "predict", str(run), str(src), str(dst))
    else:
        tr = run_peer(tool, f"{tool}_job.py", "train", str(data), str(run), str(budget))
        pr = run_peer(tool, f"{tool}_job.py", "predict", str(run), str(src), str(dst))
    res = {**tr, **{f"pred_{k}": v for k, v in pr.items()}, "n_ssim": score(np.load(dst))}
    if tool == "fmc-ij" and predict_speed:
        fast = run_self("bench_models.py", "--child", "predict", str(run), str(src), str(dst) + ".fast.npy",
                        FAST_HALO)  # fmt: skip
        fast["max_diff"] = float(np.abs(np.load(str(dst) + ".fast.npy") - np.load(dst)).max())
        res.update({f"fast_{k}": v for k, v in fast.items()})
    print(f"  {json.dumps(res)}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default=os.environ.get("FMC_BENCH_BUDGETS", "60,240,900"),
                    help="training wall-clock seconds per tool, comma-separated (env FMC_BENCH_BUDGETS); the speed "
                         "rows come from the one closest to 240 s")  # fmt: skip
    ap.add_argument("--peers", default="careamics,csbdeep")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *args = a.child
        if kind == "train":
            child_train(Path(args[0]), Path(args[1]), float(args[2]))
        else:
            child_predict(Path(args[0]), Path(args[1]), Path(args[2]), *args[3:])
        return
    data = ensure_data()
    budgets = [float(b) for b in a.budgets.split(",") if b.strip()]
    speed_at = min(budgets, key=lambda b: abs(b - 240))
    tools = ["fmc-ij"]
    for peer in [p for p in a.peers.split(",") if p]:
        try:  # a peer whose venv is missing is reported; the others' rows still count
            peer_python(peer)
            tools.append(peer)
        except SystemExit as e:
            print(f"skipped: {e}", file=sys.stderr, flush=True)
    results: dict[float, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for budget in budgets:
            results[budget] = {t: run_tool(t, data, Path(tmp), budget, budget == speed_at) for t in tools}
    rows = []
    for budget in budgets:
        ours = results[budget]["fmc-ij"]
        for peer in tools[1:]:
            r = results[budget][peer]
            note = (f"steps in {budget:.0f} s: fmc-ij {ours['steps']}, {peer} {r['steps']}; "
                    f"prediction s: {ours['pred_seconds']:.1f} / {r['pred_seconds']:.1f}")  # fmt: skip
            rows.append(Row("quality after equal budget", f"held-out N_SSIM ({budget:.0f} s)", "", ours["n_ssim"],
                            peer, r["n_ssim"], better="gap", note=note))  # fmt: skip
            if budget == speed_at:
                rows += speed_rows(ours, peer, r, note)
    emit(rows)
    if len(tools) <= len([p for p in a.peers.split(",") if p]):
        raise SystemExit("some peers were skipped (see above): run `make bench-peers`")


def speed_rows(ours: dict, peer: str, r: dict, note: str) -> list[Row]:
    """Training CPU time per patch, prediction throughput (seam-free; and with CAREamics' own overlap) and peak
    memory against one peer."""
    rows = [
        Row("training (3D U-Net, each tool's default)", "CPU time per 32x64x64 patch", "CPU-s",
            ours["cpu_s_per_patch"], peer, r["cpu_s_per_patch"], note=note),
        Row("prediction 64x256x256", "throughput (seam-free)", "Mvox/s", mvox(ours), peer, mvox(r), better="higher",
            note=note),
        Row("prediction 64x256x256", "peak RSS (seam-free)", "MiB", ours["pred_peak_mb"], peer, r["pred_peak_mb"],
            note=note),
    ]  # fmt: skip
    if peer == "careamics":  # the same overlap as CAREamics' tiles: 8/32/32, i.e. a 4/16/16 halo
        rows.append(Row("prediction 64x256x256", f"throughput (halo {FAST_HALO}, as CAREamics)", "Mvox/s",
                        mvox(ours, "fast"), peer, mvox(r), better="higher",
                        note=f"max |fast - seam-free| {ours['fast_max_diff']:.2g} (output units); "
                             f"peak RSS {ours['fast_peak_mb']:.0f} MiB"))  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
