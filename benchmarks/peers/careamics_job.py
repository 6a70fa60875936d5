"""CAREamics 0.3.5 as a peer: train a CARE 3D U-Net for a wall-clock budget, then predict a held-out volume.
Run with the careamics venv's Python (torch CPU + a torchvision stand-in, see setup.sh).

    python careamics_job.py train DATA OUT BUDGET_S   # DATA/train/{low,high}/*.tif
    python careamics_job.py predict OUT IN.tif PRED.npy

Its defaults except what the benchmark fixes for every tool: U-Net depth 2, 32 first filters (CAREamics'
default too), patches 32x64x64, batch 4, the time budget (Lightning's ``max_time``). CPU-seconds per patch are
the main process's ``process_time`` over the training batches after the first two (its one data-loader worker
is a separate process, not counted).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import tifffile
from _job import done, peak_mb, train_or_predict

warnings.filterwarnings("ignore")


def train(data: Path, out: Path, budget: float) -> None:
    import torch
    from careamics import CAREamist
    from careamics.config import create_advanced_care_config
    from lightning.pytorch.callbacks import Callback

    torch.set_num_threads(torch.get_num_threads())
    low = np.stack([tifffile.imread(p) for p in sorted((data / "train" / "low").glob("*.tif"))]).astype(np.float32)
    high = np.stack([tifffile.imread(p) for p in sorted((data / "train" / "high").glob("*.tif"))]).astype(np.float32)
    secs = int(budget)
    cfg = create_advanced_care_config(
        experiment_name="bench", data_type="array", axes="SZYX", patch_size=[32, 64, 64], batch_size=4,
        num_epochs=100_000, seed=1,
        trainer_params={"max_epochs": 100_000, "max_time": f"00:00:{secs // 60:02d}:{secs % 60:02d}"},
        model_params={"depth": 2, "num_channels_init": 32},
    )  # fmt: skip

    class Meter(Callback):
        def __init__(self) -> None:
            self.batches, self.t0, self.cpu = 0, None, 0.0

        def on_train_batch_end(self, *args, **kwargs) -> None:
            self.batches += 1
            if self.batches == 2:
                self.t0 = time.process_time()
            elif self.batches > 2:
                self.cpu = time.process_time() - self.t0

    meter = Meter()
    t = time.perf_counter()
    cm = CAREamist(cfg, work_dir=out, callbacks=[meter], enable_progress_bar=False)
    cm.train(train_data=low, train_data_target=high)
    wall = time.perf_counter() - t
    ckpts = sorted((out).rglob("*last.ckpt"), key=lambda p: p.stat().st_mtime)
    (out / "checkpoint.txt").write_text(str(ckpts[-1]))
    timed = max(1, meter.batches - 2)
    done({"steps": meter.batches, "patches": meter.batches * 4, "cpu_s_per_patch": meter.cpu / (timed * 4),
          "train_wall_s": wall})  # fmt: skip


def predict(out: Path, src: Path, dst: Path) -> None:
    from careamics import CAREamist

    img = tifffile.imread(src).astype(np.float32)
    cm = CAREamist(checkpoint_path=(out / "checkpoint.txt").read_text().strip(), work_dir=out / "predict",
                   enable_progress_bar=False)  # fmt: skip
    t = time.perf_counter()
    # A model trained on SZYX needs the S axis at prediction (peers.md); tiles and overlap as peers.md measured.
    pred = cm.predict(img[None], axes="SZYX", tile_size=(32, 128, 128), tile_overlap=(8, 32, 32), batch_size=1)
    sec = time.perf_counter() - t
    arr = np.asarray(pred[0] if isinstance(pred, (list, tuple)) else pred)
    while isinstance(arr, np.ndarray) and arr.dtype == object:
        arr = np.asarray(arr[0])
    np.save(dst, np.squeeze(arr).astype(np.float32))
    done({"seconds": sec, "peak_mb": peak_mb(), "voxels": int(img.size)})


def main() -> None:
    train_or_predict(train, predict)


if __name__ == "__main__":
    main()
