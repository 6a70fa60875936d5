"""CSBDeep 0.8.2 (CARE's own Keras implementation, tensorflow-cpu) as a peer: train a 3D CARE U-Net for a
wall-clock budget, then predict a held-out volume. Run with the csbdeep venv's Python.

    python csbdeep_job.py train DATA OUT BUDGET_S   # DATA/train/{low,high}/*.tif
    python csbdeep_job.py predict OUT IN.tif PRED.npy

Its defaults (percentile normalisation, residual U-Net, MAE, Adam 4e-4, ReduceLROnPlateau) except what the
benchmark fixes for every tool: U-Net depth 2, 32 first filters, 3x3x3 kernels, patches 32x64x64, batch 4,
the time budget (a Keras callback that stops at the first batch past it; patch generation counts against it).
Prediction tiles 2x2x2 as peers.md measured. CPU-seconds per patch: ``process_time`` over the training batches
after the first two.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
from _job import done, peak_mb, train_or_predict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore")


def train(data: Path, out: Path, budget: float) -> None:
    import keras
    from csbdeep.data import RawData, create_patches
    from csbdeep.models import CARE, Config

    t_start = time.perf_counter()
    raw = RawData.from_folder(basepath=str(data / "train"), source_dirs=["low"], target_dir="high", axes="ZYX")
    # ~3x the patches a budget uses: enough variety without the generation eating the budget.
    X, Y, axes = create_patches(raw, patch_size=(32, 64, 64), n_patches_per_image=48, verbose=False)
    X, Y, axes = np.moveaxis(X, 1, -1), np.moveaxis(Y, 1, -1), "SZYXC"  # what load_training_data returns
    n_val = max(4, len(X) // 10)
    X, Y, Xv, Yv = X[n_val:], Y[n_val:], X[:n_val], Y[:n_val]
    net = {"unet_n_depth": 2, "unet_n_first": 32, "unet_kern_size": 3}
    cfg = Config(axes, n_channel_in=1, n_channel_out=1, **net, train_batch_size=4, train_steps_per_epoch=10,
                 train_epochs=100_000, train_tensorboard=False)  # fmt: skip
    model = CARE(cfg, "model", basedir=str(out))

    class Meter(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.batches, self.t0, self.cpu = 0, 0.0, 0.0

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.batches += 1
            if self.batches == 2:
                self.t0 = time.process_time()
            elif self.batches > 2:
                self.cpu = time.process_time() - self.t0
            if time.perf_counter() - t_start > budget:
                self.model.stop_training = True

    meter = Meter()
    model.prepare_for_training()
    model.callbacks.append(meter)
    model.train(X, Y, validation_data=(Xv, Yv))
    wall = time.perf_counter() - t_start
    timed = max(1, meter.batches - 2)
    done({"steps": meter.batches, "patches": meter.batches * 4, "cpu_s_per_patch": meter.cpu / (timed * 4),
          "train_wall_s": wall})  # fmt: skip


def predict(out: Path, src: Path, dst: Path) -> None:
    import tifffile
    from csbdeep.models import CARE

    img = tifffile.imread(src).astype(np.float32)
    model = CARE(None, "model", basedir=str(out))
    t = time.perf_counter()
    pred = model.predict(img, axes="ZYX", n_tiles=(2, 2, 2))
    sec = time.perf_counter() - t
    np.save(dst, np.asarray(pred, np.float32))
    done({"seconds": sec, "peak_mb": peak_mb(), "voxels": int(img.size)})


def main() -> None:
    train_or_predict(train, predict)


if __name__ == "__main__":
    main()
