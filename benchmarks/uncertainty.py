"""Uncertainty that means something, and a gate that finds invented structure (issue 23).

1. **Coverage.** A probabilistic ``care3d`` (Laplace head) is trained on the built-in data for ``--minutes``; its
   uncertainty is recalibrated on the validation split when training ends (:mod:`fmc_ij.train.calibrate`). On a
   held-out specimen, the share of voxels whose fused-view value lies within ``mean +- 1.645 sd`` is the coverage
   of the 90 % interval (goal: 85-95 %), before and after the recalibration.
2. **Hallucinations.** Bright blobs the input does not support are added to the network's prediction of held-out
   specimens; the gate's consistency map (:func:`fmc_ij.predict.gate.weight_map`) should fall there. Reported: the
   share of invented voxels the gate flags when it flags 10 % of the others (detection at a 10 % false-alarm rate),
   and the ROC area.

    python benchmarks/uncertainty.py [--minutes 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
Z90 = 1.6449


def coverage(run: Path, data: Path) -> dict:
    from fmc_ij.io import imread
    from fmc_ij.norm import Normalizer
    from fmc_ij.predict import load_predictor, predict_array

    p = load_predictor(run)
    out = {}
    for scale_name, scale in (("raw", None), ("recalibrated", p.contract.calibration.uncertainty_scale)):
        hits, n = 0, 0
        for f in sorted(data.glob("image_*_angle.tif")):
            x = imread(f).data
            gt = imread(f.with_name(f.name.replace("_angle", "_fused"))).data
            p.contract.calibration.uncertainty_scale = scale
            pred = predict_array(p, x, progress=False)
            g = Normalizer.fit(gt)(gt)
            inside = np.abs(g - pred.image) <= Z90 * pred.uncertainty
            hits, n = hits + int(inside.sum()), n + inside.size
        out[scale_name] = hits / n
    out["scale"] = p.contract.calibration.uncertainty_scale
    return out


def hallucinations(run: Path, data: Path, seed: int = 0) -> dict:
    from fmc_ij.io import imread
    from fmc_ij.predict import gate as G
    from fmc_ij.predict import load_predictor, predict_array

    p = load_predictor(run)
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    for f in sorted(data.glob("image_*_angle.tif")):
        x = imread(f).data
        pred = predict_array(p, x, progress=False)
        y = np.asarray(pred.image).copy()
        blobs = np.zeros(y.shape, np.float32)
        idx = tuple(rng.integers(4, n - 4, 12) for n in y.shape)
        blobs[idx] = 1.0
        blobs = ndimage.gaussian_filter(blobs, (1.0, 2.0, 2.0))
        blobs *= float(np.percentile(y, 99.5)) / max(float(blobs.max()), 1e-9)
        invented = blobs > 0.3 * blobs.max()
        w = G.weight_map(pred.normalizer(x), y + blobs)
        scores.append(1.0 - w.ravel())  # high: distrust
        labels.append(invented.ravel())
    s, lab = np.concatenate(scores), np.concatenate(labels)
    thr = np.quantile(s[~lab], 0.9)  # flags 10 % of the voxels without invented structure
    from scipy.stats import rankdata

    r = rankdata(s)
    npos = lab.sum()
    auc = (r[lab].sum() - npos * (npos + 1) / 2) / (npos * (~lab).sum())
    return {"detection_at_10pct_false_alarm": float((s[lab] > thr).mean()), "roc_auc": float(auc),
            "invented_voxels": int(npos)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--work", type=Path, default=ROOT / ".bench" / "uncertainty")
    a = ap.parse_args()
    from fmc_ij.synthetic import LightSheetConfig, simulate_lightsheet_dataset
    from fmc_ij.train import TrainConfig, train

    cfg_ls = LightSheetConfig(shape=(40, 128, 128))
    if not (a.work / "train").exists():
        simulate_lightsheet_dataset(a.work / "train", n=4, cfg=cfg_ls, seed=3)
        simulate_lightsheet_dataset(a.work / "heldout", n=2, cfg=cfg_ls, seed=4)
    run = a.work / "run"
    if not (run / "model.pt").exists():
        cfg = TrainConfig.from_preset("care3d", data={"root": str(a.work / "train"), "patch": [16, 64, 64],
                                                      "val_crop": [40, 128, 128]},
                                      model={"probabilistic": True}, loss={"laplace": 1.0}, max_minutes=a.minutes,
                                      steps=10**7, optim={"clock": "time"})  # fmt: skip
        train(cfg, run, overwrite=True)
    result = {
        "coverage_90": coverage(run, a.work / "heldout"),
        "hallucinations": hallucinations(run, a.work / "heldout"),
    }
    print(json.dumps(result, indent=1))
    (ROOT / "benchmarks" / "generalisation").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "generalisation" / "uncertainty.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
