"""Does a restoration stay above its input on data it was not trained on? (issue 23)

Four built-in light-sheet "studies" that differ in optics and voxel size, and real volumes made by others
(``../shared/data/real``: PlantSeg ovule membranes, NEUBIAS Drosophila nuclear envelopes, the flowdec neuron)
degraded by the single-view physics with random parameters. Every image is scored with the Fuse My Cells N_SSIM
(0 = the input itself), per study and channel: mean and worst.

Models (one CARE 3D network for both channels, the ``care3d`` preset, ``--minutes`` each):

- ``loso-X``: trained on the three other studies, tested on study X (leave one study out);
- ``in-A``: trained on study A, tested on held-out specimens of study A (in domain: what the gate may cost);
- ``random``: trained on randomised specimens and optics (:meth:`LightSheetConfig.randomized`), tested on every
  study and the real volumes.

And the shipped ``models/`` bundles (one per channel), run as a new user would on the real volumes: the issue's
first finding.

Each is scored three ways: the network alone (``--gate off``), Wodzinski & Mueller's difference weighting
(``--fallback difference``), and fmc-ij's default gate (:mod:`fmc_ij.predict.gate`).

    python benchmarks/generalisation.py [--minutes 4] [--out benchmarks/generalisation]

Prints a table and writes ``generalisation.json`` and ``generalisation.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
SHAPE = (40, 128, 128)
#: (file, channel, voxel size for an uncalibrated file)
REAL_VOLUMES = [
    ("plantseg_ovule/sample_ovule.h5:/raw", "membrane", None),
    ("neubias/xyz_nuclear_envelope_drosophila.tif", "nucleus", None),
    ("flowdec/neuron-25pct/data.tif", "membrane", (1.0, 0.4, 0.4)),
]
REAL_DRAWS = 2


def studies() -> dict:
    from fmc_ij.synthetic import LightSheetConfig

    return {
        "A": LightSheetConfig(shape=SHAPE),  # the defaults: the shipped demo models' study
        "B": LightSheetConfig(shape=SHAPE, spacing=(2.0, 0.3, 0.3), attenuation_um=25.0, blur_lateral_um=(0.3, 2.2),
                              blur_axial_um=(1.5, 4.5), haze=0.45, photons_single=500.0),
        "C": LightSheetConfig(shape=SHAPE, spacing=(1.0, 0.2, 0.2), cell_diameter=6.5, attenuation_um=90.0,
                              blur_lateral_um=(0.2, 1.0), haze=0.1, photons_single=4000.0, stripes=0.25),
        "D": LightSheetConfig(shape=SHAPE, spacing=(3.0, 0.33, 0.33), cell_diameter=12.0, attenuation_um=60.0,
                              photons_single=1200.0),
    }  # fmt: skip


def make_data(root: Path) -> None:
    from fmc_ij.io import ImageMeta, imread, imwrite
    from fmc_ij.synthetic import simulate_lightsheet_dataset
    from fmc_ij.synthetic.degrade import SingleViewPhysics, single_view

    if (root / "done.json").exists():
        if not (root / "heldout-A").exists():  # added after the first layout
            simulate_lightsheet_dataset(root / "heldout-A", n=2, cfg=studies()["A"], seed=90, overwrite=True)
        return
    for k, (name, cfg) in enumerate(studies().items()):
        simulate_lightsheet_dataset(root / "studies" / name, n=3, cfg=cfg, seed=40 + k, overwrite=True)
    simulate_lightsheet_dataset(root / "heldout-A", n=2, cfg=studies()["A"], seed=90, overwrite=True)
    simulate_lightsheet_dataset(root / "random", n=12, cfg=studies()["A"], seed=77, randomize=True, overwrite=True)
    for i, (rel, ch, sp) in enumerate(REAL_VOLUMES):
        img = imread(REAL / rel)
        spacing = list(sp) if sp else img.meta.voxel_size("ZYX")
        for d in range(REAL_DRAWS):
            rng = np.random.default_rng([23, i, d])
            view = single_view(img.data, spacing, SingleViewPhysics.random(rng), rng=rng)
            meta = ImageMeta(axes="ZYX", spacing=dict(zip("ZYX", spacing)), unit="µm", channel=ch)
            imwrite(root / "real" / f"image_{10 * i + d}_{ch}_angle.tif", view, meta)
            imwrite(root / "real" / f"image_{10 * i + d}_{ch}_fused.tif", np.asarray(img.data), meta)
    (root / "done.json").write_text("{}")


def train_model(data_roots: list[Path], out: Path, minutes: float, seed: int = 0, recalibrate: bool = False) -> Path:
    """One care3d network on the pairs of several folders (linked into one); a trained one is reused (its
    calibration measured again with ``recalibrate``)."""
    from fmc_ij.train import TrainConfig, train

    if (out / "model.pt").exists():
        if recalibrate:
            from fmc_ij.train import recalibrate as again

            again(out)
        return out
    merged = out.parent / f"{out.name}-data"
    merged.mkdir(parents=True, exist_ok=True)
    n = 0
    for r in data_roots:
        for f in sorted(r.glob("image_*_angle.tif")):
            idx, rest = f.name.split("_", 2)[1], f.name.split("_", 2)[2]
            for kind in ("angle", "fused"):
                src = f.with_name(f.name.replace("_angle", f"_{kind}"))
                dst = merged / f"image_{n}_{rest.replace('_angle', f'_{kind}')}"
                if not dst.exists():
                    dst.symlink_to(src.resolve())
            n += 1 if "membrane" in rest else 0
            del idx
    cfg = TrainConfig.from_preset("care3d", data={"root": str(merged), "patch": [16, 64, 64], "batch": 4,
                                                  "val_crop": [40, 128, 128]},
                                  max_minutes=minutes, steps=10**7, seed=seed,
                                  optim={"clock": "time"})  # fmt: skip
    train(cfg, out)
    return out


def score(model: Path, folder: Path, tmp: Path) -> list[dict]:
    from fmc_ij.io import imread
    from fmc_ij.metrics import n_ssim
    from fmc_ij.predict import load_predictor, predict_file

    p = load_predictor(model)
    rows = []
    for f in sorted(folder.glob("image_*_angle.tif")):
        gt = imread(f.with_name(f.name.replace("_angle", "_fused"))).data
        x = imread(f).data
        row = {"image": f.name, "channel": "membrane" if "membrane" in f.name else "nucleus"}
        for mode, kw in (("raw", {"gate": False}), ("difference", {"fallback": "difference"}), ("gate", {})):
            t = time.perf_counter()
            out = predict_file(p, f, tmp / mode / f.name, progress=False, uncertainty=False, **kw)
            row[f"{mode}_s"] = time.perf_counter() - t
            row[mode] = n_ssim(imread(out[0]).data, gt, x)
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return rows


def score_bundles(folder: Path, tmp: Path) -> list[dict]:
    """The shipped bundles (``models/fmc-ij-care3d-<channel>.zip``) on the images of their channel."""
    rows = []
    for ch in ("nucleus", "membrane"):
        bundle = ROOT / "models" / f"fmc-ij-care3d-{ch}.zip"
        if not bundle.exists():
            continue
        sub = tmp / f"{ch}-in"
        sub.mkdir(parents=True, exist_ok=True)
        for f in folder.glob(f"image_*_{ch}_*.tif"):
            if not (sub / f.name).exists():
                (sub / f.name).symlink_to(f.resolve())
        rows += score(bundle, sub, tmp / ch)
    return rows


def summarise(results: dict[str, list[dict]]) -> str:
    lines = [
        "| model / test set | channel | n | raw mean | raw worst | difference mean | difference worst | gate mean | "
        "gate worst | gate time / raw |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, rows in results.items():
        for ch in ("nucleus", "membrane"):
            rs = [r for r in rows if r["channel"] == ch]
            if not rs:
                continue
            cells = []
            for m in ("raw", "difference", "gate"):
                v = np.array([r[m] for r in rs], float)
                cells += [f"{np.nanmean(v):+.3f}", f"{np.nanmin(v):+.3f}"]
            ratio = np.median([r["gate_s"] / r["raw_s"] for r in rs])
            lines.append(f"| {key} | {ch} | {len(rs)} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "generalisation")
    ap.add_argument("--work", type=Path, default=ROOT / ".bench" / "generalisation")
    ap.add_argument("--recalibrate", action="store_true", help="measure trained models' calibration again")
    a = ap.parse_args()
    make_data(a.work)
    names = list(studies())
    results: dict[str, list[dict]] = {}
    for held in names:
        others = [a.work / "studies" / s for s in names if s != held]
        m = train_model(others, a.work / "models" / f"loso-{held}", a.minutes, recalibrate=a.recalibrate)
        results[f"loso-{held} on {held}"] = score(m, a.work / "studies" / held, a.work / "tmp" / f"loso-{held}")
    m = train_model([a.work / "studies" / "A"], a.work / "models" / "in-A", a.minutes, recalibrate=a.recalibrate)
    results["in-A on held-out A (in domain)"] = score(m, a.work / "heldout-A", a.work / "tmp" / "in-A")
    m = train_model([a.work / "random"], a.work / "models" / "random", a.minutes, recalibrate=a.recalibrate)
    for s in names:
        results[f"random on {s}"] = score(m, a.work / "studies" / s, a.work / "tmp" / f"random-{s}")
    results["random on real"] = score(m, a.work / "real", a.work / "tmp" / "random-real")
    results["models/ bundles on real"] = score_bundles(a.work / "real", a.work / "tmp" / "bundles-real")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "generalisation.json").write_text(json.dumps(results, indent=1))
    table = summarise(results)
    (a.out / "generalisation.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
