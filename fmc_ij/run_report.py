"""The report of a run: ``fmc-ij report RUN`` and the last step of ``fmc-ij demo``.

A demo folder (``demo.json``) gives everything: metrics against the identity baseline, orthogonal views of input,
prediction and fused ground truth with error and uncertainty maps, the training curves, registration QC,
SQUIRREL error maps and the bundle with the steps to run it in Fiji. A plain training run (``config.yaml`` +
``log.csv``) gives its configuration and curves plus a preview: the model applied to the centre of its first
validation pair. Sections whose files are missing are left out.
"""

from __future__ import annotations

import csv
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fmc_ij.errors import FmcInputError
from fmc_ij.io import imread
from fmc_ij.metrics.ssim import percentile_normalize, percentiles
from fmc_ij.report.figures import display_range, line_plot, orthoviews
from fmc_ij.report.html import Body, Raw, html_report

MANIFEST = "demo.json"


def _norm(x: np.ndarray) -> np.ndarray:
    """The challenge's normalisation (2nd / 99.8th percentiles, unclipped), as the metrics apply it."""
    return percentile_normalize(x)


def comparison_figures(
    inp: np.ndarray,
    pred: np.ndarray,
    gt: np.ndarray,
    stem: str | os.PathLike,
    *,
    uncertainty: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    title: str = "",
) -> list[Path]:
    """Two PNGs, ``{stem}_images.png`` (input, prediction, ground truth, each normalised as the metric does) and
    ``{stem}_errors.png`` (|input - GT|, |prediction - GT| on one scale, and the predictive s.d. on the
    prediction's normalised scale): XY and XZ planes, µm axes, colour bars."""
    i, p, g = _norm(inp), _norm(pred), _norm(gt)
    err_in, err_pred = np.abs(i - g), np.abs(p - g)
    emax = float(np.percentile(np.r_[err_in.ravel(), err_pred.ravel()], 99.8)) or 1.0
    names = ("input", "prediction", "ground truth")
    figs = [
        orthoviews(
            dict(zip(names, (i, p, g))),
            f"{stem}_images.png",
            title=title,
            spacing=spacing,
            ranges=dict.fromkeys(names, (0.0, 1.0)),
            labels=dict.fromkeys(names, "normalised intensity"),
        )
    ]
    errors = {"|input - GT|": err_in, "|prediction - GT|": err_pred}
    ranges = dict.fromkeys(errors, (0.0, emax))
    labels = dict.fromkeys(errors, "absolute error (normalised)")
    if uncertainty is not None:
        lo, hi = percentiles(pred)
        errors["uncertainty"] = u = np.asarray(uncertainty, np.float32) / max(hi - lo, 1e-12)
        ranges["uncertainty"] = display_range(u)
        labels["uncertainty"] = "predictive s.d. (normalised)"
    figs.append(orthoviews(errors, f"{stem}_errors.png", title=f"{title}: errors and uncertainty", spacing=spacing,
                           cmaps=dict.fromkeys(errors, "magma"), ranges=ranges, labels=labels))  # fmt: skip
    return figs


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _metrics_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per channel and metric: identity baseline (the input as the prediction) and the model."""
    rows = []
    pairs = (("N_SSIM", None, "n_ssim"), ("SSIM", "ssim_input", "ssim_pred"), ("PSNR (dB)", "psnr_input", "psnr"),
             ("NRMSE", "nrmse_input", "nrmse"))  # fmt: skip
    for ch, s in summary.items():
        a = s["all"]
        for label, ident, model in pairs:
            base = 0.0 if ident is None else (a.get(ident) or {}).get("mean")
            val = (a.get(model) or {}).get("mean")
            if val is None:
                continue
            better = val > base if label != "NRMSE" else val < base
            rows.append({"channel": ch, "metric": label, "identity (input)": base, "model": val,
                         "better": "yes" if better else "no", "images": s["n_images"]})  # fmt: skip
    return rows


def _comparisons(pred_dir: Path, gt_dir: Path, in_dir: Path, figdir: Path, per_channel: int = 1) -> list[Path]:
    figs, seen = [], {}
    for inp_path in sorted(in_dir.glob("*_angle.tif")):
        pred_path = pred_dir / inp_path.name
        gt_path = gt_dir / inp_path.name.replace("_angle", "_fused")
        if not (pred_path.is_file() and gt_path.is_file()):
            continue
        inp = imread(inp_path)
        ch = inp.meta.channel or inp_path.name
        if seen.get(ch, 0) >= per_channel:
            continue
        seen[ch] = seen.get(ch, 0) + 1
        unc_path = pred_dir / (inp_path.name.split(".")[0] + "_uncertainty.tif")
        unc = imread(unc_path).data if unc_path.is_file() else None
        stem = inp_path.name.split(".")[0]
        figs += comparison_figures(inp.data, imread(pred_path).data, imread(gt_path).data, figdir / stem,
                                   uncertainty=unc, spacing=inp.meta.voxel_size() or None, title=stem)  # fmt: skip
    return figs


def _training(run: Path, figdir: Path) -> list[tuple[str, Body]]:
    if not (run / "log.csv").is_file():
        return []
    log = _read_csv(run / "log.csv")
    steps = np.array([float(r["step"]) for r in log])
    loss = np.array([float(r["loss"]) if r["loss"] else np.nan for r in log])
    figs = [line_plot({"training loss": (steps, loss)}, figdir / "loss.png", xlabel="step", ylabel="loss")]
    val = {k: (steps, np.array([float(r[k]) if r[k] else np.nan for r in log]))
           for k in log[0] if k.startswith("val_n_ssim")}  # fmt: skip
    if val:
        figs.append(line_plot(val, figdir / "validation.png", xlabel="step", ylabel="validation N_SSIM", hline=0.0))
    rows: list[dict[str, Any]] = []
    if (run / "config.yaml").is_file():
        import yaml

        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
        m, d = cfg.get("model", {}), cfg.get("data", {})
        rows.append({
            "preset": cfg.get("preset"), "architecture": m.get("arch"), "dims": m.get("ndim"), "depth": m.get("depth"),
            "base filters": m.get("base"), "patch": "x".join(map(str, d.get("patch", []))), "batch": d.get("batch"),
            "loss": ", ".join(f"{k} {v:g}" for k, v in (cfg.get("loss") or {}).items()),
            "steps done": int(steps[-1]) if len(steps) else 0, "minutes": round(float(log[-1]["time_s"]) / 60, 1),
        })  # fmt: skip
    sections: list[tuple[str, Body]] = [("Training", rows)] if rows else []
    sections.append(("Training curves", figs))
    return sections


def _registration(reg: Path, truth: Path | None) -> list[tuple[str, Body]]:
    if not (reg / "registration.csv").is_file():
        return []
    rows = _read_csv(reg / "registration.csv")
    true = json.loads(truth.read_text()) if truth and truth.is_file() else {}
    table = []
    for r in rows:
        est = [float(v) for v in r["shift"].split()]
        row: dict[str, Any] = {"pair": r["name"], "shift found (ZYX px)": ", ".join(f"{v:+.2f}" for v in est)}
        t = (true.get(r["name"]) or {}).get("shift_px")
        if t is not None:  # the simulated warp adds an elastic part on top of this global shift
            row["applied global shift (ZYX px)"] = ", ".join(f"{v:+.2f}" for v in t)
        row.update({"NCC before": float(r["ncc_before"]), "NCC rigid": float(r["ncc_rigid"]),
                    "NCC elastic": float(r["ncc_after"])})  # fmt: skip
        table.append(row)
    qc = sorted((reg / "qc").glob("*.png"))[:2]
    return [("Registration", table), ("Registration QC (middle plane)", qc)]


def _squirrel(sq: Path, figdir: Path, spacing: Sequence[float] | None) -> list[tuple[str, Body]]:
    if not (sq / "squirrel.json").is_file():
        return []
    rows = json.loads((sq / "squirrel.json").read_text())
    figs = []
    for npz in sorted(sq.glob("*.npz"))[:2]:
        with np.load(npz) as z:  # a constant prediction has no map
            maps = {k.replace("_", " "): z[k] for k in ("prediction", "ground_truth") if k in z.files}
        hi = float(np.percentile(np.concatenate([m.ravel() for m in maps.values()]), 99.8)) or 1.0
        figs.append(orthoviews(
            {f"error map: {k}": v for k, v in maps.items()}, figdir / f"squirrel_{npz.stem}.png",
            title=f"{npz.stem}: SQUIRREL error map against the input", spacing=spacing,
            cmaps=dict.fromkeys((f"error map: {k}" for k in maps), "inferno"),
            ranges=dict.fromkeys((f"error map: {k}" for k in maps), (0.0, hi)),
            labels=dict.fromkeys((f"error map: {k}" for k in maps), "|RSF(image) - input|"),
        ))  # fmt: skip
    text = Raw(
        "<p>Each image is blurred by the resolution-scaling function fitted to the single-view input "
        "(NanoJ-SQUIRREL, anisotropic 3D) and compared with it. The fused ground truth is the reference for "
        "how consistent a correct answer is: a prediction far above it has departed from the data "
        "(lost or invented structure); far below it means little was restored.</p>"
    )
    return [("SQUIRREL", text), ("SQUIRREL values", rows), ("SQUIRREL error maps", figs)]


def _bundle(bundle: Path, test: str | None) -> list[tuple[str, Body]]:
    if not bundle.is_file():
        return []
    p = html.escape(str(bundle.resolve()))
    text = Raw(
        f"<p>bioimage.io bundle: <code>{p}</code> (bioimage.io <code>test_model</code>: {html.escape(test or '?')})."
        "</p><ol><li>Fiji (deepImageJ 3.1): <i>Plugins &gt; DeepImageJ &gt; Install model manually</i> and give "
        f"<code>{p}</code> (it unpacks to <code>Fiji.app/models/&lt;zip name&gt;_&lt;date&gt;/</code>).</li><li>Open "
        "a single-view volume (e.g. "
        "<code>data/heldout/image_0_nucleus_angle.tif</code>), then <i>Plugins &gt; DeepImageJ &gt; DeepImageJ "
        "Run</i>, pick the model and run.</li><li>Headless, or from a macro: <code>macros/fmc_predict_deepimagej.ijm"
        "</code> (see <code>macros/README.md</code>). In Python: <code>fmc-ij predict --model BUNDLE.zip "
        "IMAGES --out DIR</code>.</li></ol>"
    )
    return [("Run it in Fiji", text)]


def _preview(run: Path, figdir: Path) -> list[tuple[str, Body]]:
    """The model on the centre of its first validation pair (a training run without predictions)."""
    import yaml

    from fmc_ij.data import load_pairs
    from fmc_ij.metrics.ssim import n_ssim_from, percentiles, ssim
    from fmc_ij.predict import Predictor, load_predictor, restore
    from fmc_ij.train.config import split_data, stored_config

    cfg = stored_config(yaml.safe_load((run / "config.yaml").read_text()) or {})
    if not cfg.data.root or not Path(cfg.data.root).is_dir():
        return [("Preview", f"training data {cfg.data.root} not found; no preview")]
    pairs = load_pairs(cfg.data.root, channels=cfg.data.channels, low=cfg.data.low, high=cfg.data.high)
    _, val = split_data(pairs, cfg)
    predictor = load_predictor(run)
    if not isinstance(predictor, Predictor) or predictor.task != "restore":
        return [("Preview", "the preview compares on the input's grid; this model changes it (or is per-channel)")]
    figs, rows = [], []
    for pair in (val or pairs)[:2]:
        crop = [min(c, s) for c, s in zip(cfg.data.val_crop[-len(pair.shape) :], pair.shape)]
        sl = tuple(slice((s - c) // 2, (s - c) // 2 + c) for s, c in zip(pair.shape, crop))
        x, y = np.asarray(pair.low[sl]), np.asarray(pair.high[sl])
        res = restore(predictor, x, axes=pair.axes, spacing=dict(zip(pair.axes, pair.spacing)), progress=False)
        pred = res.normalizer.invert(res.image)
        unc = None if res.uncertainty is None else res.normalizer.scale(res.uncertainty)
        s_in = ssim(x, y, normalize=(percentiles(x), percentiles(y)), data_range=1.0)
        s_pred = ssim(pred, y, normalize=(percentiles(pred), percentiles(y)), data_range=1.0)
        rows.append({"pair": pair.name, "crop": "x".join(map(str, crop)), "SSIM input": s_in, "SSIM model": s_pred,
                     "N_SSIM": n_ssim_from(s_pred, s_in)})  # fmt: skip
        figs += comparison_figures(x, pred, y, figdir / f"preview_{pair.name}", uncertainty=unc,
                                   spacing=pair.spacing, title=f"{pair.name} (validation, centre)")  # fmt: skip
    return [("Preview on validation data", rows), ("Preview: orthogonal views", figs)]


def run_report(folder: str | os.PathLike, out: str | os.PathLike | None = None, *, preview: bool = True) -> Path:
    """Write a self-contained HTML report for a demo folder or a training run; return its path.

    Parameters
    ----------
    folder : path
        A ``fmc-ij demo`` output (``demo.json``) or a training run (``config.yaml``, ``log.csv``).
    out : path, optional
        The HTML file (default ``folder/report.html``); its PNGs go to ``<out stem>_figures/``.
    preview : bool
        For a training run: predict the centre of the first validation pair(s) and show it.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    is_demo = manifest_path.is_file()
    if not is_demo and not (folder / "log.csv").is_file():
        raise FmcInputError(
            f"{folder}: neither a demo folder (demo.json) nor a training run (log.csv); nothing to report"
        )
    out = Path(out) if out else folder / "report.html"
    figdir = out.parent / f"{out.stem}_figures"
    sections: list[tuple[str, Body]] = []
    if is_demo:
        m = json.loads(manifest_path.read_text())
        p = {k: folder / v for k, v in m["paths"].items()}
        stop = (
            " (stopped by the time limit: metrics depend on this machine's speed)" if m["stopped_by_time_limit"] else ""
        )
        sections.append(("Summary", Raw(
            f"<p>Seed {m['seed']}, {m['steps']} training steps{html.escape(stop)}. Held-out specimen: "
            f"<code>{html.escape(str(p['heldout']))}</code>. N_SSIM = (SSIM(prediction) - SSIM(input)) / "
            "(1 - SSIM(input)) with the challenge's normalisation: above 0, the model is better than its input.</p>"
        )))  # fmt: skip
        summary = json.loads((p["eval"] / "summary.json").read_text())
        sections.append(("Metrics against the identity baseline", _metrics_rows(summary)))
        sections.append(("Held-out volumes: input, prediction, fused ground truth, errors, uncertainty",
                         _comparisons(p["predictions"], p["heldout"], p["heldout"], figdir)))  # fmt: skip
        sections += _training(p["run"], figdir)
        sections += _registration(p["registered"], p["train_data"] / "truth" / "misregistration.json")
        first = sorted(p["heldout"].glob("*_angle.tif"))
        spacing = imread(first[0]).meta.voxel_size() if first else None
        sections += _squirrel(p["squirrel"], figdir, spacing or None)
        sections += _bundle(p["bundle"], m.get("bundle_test"))
    else:
        sections += _training(folder, figdir)
        if preview and (folder / "config.yaml").is_file():
            sections += _preview(folder, figdir)
    title = "fmc-ij demo report" if is_demo else f"fmc-ij run report: {folder.name}"
    return html_report(out, title=title, sections=sections)


__all__ = ["comparison_figures", "run_report"]
