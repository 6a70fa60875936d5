"""CPU-seconds per training patch: fmc-ij's training loop vs a plain PyTorch loop with CAREamics' defaults.

Network for both: 3D CARE U-Net, depth 2, 32 base filters, 3x3x3 kernels; patches 32x64x64, batch 4, L1 loss.

- ``fmc-ij``: :func:`fmc_ij.train.train` itself (patch sampling, augmentation, AdamW, schedule, gradient
  clipping included), no BatchNorm, channels-last memory layout.
- ``plain torch, CAREamics defaults``: the same U-Net with BatchNorm, NCDHW layout, Adam lr 1e-4, fed the same
  patches (peers.md measured CAREamics itself at 2 % above such a loop).
- ``CSBDeep`` (optional, ``--csbdeep-python`` pointing at a Python with tensorflow-cpu and csbdeep): CARE's own
  Keras implementation, same network and patch size.

CPU-seconds are ``time.process_time`` (all threads) over the timed steps, after warm-up steps. Not a test.

    .venv/bin/python benchmarks/bench_train.py [--steps 6] [--threads 2] [--csbdeep-python /tmp/tfenv/bin/python]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from fmc_ij.data import PatchBatches, open_pair
from fmc_ij.nn import UNet
from fmc_ij.train import TrainConfig, train

PATCH, BATCH = (32, 64, 64), 4


def _pairs(seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(2):
        high = np.zeros((48, 128, 128), np.float32)
        idx = tuple(rng.integers(0, s, 400) for s in high.shape)
        high[idx] = 1.0
        from scipy import ndimage

        high = ndimage.gaussian_filter(high, 1.5) * 100
        low = ndimage.gaussian_filter(high, (3, 1.5, 1.5)) + rng.normal(0, 1, high.shape).astype(np.float32)
        out.append(open_pair(low, high, name=f"vol{i}", axes="ZYX", spacing=(1.0, 1.0, 1.0)))
    return out


def bench_ours(pairs, steps: int, warmup: int, threads: int) -> float:
    cfg = TrainConfig.from_preset(
        "care3d", model={"base": 32, "depth": 2}, data={"patch": list(PATCH), "batch": BATCH, "val_fraction": 0},
        loss={"mae": 1.0}, steps=warmup + steps, val_every=10**6, threads=threads,
    )  # fmt: skip
    marks: dict[int, float] = {}

    def on_step(s: int) -> None:
        marks[s] = time.process_time()

    with tempfile.TemporaryDirectory() as d:
        train(cfg, d, pairs=pairs, on_step=on_step)
    return (marks[warmup + steps] - marks[warmup]) / (steps * BATCH)


def bench_plain(pairs, steps: int, warmup: int, threads: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = UNet(3, 1, 1, depth=2, base=32, kernel=3, residual=False, norm=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    batches = PatchBatches(pairs, PATCH, seed=0)
    t0 = 0.0
    for s in range(warmup + steps):
        if s == warmup:
            t0 = time.process_time()
        x, y = (torch.from_numpy(a) for a in batches.batch(s, range(BATCH)))
        opt.zero_grad()
        torch.nn.functional.l1_loss(net(x), y).backward()
        opt.step()
    return (time.process_time() - t0) / (steps * BATCH)


CSBDEEP = r"""
import os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads({threads})
from csbdeep.models import CARE, Config
steps, warmup = {steps}, {warmup}
rng = np.random.default_rng(0)
X = rng.normal(size=(4 * (steps + warmup), 32, 64, 64, 1)).astype(np.float32)
Y = X + 0.1 * rng.normal(size=X.shape).astype(np.float32)
cfg = Config("ZYXC", 1, 1, unet_n_depth=2, unet_n_first=32, unet_kern_size=3, train_batch_size=4,
             train_loss="mae", train_tensorboard=False)
m = CARE(cfg, None, basedir=None)
m.keras_model.compile(optimizer="adam", loss="mae")
m.keras_model.fit(X[: 4 * warmup], Y[: 4 * warmup], batch_size=4, epochs=1, verbose=0)
t0 = time.process_time()
m.keras_model.fit(X[4 * warmup :], Y[4 * warmup :], batch_size=4, epochs=1, verbose=0)
print((time.process_time() - t0) / (4 * steps))
"""


def bench_csbdeep(python: str, steps: int, warmup: int, threads: int) -> float:
    code = CSBDEEP.format(steps=steps, warmup=warmup, threads=threads)
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--csbdeep-python", default=None)
    a = ap.parse_args()
    os.environ.setdefault("FMC_IJ_PROGRESS", "0")
    pairs = _pairs()
    rows = [("fmc-ij (train loop)", bench_ours(pairs, a.steps, a.warmup, a.threads)),
            ("plain torch, CAREamics defaults", bench_plain(pairs, a.steps, a.warmup, a.threads))]  # fmt: skip
    if a.csbdeep_python:
        rows.append(("CSBDeep (Keras / TF CPU)", bench_csbdeep(a.csbdeep_python, a.steps, a.warmup, a.threads)))
    ours = rows[0][1]
    print(f"patch {'x'.join(map(str, PATCH))}, batch {BATCH}, {a.threads} threads, {a.steps} timed steps")
    print(f"{'method':34s} {'CPU-s/patch':>12s} {'ratio to fmc-ij':>16s}")
    for name, v in rows:
        print(f"{name:34s} {v:12.3f} {v / ours:15.2f}x")
    print("reference (peers.md, another machine of this class): CAREamics 2.06, CSBDeep 0.92 CPU-s/patch")


if __name__ == "__main__":
    sys.exit(main())
