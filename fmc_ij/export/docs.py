"""A bundle's human side: the cover image and the README (what the model was trained on, how it runs, and where it
should not be trusted), written from the model's contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fmc_ij.model_io import ModelContract

_NETWORKS = {
    "care": "CARE U-Net (Weigert et al. 2018)",
    "wang": "Wang et al. 2019 GAN generator",
    "projection": "CARE ProjectionCARE (a 3D surface projection network, then a 2D CARE U-Net)",
}
_TASKS = {
    "restore": "restoration on the input's grid (cheap acquisition in, expensive acquisition out)",
    "isotropic": "isotropic restoration of anisotropic volumes (CARE's IsotropicCARE)",
    "projection": "surface projection: a volume in, the restored 2D image of the surface it holds out",
}


def cover(path: Path, x: np.ndarray, y: np.ndarray, target: np.ndarray | None = None) -> None:
    """input | prediction (| target): the middle plane of each, 2:1 or 3:1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def mid(a: np.ndarray) -> np.ndarray:
        return a[a.shape[0] // 2] if a.ndim == 3 else a

    panels = [(mid(x), "input"), (mid(y), "prediction")] + ([(mid(target), "target")] if target is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), dpi=64)
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(img, cmap="magma", vmin=np.percentile(img, 1), vmax=np.percentile(img, 99.8))
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _grid(c: ModelContract) -> str:
    d = c.data
    if not d.voxel_size or not d.axes:
        return "- Voxel size of the training data: not recorded."
    size = " x ".join(f"{v:g}" for v in d.voxel_size)
    return f"- Training data grid: {d.axes} voxels of {size} {d.unit or 'pixel'}."


def _axes(planes: bool, ndim: int) -> str:
    return "zyx (each plane restored on its own)" if planes else "zyx" if ndim == 3 else "yx"


def readme(
    name: str, c: ModelContract, training: dict[str, Any] | None, shape: tuple[int, ...], planes: bool, notes: str
) -> str:
    """The bundle's README.md."""
    m, n, t = c.network, c.normalization, training or {}
    optim = t.get("optim") or {}
    chans = ", ".join(c.channels) or "one channel"
    lines = [
        f"# {name}",
        "",
        f"Trained with fmc-ij (https://github.com/fmc-ij/fmc-ij) for {_TASKS[c.task]}.",
        "",
        "## Network",
        f"- {_NETWORKS[m.arch]}, {m.ndim}D, depth {m.depth}, {m.base} base filters"
        + (", BatchNorm" if m.norm else "")
        + (", Laplace uncertainty head" if m.probabilistic else "")
        + ".",
        "",
        "## Training",
        f"- Data: `{c.data.root}`; specimens: {', '.join(c.data.specimens) or 'not recorded'}; "
        f"channels seen: {', '.join(c.data.channels) or 'not recorded'}.",
        _grid(c),
    ]
    if c.data.input_range:
        lo, hi = c.data.input_range
        lines.append(f"- Raw input intensities (median {n.pmin:g} / {n.pmax:g} percentiles): {lo:.4g} / {hi:.4g}.")
    lines += [
        f"- Patches {(t.get('data') or {}).get('patch')}, batch {(t.get('data') or {}).get('batch')}; loss "
        f"{t.get('loss')}; optimiser {optim.get('name')} lr {optim.get('lr')}; step {c.provenance.step}; "
        "contract and training config attached as `config.yaml`.",
        "",
        "## Input and output",
        f"- Input: {chans}, axes {_axes(planes, m.ndim)}; each channel scaled by its own {n.pmin:g} / {n.pmax:g} "
        "percentiles over the whole image (as in training).",
        "- Output: in the target's normalised units (0 = its 2nd percentile, about background; 1 = its 99.8th)"
        + ("." if c.output_floor is None else f", clipped below at {c.output_floor:g}."),
    ]
    if c.task == "isotropic":
        lines.append(
            "- Isotropic restoration: interpolate the volume linearly along Z to the lateral pixel size, run this "
            "network on every XZ and every YZ plane and average the two results. `fmc-ij predict --model` on this "
            "bundle does all of this and sets the new Z voxel size; a plain bioimage.io run does only the network."
        )
    metrics = (c.provenance.metrics or {}).items()
    lines += ["", "## Validation metrics (held-out specimens, fmc-ij's Fuse My Cells N_SSIM)"]
    lines += [f"- {k}: {v:.4f}" for k, v in sorted(metrics) if isinstance(v, float)] or ["- none recorded"]
    lines += [
        "",
        "## Where not to trust it",
        "- It learned the physics of its training data only. On another microscope, sample, stain or voxel size "
        "the output can be worse than the input without any warning from this bundle: check new data against the "
        "input (fmc-ij's SQUIRREL error maps, `fmc-ij evaluate`) before using it for measurements.",
        "- Inputs far from the training voxel size or intensity range above are outside what it was trained on.",
        f"- The test tensor has shape {shape}; see rdf.yaml for the input sizes a run may use.",
    ]
    if notes:
        lines += ["", "## Notes", notes]
    return "\n".join(lines) + "\n"
