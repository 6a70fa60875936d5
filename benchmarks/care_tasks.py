"""The CARE / Wang et al. task types on built-in data: each trains within a CPU budget, is scored against its
naive baseline on held-out data, and exports a bioimage.io bundle that passes bioimage.io's model test.

    python benchmarks/care_tasks.py projection    # ProjectionCARE: curved epithelium -> surface image, vs max
    python benchmarks/care_tasks.py isotropic     # IsotropicCARE: dz = 4 dx volume -> isotropic, vs trilinear
    python benchmarks/care_tasks.py beads         # sub-diffraction: 290 nm PSF -> 110 nm, bead FWHM figure
    python benchmarks/care_tasks.py transfer      # beads -> filaments fine-tuning vs training from scratch
    python benchmarks/care_tasks.py all [--minutes 4]

Each writes ``benchmarks/care_tasks/<task>/results.json`` and a PNG figure (the numbers of the closing notes);
the training runs and bundles go to ``.bench/tasks/<task>/`` (not committed). Training uses ``--minutes``
of wall clock on the learning-rate clock (``optim.clock: time``); CPU minutes (all threads) are reported.
SSIM here is the Gaussian SSIM of percentile-normalised images (2 / 99.8), data range 1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fmc_ij.io import ImageMeta, imwrite

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "care_tasks"
WORK = HERE.parent / ".bench" / "tasks"


def nssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two images after the challenge's percentile normalisation (scale-free)."""
    from fmc_ij.metrics import percentiles, ssim

    return float(ssim(a, b, data_range=1.0, normalize=(percentiles(a), percentiles(b))))


def train_for(preset: str, out: Path, minutes: float | None = None, steps: int | None = None, **over) -> dict:
    """Train into ``out``; a time budget (learning rate on the clock) or a step count. Returns its figures."""
    from fmc_ij.train import TrainConfig, train

    if minutes is not None:
        over.update(steps=10**7, max_minutes=minutes)
        over.setdefault("optim", {})["clock"] = "time"
    else:
        over["steps"] = steps
    cfg = TrainConfig.from_preset(preset, seed=0, **over)
    cpu, wall = time.process_time(), time.perf_counter()
    (res,) = train(cfg, out, overwrite=True)
    return {"steps": res.step, "cpu_minutes": (time.process_time() - cpu) / 60, "wall_minutes":
            (time.perf_counter() - wall) / 60, "stopped": res.stopped}  # fmt: skip


def bundle(run: Path, sample: np.ndarray, target: np.ndarray | None = None) -> str:
    """Export and test (``export`` runs bioimage.io's test_model before writing); the bundle's path."""
    from fmc_ij.export import export

    out = run.parent / f"{run.name}.zip"
    export(run, out, sample=sample, target=target)
    return str(out)


def save(task: str, results: dict, fig) -> None:
    d = RESULTS / task
    d.mkdir(parents=True, exist_ok=True)
    fig.savefig(d / f"{task}.png", dpi=110, bbox_inches="tight")
    (d / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


# -- isotropic ---------------------------------------------------------------------------------------------
def isotropic(minutes: float) -> dict:
    """IsotropicCARE on light-sheet membranes: ground truth = fused volumes at 0.4 um isotropic; input = the
    same axially blurred (FWHM 1.6 um) and sampled every 4th plane (dz = 1.6 um). Training sees only the
    inputs (semi-synthetic pairs from their lateral planes); the held-out specimen is scored against its
    ground truth on the isotropic grid, against trilinear (linear-in-Z) upsampling."""
    import matplotlib.pyplot as plt
    from scipy import ndimage

    from fmc_ij.predict import load_predictor
    from fmc_ij.predict.isotropic import predict_isotropic, upsample_z
    from fmc_ij.synthetic import LightSheetConfig
    from fmc_ij.synthetic.lightsheet import simulate_lightsheet
    from fmc_ij.synthetic.optics import fwhm_to_sigma

    k, dx = 4, 0.4
    work = WORK / "isotropic"
    cfg = LightSheetConfig(shape=(96, 160, 160), spacing=(dx, dx, dx))
    extra_sigma = fwhm_to_sigma(float(np.sqrt((k * dx) ** 2 - (2 * dx) ** 2))) / dx  # as the training degradation

    def volume(seed: int) -> tuple[np.ndarray, np.ndarray]:
        gt = simulate_lightsheet(cfg, seed=seed, channels=("membrane",), truth=False)["membrane"]["fused"]
        gt = gt.astype(np.float32)
        low = ndimage.gaussian_filter1d(gt, extra_sigma, axis=0)[::k]
        return gt, low

    meta = ImageMeta(axes="ZYX", spacing={"Z": k * dx, "Y": dx, "X": dx}, unit="µm", channel="membrane")
    for i in range(3):
        imwrite(work / "data" / f"vol{i}.tif", volume(i)[1], meta)
    gt, low = volume(1000)
    fig_train = train_for("care2d", work / "run", minutes, data={"root": str(work / "data"), "mode": "isotropic",
                          "low": "*.tif", "patch": [64, 64], "batch": 16, "val_crop": [1, 160, 160]})  # fmt: skip
    p = load_predictor(work / "run")
    pred, spacing = predict_isotropic(p, low, (k * dx, dx, dx), progress=False)
    n = pred.image.shape[0]
    base = upsample_z(low, k)
    res = {"task": "isotropic (IsotropicCARE), membrane, dz = 4 dx", "train": fig_train,
           "ssim_prediction": nssim(np.asarray(pred.image), gt[:n]), "ssim_trilinear": nssim(base, gt[:n]),
           "output_voxel_um": spacing, "bundle": bundle(work / "run", base[:, 80, :])}  # fmt: skip
    fig, ax = plt.subplots(1, 3, figsize=(12, 4.2))
    for a, (img, title) in zip(ax, ((base, "trilinear"), (np.asarray(pred.image), "IsotropicCARE"),
                                    (gt[:n], "isotropic ground truth"))):  # fmt: skip
        sl = img[:, 80, :]
        a.imshow(sl, cmap="magma", vmin=np.percentile(sl, 1), vmax=np.percentile(sl, 99.7),
                 extent=(0, sl.shape[1] * dx, sl.shape[0] * dx, 0))  # fmt: skip
        a.set(title=f"{title} (XZ)", xlabel="x (µm)", ylabel="z (µm)")
    fig.suptitle(f"SSIM vs ground truth: trilinear {res['ssim_trilinear']:.3f}, model {res['ssim_prediction']:.3f}")
    save("isotropic", res, fig)
    return res


# -- sub-diffraction beads -----------------------------------------------------------------------------------
def beads(minutes: float | None = None) -> dict:
    """Train on simulated 40 nm beads only (confocal-like 290 nm PSF -> STED-like 110 nm), apply to held-out bead
    fields, and measure every isolated bead's FWHM in the input, the output and the narrow-PSF image. Trains the
    ``subdiffraction`` preset's steps (reproducible; ``minutes`` is not used)."""
    import matplotlib.pyplot as plt

    from fmc_ij.io import imread
    from fmc_ij.metrics import bead_fwhm
    from fmc_ij.predict import load_predictor, predict_array
    from fmc_ij.synthetic import BeadsConfig
    from fmc_ij.synthetic.dataset import simulate_beads_dataset
    from fmc_ij.train import PRESETS

    work, bc = WORK / "beads", BeadsConfig(n_beads=60)
    simulate_beads_dataset(work / "train", n=8, cfg=bc, seed=0, overwrite=True)
    simulate_beads_dataset(work / "heldout", n=3, cfg=bc, seed=1, overwrite=True)
    steps = PRESETS["subdiffraction"]["steps"]
    fig_train = train_for("subdiffraction", work / "run", steps=steps, data={"root": str(work / "train")})
    p = load_predictor(work / "run")
    px = [bc.pixel_nm] * 2
    fw: dict[str, list[float]] = {"input": [], "output": [], "narrow": []}
    for f in sorted((work / "heldout" / "confocal").glob("*.tif")):
        wide, narrow = imread(f).data.astype(np.float32), imread(work / "heldout" / "sted" / f.name).data
        out = np.asarray(predict_array(p, wide, progress=False).image)
        for key, img in (("input", wide), ("output", out), ("narrow", narrow.astype(np.float32))):
            fw[key] += bead_fwhm(img, spacing=px, half_width=8)["fwhm"].mean(axis=1).tolist()
    stats = {k: {"median_nm": float(np.median(v)), "iqr_nm": [float(np.percentile(v, 25)),
             float(np.percentile(v, 75))], "n": len(v)} for k, v in fw.items()}  # fmt: skip
    ratio = stats["output"]["median_nm"] / stats["narrow"]["median_nm"]
    wide0, narrow0 = (imread(work / "heldout" / d / "bead_0.tif").data for d in ("confocal", "sted"))
    res = {"task": "sub-diffraction from synthetic beads (CARE Fig. 4 / Wang Fig. 3)", "train": fig_train,
           "fwhm": stats, "expected_nm": {"input": bc.effective_fwhm_nm(bc.fwhm_wide_nm),
           "narrow": bc.effective_fwhm_nm(bc.fwhm_narrow_nm)}, "output_over_narrow": ratio,
           "ssim_prediction": nssim(np.asarray(predict_array(p, wide0.astype(np.float32), progress=False).image),
                                    narrow0.astype(np.float32)),
           "ssim_input": nssim(wide0.astype(np.float32), narrow0.astype(np.float32)),
           "bundle": bundle(work / "run", wide0.astype(np.float32), narrow0.astype(np.float32))}  # fmt: skip
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.boxplot([fw["input"], fw["output"], fw["narrow"]], showfliers=False)
    ax.set_xticks([1, 2, 3], ["input (290 nm PSF)", "CARE output", "narrow PSF (110 nm)"])
    ax.set(ylabel="bead FWHM (nm)", title=f"median output / narrow = {ratio:.3f}")
    save("beads", res, fig)
    return res


# -- surface projection -------------------------------------------------------------------------------------
def projection(minutes: float) -> dict:
    """ProjectionCARE on the built-in curved epithelium (junctions on a surface 10-20 um deep, debris above and
    below it, ~20 photons): ZYX volume in, the high-SNR YX surface image out; against the maximum projection."""
    import matplotlib.pyplot as plt

    from fmc_ij.io import imread
    from fmc_ij.predict import load_predictor, predict_array
    from fmc_ij.synthetic import SurfaceConfig, simulate_surface_dataset

    work, sc = WORK / "projection", SurfaceConfig()
    simulate_surface_dataset(work / "train", n=6, cfg=sc, seed=0, overwrite=True)
    simulate_surface_dataset(work / "heldout", n=2, cfg=sc, seed=1, overwrite=True)
    fig_train = train_for("projection", work / "run", minutes, data={"root": str(work / "train"),
                          "patch": [sc.shape[0], 64, 64], "batch": 8})  # fmt: skip
    p = load_predictor(work / "run")
    scores: dict[str, list[float]] = {"prediction": [], "max_projection": []}
    for f in sorted((work / "heldout" / "volume").glob("*.tif")):
        vol = imread(f).data.astype(np.float32)
        gt = imread(work / "heldout" / "projection" / f.name).data.astype(np.float32)
        pred = np.asarray(predict_array(p, vol, progress=False).image)[0]
        scores["prediction"].append(nssim(pred, gt))
        scores["max_projection"].append(nssim(vol.max(0), gt))
    vol0 = imread(work / "heldout" / "volume" / "surface_0.tif").data.astype(np.float32)
    gt0 = imread(work / "heldout" / "projection" / "surface_0.tif").data.astype(np.float32)
    pred0 = np.asarray(predict_array(p, vol0, progress=False).image)[0]
    res = {"task": "surface projection (ProjectionCARE), 3D in, 2D out", "train": fig_train,
           "ssim_prediction": float(np.mean(scores["prediction"])),
           "ssim_max_projection": float(np.mean(scores["max_projection"])), "per_specimen": scores,
           "bundle": bundle(work / "run", vol0, gt0)}  # fmt: skip
    fig, ax = plt.subplots(1, 3, figsize=(12, 4.2))
    for a, (img, title) in zip(ax, ((vol0.max(0), "maximum projection"), (pred0, "ProjectionCARE"),
                                    (gt0, "high-SNR surface image"))):  # fmt: skip
        a.imshow(img, cmap="magma", vmin=np.percentile(img, 1), vmax=np.percentile(img, 99.7),
                 extent=(0, img.shape[1] * sc.spacing[2], img.shape[0] * sc.spacing[1], 0))  # fmt: skip
        a.set(title=title, xlabel="x (µm)", ylabel="y (µm)")
    fig.suptitle(f"SSIM vs ground truth: max projection {res['ssim_max_projection']:.3f}, "
                 f"model {res['ssim_prediction']:.3f}")  # fmt: skip
    save("projection", res, fig)
    return res


# -- transfer learning -------------------------------------------------------------------------------------
def transfer(steps: int) -> dict:
    """Wang et al.: train on beads, fine-tune on the target structure. Beads and filaments share the optics
    (65 nm pixels, NA 0.4 -> NA 1.4 widefield PSFs). From scratch on filaments for ``steps``; from the bead model
    for ``steps // 2`` (plain and with the encoder frozen). Scored on held-out filament fields."""
    import matplotlib.pyplot as plt

    from fmc_ij.io import imread
    from fmc_ij.predict import load_predictor, predict_array
    from fmc_ij.synthetic import BeadsConfig, FilamentsConfig
    from fmc_ij.synthetic.dataset import simulate_beads_dataset, simulate_filaments_dataset
    from fmc_ij.synthetic.optics import widefield_fwhm

    work, fc = WORK / "transfer", FilamentsConfig()
    bc = BeadsConfig(pixel_nm=fc.pixel_nm, fwhm_wide_nm=widefield_fwhm(fc.wavelength_nm, fc.na_low),
                     fwhm_narrow_nm=widefield_fwhm(fc.wavelength_nm, fc.na_high), n_beads=150,
                     bead_diameter_nm=100.0, photons_wide=fc.photons_low, photons_narrow=fc.photons_high)  # fmt: skip
    simulate_beads_dataset(work / "beads", n=6, cfg=bc, seed=0, overwrite=True)
    simulate_filaments_dataset(work / "filaments", n=6, cfg=fc, seed=0, overwrite=True)
    simulate_filaments_dataset(work / "heldout", n=3, cfg=fc, seed=1, overwrite=True)
    data = {"patch": [64, 64], "batch": 16, "val_crop": [1, 256, 256]}
    runs = {"beads": train_for("care2d", work / "beads_run", steps=steps, data={"root": str(work / "beads"), **data})}
    fil = {"root": str(work / "filaments"), **data}
    runs["scratch"] = train_for("care2d", work / "scratch", steps=steps, data=fil)
    init = str(work / "beads_run")
    runs["fine-tuned"] = train_for("care2d", work / "finetune", steps=steps // 2, data=fil, init=init)
    runs["fine-tuned, encoder frozen"] = train_for("care2d", work / "frozen", steps=steps // 2, data=fil,
                                                   init=init, freeze_encoder=True)  # fmt: skip
    pairs = [(imread(f).data.astype(np.float32), imread(work / "heldout" / "high_na" / f.name).data.astype(np.float32))
             for f in sorted((work / "heldout" / "low_na").glob("*.tif"))]  # fmt: skip
    scores = {"input": float(np.mean([nssim(lo, hi) for lo, hi in pairs]))}
    for name, folder in (("beads only", "beads_run"), ("scratch", "scratch"), ("fine-tuned", "finetune"),
                         ("fine-tuned, encoder frozen", "frozen")):  # fmt: skip
        p = load_predictor(work / folder)
        scores[name] = float(np.mean([nssim(np.asarray(predict_array(p, lo, progress=False).image), hi)
                                      for lo, hi in pairs]))  # fmt: skip
    res = {"task": "transfer learning beads -> filaments", "steps_scratch": steps, "steps_fine_tune": steps // 2,
           "train": runs, "ssim_heldout": scores,
           "fine_tune_reaches_scratch": scores["fine-tuned"] >= scores["scratch"]}  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(scores)
    ax.bar(range(len(names)), [scores[n] for n in names], color=["grey", "tab:orange", "tab:blue", "tab:green",
                                                               "tab:olive"])  # fmt: skip
    ax.set_xticks(range(len(names)), [n.replace(", ", ",\n") for n in names], fontsize=8)
    ax.set(ylabel="held-out SSIM vs NA 1.4", title=f"scratch {steps} steps, fine-tuned {steps // 2} steps")
    ax.set_ylim(min(scores.values()) - 0.05, 1)
    save("transfer", res, fig)
    return res


TASKS = {"projection": projection, "isotropic": isotropic, "beads": beads, "transfer": transfer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task", choices=[*TASKS, "all"])
    ap.add_argument("--minutes", type=float, default=4.0, help="wall-clock training budget per task")
    ap.add_argument("--steps", type=int, default=400, help="transfer: steps from scratch (fine-tuning: half)")
    a = ap.parse_args()
    for t in TASKS if a.task == "all" else [a.task]:
        print(f"== {t}", flush=True)
        TASKS[t](a.steps if t == "transfer" else a.minutes)


if __name__ == "__main__":
    main()
