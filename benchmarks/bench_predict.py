"""Prediction speed and peak memory: fmc-ij's tiled predictor vs a CAREamics-style tiled loop (issue 7's figure;
the real CAREamics and CSBDeep predict with trained weights in ``bench_models.py``).

Network for both: the ~1M-parameter 3D CARE U-Net (depth 2, 32 base filters), random weights (speed does not
depend on them). Input 64x256x256 float32 by default.

- ``fmc-ij``: :func:`fmc_ij.predict.predict_array` with its defaults (receptive-field halo: seam-free) and with
  ``--halo`` context (approximate, faster).
- ``CAREamics-style``: tiles 32x128x128 with overlap 8/32/32, batch 1, as peers.md measured CAREamics, run as
  a plain torch loop (NCDHW, no inference_mode / channels-last), stitched by cropping.

Each method runs in a fresh process so peak RSS (``ru_maxrss``) is its own. Not a test.

    .venv/bin/python benchmarks/bench_predict.py [--shape 64,256,256] [--tile 48,160,160]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from _bench import Row, emit

from fmc_ij.nn.factory import ModelConfig, build_model
from fmc_ij.predict import Predictor, predict_array


def _network() -> tuple[torch.nn.Module, ModelConfig]:
    torch.manual_seed(0)
    mc = ModelConfig(ndim=3, depth=2, base=32).resolve_pool((1.0, 1.0, 1.0))
    return build_model(mc).eval(), mc


def _model() -> Predictor:
    net, mc = _network()
    return Predictor([net], mc)


def _careamics_like(net: torch.nn.Module, img: np.ndarray) -> np.ndarray:
    # The bare network, no Predictor: a Predictor tunes the process's allocator (fmc_ij.nn.infer.return_freed_memory),
    # which CAREamics' process does not.
    tile, ov = (32, 128, 128), (8, 32, 32)
    out = np.zeros(img.shape, np.float32)
    steps = [t - 2 * o for t, o in zip(tile, ov)]
    x = (img - img.mean()) / img.std()
    pad = np.pad(x, [(o, o + t) for o, t in zip(ov, tile)], mode="reflect")
    with torch.no_grad():
        for z in range(0, img.shape[0], steps[0]):
            for y in range(0, img.shape[1], steps[1]):
                for xx in range(0, img.shape[2], steps[2]):
                    blk = pad[z : z + tile[0], y : y + tile[1], xx : xx + tile[2]]
                    pred = net(torch.from_numpy(np.ascontiguousarray(blk))[None, None])[0, 0].numpy()
                    core = pred[ov[0] : ov[0] + steps[0], ov[1] : ov[1] + steps[1], ov[2] : ov[2] + steps[2]]
                    dz, dy, dx = (min(s, n - a) for s, n, a in zip(steps, img.shape, (z, y, xx)))
                    out[z : z + dz, y : y + dy, xx : xx + dx] = core[:dz, :dy, :dx]
    return out


def _one(method: str, shape: tuple[int, ...], tile: list[int] | None, halo: list[int] | None) -> dict:
    torch.set_num_threads(os.cpu_count() or 1)
    img = np.random.default_rng(0).random(shape, dtype=np.float32) * 1000
    p = _network()[0] if method == "careamics-like" else _model()
    t0 = time.perf_counter()
    if method == "careamics-like":
        _careamics_like(p, img)
    elif method in ("gate", "no-gate"):  # what `fmc-ij predict` runs, with and without the safety gate
        from fmc_ij.predict.restore import restore

        restore(p, img, axes="ZYX", gate=method == "gate", tile=tile, halo=halo, progress=False)
    else:
        predict_array(p, img, tile=tile, halo=halo, progress=False)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {"seconds": dt, "mvox_s": float(np.prod(shape)) / dt / 1e6, "peak_mb": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="64,256,256")
    ap.add_argument("--tile", default=None, help="padded tile, e.g. 48,160,160 (default: the predictor's)")
    ap.add_argument("--halo", default="4,16,16", help="context of the fast approximate variant")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    tile = [int(v) for v in a.tile.split(",")] if a.tile else None
    if a.child:
        method, halo = a.child.split(":")
        print(json.dumps(_one(method, shape, tile, [int(v) for v in halo.split(",")] if halo else None)))
        return
    rows = []
    for name, child in (("fmc-ij (seam-free halo)", "fmc:"), (f"fmc-ij (halo {a.halo})", f"fmc:{a.halo}"),
                        ("CAREamics-style loop", "careamics-like:")):  # fmt: skip
        cmd = [sys.executable, __file__, "--shape", a.shape, "--child", child] + (["--tile", a.tile] if a.tile else [])
        res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        rows.append((name, res))
    base = rows[-1][1]
    print(f"input {a.shape}, {os.cpu_count()} cores")
    print(f"{'method':28s} {'s':>7s} {'Mvox/s':>8s} {'peak MB':>8s} {'speed vs peer':>14s}")
    for name, r in rows:
        speed = r["mvox_s"] / base["mvox_s"]
        print(f"{name:28s} {r['seconds']:7.1f} {r['mvox_s']:8.3f} {r['peak_mb']:8.0f} {speed:13.2f}x")
    peer, cap = "CAREamics-style torch loop", f"prediction {a.shape.replace(',', 'x')} (random weights)"
    note = "the ~1M-parameter 3D U-Net (depth 2, 32 filters); the loop: tiles 32x128x128, overlap 8/32/32, batch 1"
    out = []
    for name, r in rows[:-1]:
        out.append(Row(cap, f"throughput, {name}", "Mvox/s", r["mvox_s"], peer, base["mvox_s"], "higher", note))
        out.append(Row(cap, f"peak RSS, {name}", "MiB", r["peak_mb"], peer, base["peak_mb"], note=note))
    gate = {}
    for child in ("no-gate:", "gate:"):  # the gate's cost (issue 23: at most 1.5x the prediction time)
        cmd = [sys.executable, __file__, "--shape", a.shape, "--child", child] + (["--tile", a.tile] if a.tile else [])
        gate[child] = json.loads(
            subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        )
    raw, gated = gate["no-gate:"]["seconds"], gate["gate:"]["seconds"]
    print(f"safety gate: {gated:.1f} s with, {raw:.1f} s without ({gated / raw:.2f}x)")
    out.append(
        Row(
            f"safety gate, prediction {a.shape.replace(',', 'x')}",
            "time with the gate",
            "s",
            gated,
            "its budget: 1.5x the time without",
            1.5 * raw,
            note=f"{gated / raw:.2f}x the prediction without the gate ({raw:.1f} s); random weights",
        )
    )
    emit(out)


if __name__ == "__main__":
    main()
