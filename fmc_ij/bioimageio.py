"""bioimage.io model bundles (spec 0.5) from fmc-ij runs, built with bioimageio.spec's own models and tested with
bioimageio.core before the zip is published; deepImageJ-compatible by default.

The bundle holds TorchScript weights (for deepImageJ / libtorch) and pytorch_state_dict weights whose
architecture is fmc-ij's own network file (it imports only torch), percentile pre-processing as in training,
axes with ``min``/``step`` sizes and the receptive radius as halo (tiling), test tensors, a cover, a README and
the training config.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from fmc_ij.errors import FmcInputError
from fmc_ij.io import atomic_path

CARE_DOI, WANG_DOI = "10.1038/s41592-018-0216-7", "10.1038/s41592-018-0239-0"
_ARCH_FILES = {
    "care": ("unet.py", "UNet"),
    "wang": ("gan.py", "WangGenerator"),
    "projection": ("unet.py", "ProjectionUNet"),
}


def _require() -> None:
    try:
        import bioimageio.core  # noqa: F401
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise FmcInputError("bioimage.io export needs bioimageio.core: pip install 'fmc-ij[bioimageio]'") from None


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _arch_kwargs(model: Any, net: torch.nn.Module) -> dict[str, Any]:
    if model.arch == "projection":  # the bundle's network returns the 2D image itself (keep_z off)
        return {"in_channels": model.in_channels, "out_channels": model.out_channels, "depth": model.depth,
                "base": model.base, "kernel": model.kernel, "proj_depth": model.proj_depth,
                "proj_base": model.proj_base, "residual": model.residual, "keep_z": False}  # fmt: skip
    if model.arch == "wang":
        return {"ndim": model.ndim, "in_channels": model.in_channels, "out_channels": model.out_channels,
                "base": model.base, "depth": model.depth}  # fmt: skip
    kw = {"ndim": model.ndim, "in_channels": model.in_channels, "out_channels": model.out_channels,
          "depth": model.depth, "base": model.base, "kernel": model.kernel, "residual": model.residual,
          "norm": model.norm, "pool": model.pool, "probabilistic": model.probabilistic}  # fmt: skip
    if getattr(net, "clamp_mean", False):
        kw["mean_floor"] = net.mean_floor
    return kw


def _cover(path: Path, x: np.ndarray, y: np.ndarray, target: np.ndarray | None = None) -> None:
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


def _readme(name: str, cfg: dict[str, Any], metrics: dict[str, Any], shape: tuple[int, ...]) -> str:
    m, optim = cfg["model"], cfg.get("optim") or {}
    lines = [
        f"# {name}",
        "",
        "Restoration network trained with fmc-ij (https://github.com/fmc-ij/fmc-ij): the cheap acquisition "
        "(e.g. one light-sheet view) in, the expensive one (e.g. the fused multiview volume) out.",
        "",
        "## Network",
        f"- {'CARE U-Net (Weigert et al. 2018)' if m['arch'] == 'care' else 'Wang et al. 2019 GAN generator'}, "
        f"{m['ndim']}D, depth {m['depth']}, {m['base']} base filters.",
        "",
        "## Training",
        f"- Data: `{cfg['data'].get('root')}`, patches {cfg['data'].get('patch')}, batch {cfg['data'].get('batch')}.",
        f"- Loss: {cfg.get('loss')}; optimiser {optim.get('name')} lr {optim.get('lr')}; "
        f"{cfg.get('steps')} steps planned; config attached as `config.yaml`.",
        "",
        "## Input and output",
        f"- Input: {m.get('in_channels', 1)} channel(s) {', '.join(_channel_names(cfg, m.get('in_channels', 1)))}, "
        f"axes {'zyx' if m['ndim'] == 3 else 'yx'}; each channel scaled with its own "
        f"{cfg['data']['pmin']} / {cfg['data']['pmax']} percentiles (as in training); outputs in the same order.",
        "- Output: in the target's normalised units (0 = its 2nd percentile, about background; 1 = its 99.8th),"
        " clipped below at 0.",
    ]
    if cfg["data"].get("mode") == "isotropic":
        lines += [
            "- Isotropic restoration (CARE's IsotropicCARE): interpolate the volume linearly along Z to the lateral "
            "pixel size, run this 2D network on every XZ and every YZ plane and average the two results "
            "(`fmc-ij predict` does all of this and sets the Z voxel size).",
        ]
    lines += [
        "",
        "## Validation metrics (held-out specimens, fmc-ij's Fuse My Cells N_SSIM)",
    ]
    lines += [f"- {k}: {v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, float)] or ["- none recorded"]
    lines += [
        "",
        "## Limitations",
        "- Trained on the data above only; check new data with fmc-ij's SQUIRREL error maps and against the input.",
        f"- The test tensor has shape {shape}; tiles must be min + n*step per axis (see rdf.yaml).",
    ]
    return "\n".join(lines) + "\n"


def export(
    run: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    sample: np.ndarray | None = None,
    deepimagej: bool = True,
    authors: list[str] | None = None,
    notes: str = "",
    target: np.ndarray | None = None,
) -> Path:
    """Export a training run as a bioimage.io zip at ``out`` (tested first; nothing is left there on failure).

    Parameters
    ----------
    run : path
        A training run folder (``model.pt`` + config).
    out : path
        The ``.zip`` to write.
    sample : ndarray, optional
        A raw input image (YX / ZYX) for the test tensors and cover; default: the first training input.
    deepimagej : bool
        Rewrite ``rdf.yaml`` the way deepImageJ 3 reads it (format 0.5.10, plain-string documentation and covers).
    notes : str
        Extra README text (e.g. held-out scores), under "Notes".
    target : ndarray, optional
        The expensive acquisition matching ``sample``, shown in the cover (input | prediction | target).
    """
    _require()
    from bioimageio.core import test_model
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as s

    from fmc_ij.predict.model import load_one
    from fmc_ij.train.checkpoint import safe_load

    run, out = Path(run), Path(out)
    if out.suffix.lower() != ".zip":
        raise FmcInputError(f"--out {out}: a bioimage.io bundle is a .zip file; name it e.g. model.zip")
    if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents and out.exists():
        raise FmcInputError(f"--out {out} would overwrite an input of the run {run}; write the bundle elsewhere")
    p = load_one(run, "cpu")
    if len(p.nets) != 1:
        raise FmcInputError(f"{run}: an ensemble; export one member folder (e.g. {run}/member_0)")
    saved = safe_load(next(iter([run / "model.pt"] if run.is_dir() else [run])))
    cfg, mcfg = saved["config"], p.model
    net = p.nets[0].to(memory_format=torch.contiguous_format).eval()
    projection = mcfg.arch == "projection"
    if projection:  # 3D in, 2D out
        net.keep_z = False
    floor = mcfg.output_floor
    if mcfg.probabilistic:  # the floor goes into the network: a clip step would also clip the log-scale channel
        net.set_mean_floor(floor)
    nd = mcfg.ndim
    axes_ids = ["z", "y", "x"][-nd:]
    step = p.multiple
    halo = [_round_up(r, m) for r, m in zip(p.radius, step)]
    mins = [_round_up(2 * h + 1, m) for h, m in zip(halo, step)]
    n_ch = mcfg.in_channels
    x, tgt = _sample(sample, target, cfg, nd, n_ch)  # channel first
    # A sample smaller than the network's minimum tile is mirrored out to it (as prediction pads borders).
    pad = [(0, max(0, mn + st - n)) for n, mn, st in zip(x.shape[1:], mins, step)]
    if any(b for _, b in pad):
        x = np.pad(x, [(0, 0), *pad], mode="symmetric")
        tgt = np.pad(tgt, pad[-tgt.ndim :], mode="symmetric") if tgt is not None else None
    crop = _fit(x.shape[1:], mins, step)
    if projection:  # the projection needs the whole stack; the target is the 2D surface image
        crop = (slice(None), *crop[1:])
    x = np.ascontiguousarray(x[(slice(None), *crop)])
    tgt = np.asarray(tgt[crop[-tgt.ndim :]], np.float32) if tgt is not None else None
    lo, hi = np.percentile(x, (cfg["data"]["pmin"], cfg["data"]["pmax"]), axis=tuple(range(1, x.ndim)), keepdims=True)
    xn = ((x - lo) / (hi - lo + 1e-6)).astype(np.float32)  # each channel on its own (as scale_range)
    with torch.no_grad():
        y = net(torch.from_numpy(xn)[None]).numpy().astype(np.float32)
    if floor is not None:
        y[:, :n_ch] = np.maximum(y[:, :n_ch], floor)
    if float(np.abs(y[:, :n_ch]).max()) < 1e-4:  # bioimage.io refuses a test output without usable values
        raise FmcInputError(f"{run}: the model outputs zero everywhere on the sample image (not trained enough?); "
                            "train it longer, or pass another sample, before exporting")  # fmt: skip
    name = name or f"fmc-ij {mcfg.arch} {nd}D {run.name}"
    with tempfile.TemporaryDirectory(prefix="fmc-bmz-") as tmp:
        d = Path(tmp)
        np.save(d / "test_input.npy", x[None].astype(np.float32))
        np.save(d / "test_output.npy", y)
        torch.save(net.state_dict(), d / "weights.pt")
        torch.jit.script(net).save(str(d / "weights_torchscript.pt"))
        arch_name, callable_name = _ARCH_FILES[mcfg.arch]
        shutil.copy(Path(__file__).parent / "nn" / arch_name, d / arch_name)
        _cover(d / "cover.png", x[0].max(0) if projection else x[0], y[0, 0], tgt)
        readme = _readme(name, cfg, saved.get("metrics", {}), x.shape[1:])
        (d / "README.md").write_text(readme + (f"\n## Notes\n{notes}\n" if notes else ""))
        (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        in_names = _channel_names(cfg, n_ch)
        in_axes = [s.BatchAxis(), s.ChannelAxis(channel_names=[s.Identifier(c) for c in in_names])] + [
            s.SpaceInputAxis(id=s.AxisId(a), size=s.ParameterizedSize(min=mn, step=st))
            for a, mn, st in zip(axes_ids, mins, step)
        ]
        out_names = (in_names if n_ch > 1 else ["restored"]) + (["log_scale"] if mcfg.probabilistic else [])
        out_ids = list(zip(axes_ids, halo))[1:] if projection else list(zip(axes_ids, halo))
        out_axes = [s.BatchAxis(), s.ChannelAxis(channel_names=[s.Identifier(c) for c in out_names])] + [
            s.SpaceOutputAxisWithHalo(id=s.AxisId(a), halo=h,
                                      size=s.SizeReference(tensor_id=s.TensorId("raw"), axis_id=s.AxisId(a)))
            for a, h in out_ids
        ]  # fmt: skip
        pre = [s.ScaleRangeDescr(kwargs=s.ScaleRangeKwargs(
            axes=[s.AxisId(a) for a in axes_ids], min_percentile=cfg["data"]["pmin"],
            max_percentile=cfg["data"]["pmax"]))]  # fmt: skip
        post = [] if floor is None or mcfg.probabilistic else [s.ClipDescr(kwargs=s.ClipKwargs(min=float(floor)))]
        arch = s.ArchitectureFromFileDescr(source=d / arch_name, callable=s.Identifier(callable_name),
                                           kwargs=_arch_kwargs(mcfg, net))  # fmt: skip
        version = s.Version(torch.__version__.split("+")[0])
        cite = [s.CiteEntry(text="Weigert et al. 2018, Content-aware image restoration", doi=s.Doi(CARE_DOI))]
        if mcfg.arch == "wang":
            cite.append(s.CiteEntry(text="Wang et al. 2019, Deep learning enables cross-modality super-resolution",
                                    doi=s.Doi(WANG_DOI)))  # fmt: skip
        descr = s.ModelDescr(
            name=name,
            description="Image restoration (cheap acquisition -> expensive acquisition) trained with fmc-ij.",
            authors=[s.Author(name=a) for a in (authors or ["fmc-ij user"])],
            cite=cite,
            license=s.LicenseId("MIT"),
            documentation=s.FileDescr(source=d / "README.md"),
            covers=[s.FileDescr(source=d / "cover.png")],
            tags=["fmc-ij", "restoration", "light-sheet", f"{nd}d", "gan" if mcfg.arch == "wang" else "care"]
            + (["projection", "3d-to-2d"] if projection else []),
            attachments=[s.FileDescr(source=d / "config.yaml")],
            inputs=[s.InputTensorDescr(id=s.TensorId("raw"), axes=in_axes,
                                       test_tensor=s.FileDescr(source=d / "test_input.npy"), preprocessing=pre)],
            outputs=[s.OutputTensorDescr(id=s.TensorId("restored"), axes=out_axes,
                                         test_tensor=s.FileDescr(source=d / "test_output.npy"), postprocessing=post)],
            weights=s.WeightsDescr(
                pytorch_state_dict=s.PytorchStateDictWeightsDescr(source=d / "weights.pt", architecture=arch,
                                                                  pytorch_version=version),
                torchscript=s.TorchscriptWeightsDescr(source=d / "weights_torchscript.pt", pytorch_version=version,
                                                      parent="pytorch_state_dict"),
            ),
        )  # fmt: skip
        zip_tmp = d / "bundle.zip"
        save_bioimageio_package(descr, output_path=zip_tmp)
        if deepimagej:
            _deepimagej_compatible(zip_tmp)
        summary = test_model(zip_tmp)
        if summary.status != "passed":
            raise FmcInputError(f"the exported bundle failed bioimage.io's model test: {_failure(summary)}")
        with atomic_path(out) as target:
            shutil.copy(zip_tmp, target)
    return out


def _channel_names(cfg: dict[str, Any], n: int) -> list[str]:
    """The input channels' names: the training channels (one for ``fmc-ij train --per-channel``, C in order for
    a multi-channel model), else ``raw`` / ``channel_K``; deepImageJ shows them and bioimage.io identifiers
    allow letters, digits and ``_`` only."""
    chans = (cfg.get("data") or {}).get("channels") or []
    names = [re.sub(r"\W", "_", str(c)).strip("_") for c in chans] if len(chans) == n else []
    if names and all(c and not c[0].isdigit() for c in names) and len(set(names)) == n:
        return names
    return ["raw"] if n == 1 else [f"channel_{k}" for k in range(n)]


def _failure(summary: Any) -> str:
    for det in summary.details:
        if det.status != "passed":
            errs = "; ".join(str(e.msg) for e in (det.errors or []))[:300]
            return f"{det.name}: {errs}"
    return summary.status


def _sample(
    sample: np.ndarray | None, target: np.ndarray | None, cfg: dict[str, Any], nd: int, n_ch: int = 1
) -> tuple[np.ndarray, np.ndarray | None]:
    """A channel-first raw sample for the test tensors, and the first channel's target (for the cover)."""
    if sample is not None:
        x = np.asarray(sample, np.float32)
        if n_ch == 1:
            return x[None], target
        if x.ndim != nd + 1 or x.shape[0] != n_ch:
            raise FmcInputError(f"the sample needs {n_ch} channels first for this model; got shape {x.shape}")
        return x, (target[0] if target is not None and np.ndim(target) == nd + 1 else target)
    return _training_sample(cfg, nd, n_ch)


def _training_sample(cfg: dict[str, Any], nd: int, n_ch: int) -> tuple[np.ndarray, np.ndarray | None]:
    root = cfg["data"].get("root")
    if n_ch > 1 and root and Path(root).exists():
        from fmc_ij.data import load_pairs, stack_channels

        d = cfg["data"]
        first = stack_channels(load_pairs(root, low=d.get("low"), high=d.get("high")), d.get("channels"))[0]
        x = np.stack([np.asarray(p.low, np.float32) for p in first.parts])
        y = np.asarray(first.parts[0].high, np.float32)
        return (x, y) if x.ndim == nd + 1 else (x[:, x.shape[1] // 2], y[y.shape[0] // 2])
    if root and Path(root).exists():
        from fmc_ij.io import discover, imread

        pairs = discover(root, low=cfg["data"].get("low"), high=cfg["data"].get("high"))
        if pairs:
            lo = imread(pairs[0].low).data.astype(np.float32)
            hi = imread(pairs[0].high).data.astype(np.float32) if pairs[0].high else None
            if lo.ndim != nd:
                lo, hi = lo[lo.shape[0] // 2], (hi[hi.shape[0] // 2] if hi is not None else None)
            return lo[None], hi
    raise FmcInputError("no sample image for the bundle's test tensors: pass sample= (or keep the training data)")


def _fit(shape: tuple[int, ...], mins: list[int], step: list[int]) -> tuple[slice, ...]:
    """The centre crop of the smallest valid size (min + 1 step: small bundles, still a real tile)."""
    sl = []
    for n, mn, st in zip(shape, mins, step):
        if n < mn:
            raise FmcInputError(f"sample image too small ({shape}) for the network's minimum tile {mins}")
        size = mn + st if n >= mn + st else mn
        lo = (n - size) // 2
        sl.append(slice(lo, lo + size))
    return tuple(sl)


def _deepimagej_compatible(zip_path: Path) -> None:
    """deepImageJ 3 (JDLL) reads ``documentation`` as a string and ``covers`` as strings (format < 0.5.11)."""
    with zipfile.ZipFile(zip_path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    rdf = yaml.safe_load(entries["rdf.yaml"])
    rdf["format_version"] = "0.5.10"
    if isinstance(rdf.get("documentation"), dict):
        rdf["documentation"] = rdf["documentation"]["source"]
    rdf["covers"] = [c["source"] if isinstance(c, dict) else c for c in rdf.get("covers", [])]
    entries["rdf.yaml"] = yaml.safe_dump(rdf, sort_keys=False).encode()
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in entries.items():
            z.writestr(n, data)


def safe_extract(bundle: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack a bundle, refusing entries with absolute paths or ``..`` (path traversal)."""
    dest = Path(dest)
    if not zipfile.is_zipfile(bundle):
        raise FmcInputError(
            f"{bundle}: not a zip file (damaged or not a bioimage.io bundle); re-export or re-download it"
        )
    with zipfile.ZipFile(bundle) as z:
        for n in z.namelist():
            if n.startswith(("/", "\\")) or ".." in Path(n).parts or ":" in n.split("/")[0]:
                raise FmcInputError(f"{bundle}: refusing zip entry {n!r} (absolute or parent path)")
        z.extractall(dest)
    return dest


def load_bundle(bundle: str | os.PathLike, dest: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(rdf, state_dict) of a bundle, unpacked safely into ``dest``; weights load with ``weights_only=True``."""
    root = safe_extract(bundle, dest)
    rdf = yaml.safe_load((root / "rdf.yaml").read_text())
    entry = (rdf.get("weights") or {}).get("pytorch_state_dict")
    if not entry:
        raise FmcInputError(f"{bundle}: no pytorch_state_dict weights; fmc-ij reads those")
    try:
        state = torch.load(root / entry["source"], map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError for anything but tensors and containers
        raise FmcInputError(f"{bundle}: refusing its weights: not a plain state dict ({type(err).__name__})") from None
    return rdf, state
