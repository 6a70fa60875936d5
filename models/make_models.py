"""Build the demo bundles in models/: one care3d per channel, trained on the built-in synthetic light-sheet data.

    make models            # or: .venv/bin/python models/make_models.py --minutes 5

Each bundle is exported with fmc-ij's exporter (tested with bioimage.io's model test before it is written)
and its README states the N_SSIM measured on held-out synthetic specimens (another seed).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from fmc_ij.evaluate import EvalConfig, evaluate_dataset
from fmc_ij.export import export
from fmc_ij.io import imread
from fmc_ij.predict import load_predictor, predict_files
from fmc_ij.synthetic.dataset import simulate_lightsheet_dataset
from fmc_ij.train import TrainConfig, train

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--work", default="build/models")
    a = ap.parse_args()
    work = Path(a.work)
    data, test = work / "train", work / "test"
    if not data.exists():
        simulate_lightsheet_dataset(data, n=6, seed=0)
    if not test.exists():
        simulate_lightsheet_dataset(test, n=2, seed=1)
    for ch in ("nucleus", "membrane"):
        run = work / f"care3d-{ch}"
        cfg = TrainConfig.from_preset("care3d", data={"root": str(data), "channels": [ch]}, max_minutes=a.minutes)
        train(cfg, run, overwrite=True)
        preds = work / f"pred-{ch}"
        shutil.rmtree(preds, ignore_errors=True)
        predict_files(load_predictor(run), [test], preds, pattern=f"*_{ch}_angle.tif", progress=False)
        summary = evaluate_dataset(preds, test, test, work / f"eval-{ch}", EvalConfig(iou=False))
        scores = [float(r["n_ssim"]) for r in summary["rows"]]
        notes = (f"Held-out synthetic specimens ({len(scores)}, seed 1): N_SSIM mean {np.mean(scores):.3f} "
                 f"({', '.join(f'{s:.3f}' for s in scores)}); trained {a.minutes:g} min on 2 CPU cores.")  # fmt: skip
        sample = imread(test / f"image_0_{ch}_angle.tif").data
        target = imread(test / f"image_0_{ch}_fused.tif").data
        export(run, HERE / f"fmc-ij-care3d-{ch}.zip", name=f"fmc-ij care3d {ch} (synthetic demo)",
               sample=sample, target=target, notes=notes, authors=["fmc-ij developers"])  # fmt: skip
        print(json.dumps({"channel": ch, "n_ssim": scores}))


if __name__ == "__main__":
    main()
