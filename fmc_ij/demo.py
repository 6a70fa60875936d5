"""The main job end to end on built-in data: ``fmc-ij demo``.

simulate (both channels, misregistered single views) -> register -> train ``care3d`` -> predict a held-out
specimen with test-time flips (their spread is the uncertainty) -> evaluate against the identity baseline ->
SQUIRREL error maps of prediction and fused ground truth against the input -> export and test a bioimage.io
bundle -> ``report.html``.

The number of training steps follows from the time budget at a fixed rate (:data:`STEPS_PER_MINUTE`, measured
on 2 CPU cores), so the same seed and budget give the same steps and the same metrics on any machine; 1.5 times
the budget is a hard time limit, and a run that hits it says so (its metrics then depend on the speed).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmc_ij.errors import FmcInputError
from fmc_ij.io import atomic_path, imread, write_text_atomic

#: care3d steps per minute of budget, with validation, on 2 CPU cores (measured 2026-11 on AMD EPYC, AVX2).
STEPS_PER_MINUTE = 50
#: Training stops at this multiple of the budget: a machine up to that much slower still runs every step (same
#: metrics); a slower one stops early and says so.
TIME_LIMIT_FACTOR = 1.5
MANIFEST = "demo.json"
SHAPE = (48, 192, 192)
DEMO_NOTE = "Trained by `fmc-ij demo` on built-in synthetic light-sheet data: a demonstration, not for real data."


@dataclass
class DemoResult:
    """What a demo run produced (also written to ``demo.json``)."""

    out: Path
    report: Path
    bundle: Path
    metrics: dict[str, dict[str, float]]
    steps: int
    stopped_by_time_limit: bool
    timings_s: dict[str, float] = field(default_factory=dict)


def demo_steps(minutes: float) -> int:
    """Training steps for a budget of ``minutes`` (deterministic; at least 20)."""
    return max(20, int(round(minutes * STEPS_PER_MINUTE)))


def run_demo(
    out: str | os.PathLike = "demo-out",
    *,
    minutes: float = 6.0,
    seed: int = 0,
    steps: int | None = None,
    n_train: int = 4,
    shape: tuple[int, int, int] = SHAPE,
    device: str = "auto",
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run the whole pipeline into ``out`` and write ``out/report.html``.

    Parameters
    ----------
    out : path
        Output folder; must be empty unless ``overwrite``.
    minutes : float
        Training budget; sets the number of steps (``minutes * STEPS_PER_MINUTE``); training stops at
        ``TIME_LIMIT_FACTOR * minutes`` whatever the steps.
    seed : int
        Seeds the data, the split, the initialisation and the patches: the same seed gives the same metrics.
    steps : int, optional
        Training steps (overrides the budget's).
    n_train : int
        Specimens to simulate for training and validation (two channels each); one more is held out.
    shape : (int, int, int)
        ZYX size of each simulated volume (voxel size 1.0 x 0.4 x 0.4 µm).
    """
    from fmc_ij.evaluate import EvalConfig, evaluate_dataset
    from fmc_ij.export import export
    from fmc_ij.predict import load_predictor, predict_files
    from fmc_ij.register import register_dataset
    from fmc_ij.run_report import run_report
    from fmc_ij.synthetic import LightSheetConfig, simulate
    from fmc_ij.train import TrainConfig, train

    out = Path(out)
    if minutes <= 0:
        raise FmcInputError(f"--minutes {minutes}: give a positive training budget")
    if n_train < 2:
        raise FmcInputError(f"n_train {n_train}: the demo needs 2 or more training specimens (one validates)")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FmcInputError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    n_steps = steps if steps is not None else demo_steps(minutes)
    timings: dict[str, float] = {}
    total = 8

    def stage(k: int, name: str, fn: Callable[[], Any]) -> Any:
        log(f"[{k}/{total}] {name}")
        t0 = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        return result

    ls = LightSheetConfig(shape=tuple(int(s) for s in shape))  # type: ignore[arg-type]
    train_dir, heldout = out / "data" / "train", out / "data" / "heldout"
    stage(1, "simulate", lambda: (
        simulate(train_dir, "lightsheet", n=n_train, seed=seed, cfg=ls, misregister=True, overwrite=overwrite),
        simulate(heldout, "lightsheet", n=1, seed=seed + 1000, cfg=ls, overwrite=overwrite),
    ))  # fmt: skip
    stage(2, "register", lambda: register_dataset(train_dir, out / "registered", overwrite=overwrite))
    cfg = TrainConfig.from_preset(
        "care3d",
        seed=seed,
        steps=n_steps,
        val_every=max(10, n_steps // 4),
        max_minutes=TIME_LIMIT_FACTOR * minutes,
        deterministic=True,
        device=device,
        # Registration crops a few voxels of border; patches must fit what is left (multiples of the pooling).
        data={
            "root": str(out / "registered"),
            "val_crop": list(shape),
            "patch": [min(p, (s - 8) // 4 * 4) for p, s in zip((16, 64, 64), shape)],
        },  # fmt: skip
    ).with_overrides({"name": "fmc-ij-demo"})
    result = stage(3, "train", lambda: train(cfg, out / "run", overwrite=overwrite)[0])
    predictor = load_predictor(out / "run", device=device)
    predictor.tta = True  # the spread over flips is the uncertainty map
    stage(4, "predict", lambda: predict_files(predictor, [heldout], out / "predictions", pattern="*_angle.tif"))
    summary = stage(5, "evaluate", lambda: evaluate_dataset(
        out / "predictions", heldout, heldout, out / "eval", EvalConfig(iou=False)
    ))  # fmt: skip
    stage(6, "squirrel", lambda: squirrel_volumes(out / "predictions", heldout, out / "squirrel", device=device))
    bundle = out / "bundle" / "fmc-ij-demo.zip"
    first = sorted(heldout.glob("*_angle.tif"))[0]
    stage(7, "export", lambda: export(
        out / "run", bundle, name="fmc-ij-demo", sample=imread(first).data,
        target=imread(first.with_name(first.name.replace("_angle", "_fused"))).data,
        notes=DEMO_NOTE,
    ))  # fmt: skip
    metrics = {
        ch: {
            "n_ssim": s["all"]["n_ssim"]["mean"],
            "ssim_input": s["all"]["ssim_input"]["mean"],
            "ssim_pred": s["all"]["ssim_pred"]["mean"],
            "psnr_input": s["all"]["psnr_input"]["mean"],
            "psnr_pred": s["all"]["psnr"]["mean"],
        }
        for ch, s in summary.items()
        if ch != "rows"
    }
    res = DemoResult(
        out=out,
        report=out / "report.html",
        bundle=bundle,
        metrics=metrics,
        steps=int(result.step),
        stopped_by_time_limit=result.stopped == "time-limit",
        timings_s=timings,
    )
    manifest = {
        "seed": seed,
        "minutes": minutes,
        "steps_planned": n_steps,
        **{k: v for k, v in asdict(res).items() if k not in ("out", "report", "bundle")},
        "paths": {
            "train_data": "data/train",
            "heldout": "data/heldout",
            "registered": "registered",
            "run": "run",
            "predictions": "predictions",
            "eval": "eval",
            "squirrel": "squirrel",
            "bundle": "bundle/fmc-ij-demo.zip",
        },  # fmt: skip
        "bundle_test": "passed",  # export refuses to write a bundle that fails bioimageio.core's test_model
    }
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    stage(8, "report", lambda: run_report(out))
    write_text_atomic(out / MANIFEST, json.dumps({**manifest, "timings_s": timings}, indent=2) + "\n")
    return res


def squirrel_volumes(
    pred_dir: Path, gt_dir: Path, out: Path, *, device: str = "auto", pattern: str = "*_angle.tif"
) -> list[dict[str, Any]]:
    """SQUIRREL error maps (3D, anisotropic RSF) of each prediction and of its fused ground truth against the
    single-view input: a prediction that is more consistent with the input than the ground truth is, or much
    less, shows where the network invented or lost structure. Writes ``squirrel.json`` and ``NAME.npz``."""
    from fmc_ij.squirrel import error_map_3d

    rows = []
    dev = None if device == "auto" else device
    for inp_path in sorted(gt_dir.glob(pattern)):
        pred_path = pred_dir / inp_path.name
        if not pred_path.is_file():
            continue
        inp = imread(inp_path).data
        gt = imread(inp_path.with_name(inp_path.name.replace("_angle", "_fused"))).data
        maps = {}
        for which, img in (("prediction", imread(pred_path).data), ("ground truth", gt)):
            row: dict[str, Any] = {"name": inp_path.name.split(".")[0], "image": which}
            if float(img.min()) == float(img.max()):  # an under-trained model can output one value everywhere
                rows.append({**row, "rse": None, "rsp": None, "note": "constant image: no error map"})
                continue
            r = error_map_3d(inp, img, device=dev)
            maps[which.replace(" ", "_")] = r.error_map.astype(np.float32)
            rows.append({**row, "rse": r.rse, "rsp": r.rsp, "sigma_z": r.sigma_z, "sigma_xy": r.sigma_xy})
        with atomic_path(out / f"{inp_path.name.split('.')[0]}.npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **maps)
    write_text_atomic(out / "squirrel.json", json.dumps(rows, indent=2) + "\n")
    return rows
