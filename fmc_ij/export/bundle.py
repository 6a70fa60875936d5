"""bioimage.io model bundles (spec 0.5) from stored fmc-ij models, built with bioimageio.spec's own models and tested
with bioimageio.core before the zip is published; deepImageJ 3.1-compatible by default.

The bundle holds TorchScript weights (deepImageJ / libtorch) and pytorch_state_dict weights whose architecture is
fmc-ij's own network file (it imports only torch), the percentile pre-processing of training (over the whole
volume, also for a 2D model trained on volumes: its bundle takes the volume and restores each plane), the output
floor as ``clip``, axes with the receptive radius as halo, test tensors, a cover, a README and the model's
contract with its training config (``config.yaml``), which :func:`fmc_ij.model_io.read_model` reads back.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from fmc_ij.errors import FmcInputError
from fmc_ij.export import deepimagej as dij
from fmc_ij.export.docs import cover, readme
from fmc_ij.export.jdll import bundle_problems
from fmc_ij.io import atomic_path
from fmc_ij.model_io import BUNDLE_CONFIG, FMC_TAG, ModelContract, StoredModel, read_one
from fmc_ij.nn.factory import ARCHITECTURES
from fmc_ij.nn.infer import receptive_radius, size_multiple
from fmc_ij.norm import Normalizer

CARE_DOI, WANG_DOI = "10.1038/s41592-018-0216-7", "10.1038/s41592-018-0239-0"


def _require() -> None:
    try:
        import bioimageio.core  # noqa: F401
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise FmcInputError("bioimage.io export needs bioimageio.core: pip install 'fmc-ij[bioimageio]'") from None


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


@dataclass
class Layout:
    """The bundle's spatial axes: ids (``z``, ``y``, ``x``), the size step, the output halo, the smallest tile, and
    the fixed tile size when deepImageJ needs one (``None``: parameterised sizes ``min + n * step``)."""

    axes: list[str]
    step: list[int]
    halo: list[int]
    mins: list[int]
    fixed: list[int] | None
    planes: bool  # a 2D network taking a volume, plane by plane
    out_axes: list[str]  # the projection drops z


def layout(
    c: ModelContract, net: torch.nn.Module, fixed_tiles: bool = False, *, memory_mb: float | None = None,
    stack_z: int | None = None,
) -> Layout:  # fmt: skip
    """The axes a bundle of ``net`` declares (see :class:`Layout`); with ``fixed_tiles`` the tile deepImageJ needs,
    within ``memory_mb`` of activations (a projection's Z is its whole stack, ``stack_z``; a 2D-on-volume bundle
    takes one plane per tile)."""
    nd = c.ndim
    step, radius = size_multiple(net, nd), receptive_radius(net, nd)
    planes = nd == 2 and len(c.data.axes or "") == 3  # a 2D model trained on volumes takes the volume
    if planes:
        step, radius = [1, *step], [0, *radius]
    axes = ["z", "y", "x"][-len(step) :]
    halo = [_round_up(r, m) for r, m in zip(radius, step)]
    mins = [_round_up(2 * h + 1, m) for h, m in zip(halo, step)]
    fixed = None
    if fixed_tiles:
        lead = 1 if planes or c.task == "projection" else 0  # Z is not tiled: one plane, or the whole stack
        mem = dij.TILE_MEMORY_MB if memory_mb is None else memory_mb
        tile = dij.fixed_tile(halo[lead:], step[lead:], mins[lead:], c.network.base, mem)
        fixed = ([1 if planes else int(stack_z or mins[0])] if lead else []) + tile
    out_axes = axes[1:] if c.task == "projection" else axes
    return Layout(axes, step, halo, mins, fixed, planes, out_axes)


def _arch_kwargs(c: ModelContract, net: torch.nn.Module, planes: bool) -> dict[str, Any]:
    """The exported network's constructor arguments (what bioimage.io's state-dict runner builds)."""
    m = c.network
    if m.arch == "projection":  # the bundle's network returns the 2D image itself (keep_z off)
        return {"in_channels": m.in_channels, "out_channels": m.out_channels, "depth": m.depth, "base": m.base,
                "kernel": m.kernel, "proj_depth": m.proj_depth, "proj_base": m.proj_base, "residual": m.residual,
                "keep_z": False}  # fmt: skip
    if m.arch == "wang":
        kw = {"ndim": m.ndim, "in_channels": m.in_channels, "out_channels": m.out_channels, "base": m.base,
              "depth": m.depth}  # fmt: skip
    else:
        kw = {"ndim": m.ndim, "in_channels": m.in_channels, "out_channels": m.out_channels, "depth": m.depth,
              "base": m.base, "kernel": m.kernel, "residual": m.residual, "norm": m.norm, "pool": m.pool,
              "probabilistic": m.probabilistic}  # fmt: skip
        if m.widths or m.upsample != "transposed":
            kw.update(widths=m.widths, upsample=m.upsample)
        if getattr(net, "clamp_mean", False):
            kw["mean_floor"] = net.mean_floor
    if planes:
        kw["planes"] = True
    return kw


def channel_names(c: ModelContract) -> list[str]:
    """The input channels' names as bioimage.io identifiers (letters, digits, ``_``): the model's channels, or the
    one channel a per-channel model was trained on, else ``raw`` / ``channel_K``."""
    n = c.network.in_channels
    chans = c.channels or (c.data.channels if n == 1 and len(c.data.channels) == 1 else [])
    names = [re.sub(r"\W", "_", str(x)).strip("_") for x in chans] if len(chans) == n else []
    if names and all(x and not x[0].isdigit() for x in names) and len(set(names)) == n:
        return names
    return ["raw"] if n == 1 else [f"channel_{k}" for k in range(n)]


def _network(m: StoredModel, lay: Layout) -> torch.nn.Module:
    """The network as the bundle runs it: contiguous, 2D-on-volume plane folding, projection without Z repeat,
    a probabilistic model's floor inside (a ``clip`` would also clip its log-scale channels)."""
    net = m.networks("cpu")[0].to(memory_format=torch.contiguous_format).eval()
    if m.contract.task == "projection":
        net.keep_z = False
    if lay.planes:
        net.planes = True
    if m.contract.network.probabilistic:
        net.set_mean_floor(m.contract.output_floor)
    return net


def test_tensors(
    m: StoredModel, net: torch.nn.Module, lay: Layout, sample: np.ndarray, target: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(test input with batch and channel axes, the network's output on it, the cropped target) from a raw,
    channel-first sample: cropped (or mirrored out) to one valid size, scaled as bioimage.io's ``scale_range``."""
    c = m.contract
    x, tgt = sample, target
    spatial = len(lay.axes)
    if x.ndim - 1 < spatial:  # a plane for a 2D-on-volume bundle: one plane is a volume of one
        x = x[:, None]
    elif x.ndim - 1 > spatial:  # a volume for a 2D model trained on planes: its middle plane
        x, tgt = x[:, x.shape[1] // 2], (tgt[tgt.shape[0] // 2] if tgt is not None and tgt.ndim == 3 else tgt)
    want = lay.fixed or [mn + st for mn, st in zip(lay.mins, lay.step)]
    if c.task == "projection":  # the projection needs the whole stack
        want = [x.shape[1], *want[1:]]
    pad = [(0, max(0, w - n)) for n, w in zip(x.shape[1:], want)]
    if any(b for _, b in pad):  # a small sample is mirrored out (as prediction pads borders)
        x = np.pad(x, [(0, 0), *pad], mode="symmetric")
        tgt = np.pad(tgt, pad[-tgt.ndim :], mode="symmetric") if tgt is not None else None
    crop = tuple(slice((n - w) // 2, (n - w) // 2 + w) for n, w in zip(x.shape[1:], want))
    x = np.ascontiguousarray(x[(slice(None), *crop)], np.float32)
    tgt = np.asarray(tgt[crop[-tgt.ndim :]], np.float32) if tgt is not None else None
    n = c.normalization
    xn = np.stack([Normalizer.fit(ch, n.pmin, n.pmax, max_samples=None)(ch) for ch in x])  # per channel
    with torch.no_grad():
        y = net(torch.from_numpy(xn)[None]).numpy().astype(np.float32)
    oc = c.network.out_channels
    if c.output_floor is not None:
        y[:, :oc] = np.maximum(y[:, :oc], c.output_floor)
    if float(np.abs(y[:, :oc]).max()) < 1e-4:  # bioimage.io refuses a test output without usable values
        raise FmcInputError(f"{m.source}: the model outputs zero everywhere on the sample image (not trained "
                            "enough?); train it longer, or pass another sample, before exporting")  # fmt: skip
    return x[None], y, tgt


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
    tile_memory_mb: float | None = None,
) -> Path:
    """Export a stored model as a bioimage.io zip at ``out`` (tested first; nothing is left there on failure).

    Parameters
    ----------
    run : path
        A training run folder, ``model.pt``, checkpoint or fmc-ij bundle (:func:`fmc_ij.model_io.read_model`).
    out : path
        The ``.zip`` to write.
    sample : ndarray, optional
        A raw input image (YX / ZYX, channels first for a multi-channel model) for the test tensors and cover;
        default: the first training input.
    deepimagej : bool
        Write what deepImageJ 3.1 needs (:mod:`fmc_ij.export.deepimagej`): fixed tiles, format 0.5.10 with plain
        strings; checked with :func:`fmc_ij.export.jdll.bundle_problems`. Off: parameterised sizes (newest layout).
    tile_memory_mb : float, optional
        Peak activation memory of one deepImageJ tile (default :data:`fmc_ij.export.deepimagej.TILE_MEMORY_MB`);
        sets the fixed tile, and the test tensor, whose size bioimage.io's test then runs.
    notes : str
        Extra README text (e.g. held-out scores), under "Notes".
    target : ndarray, optional
        The expensive acquisition matching ``sample``, shown in the cover (input | prediction | target).
    """
    _require()
    run, out = Path(run), Path(out)
    if out.suffix.lower() != ".zip":
        raise FmcInputError(f"--out {out}: a bioimage.io bundle is a .zip file; name it e.g. model.zip")
    if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents and out.exists():
        raise FmcInputError(f"--out {out} would overwrite an input of the run {run}; write the bundle elsewhere")
    m = read_one(run, members=False)
    if m.members != 1:
        raise FmcInputError(f"{run}: an ensemble; export one member folder (e.g. {run}/member_0)")
    c = m.contract
    net0 = m.networks("cpu")[0]
    x0, tgt0 = _sample(sample, target, m)
    mem = dij.TILE_MEMORY_MB if tile_memory_mb is None else tile_memory_mb
    lay = layout(c, net0, deepimagej, memory_mb=mem, stack_z=x0.shape[1] if c.task == "projection" else None)
    net = _network(m, lay)
    x, y, tgt = test_tensors(m, net, lay, x0, tgt0)
    name = name or f"fmc-ij {c.network.arch} {c.ndim}D {run.stem}"
    with tempfile.TemporaryDirectory(prefix="fmc-bmz-") as tmp:
        zip_tmp = _package(Path(tmp), m, net, lay, x, y, tgt, name=name, authors=authors, notes=notes)
        if deepimagej:
            dij.make_compatible(zip_tmp)
            with zipfile.ZipFile(zip_tmp) as z:
                problems = bundle_problems(yaml.safe_load(z.read("rdf.yaml")))
            if problems:  # a rule of deepImageJ's this exporter broke: a bug here, not the user's
                raise RuntimeError(f"the bundle would not run in deepImageJ: {'; '.join(problems)}")
        _test(zip_tmp)
        with atomic_path(out) as final:
            shutil.copy(zip_tmp, final)
    return out


def _test(zip_path: Path) -> None:
    from bioimageio.core import test_model

    summary = test_model(zip_path)
    if summary.status != "passed":
        raise FmcInputError(f"the exported bundle failed bioimage.io's model test: {_failure(summary)}")


def _package(
    d: Path, m: StoredModel, net: torch.nn.Module, lay: Layout, x: np.ndarray, y: np.ndarray,
    tgt: np.ndarray | None, *, name: str, authors: list[str] | None, notes: str,
) -> Path:  # fmt: skip
    """Write the bundle's files into ``d`` and package them (``d/bundle.zip``)."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as s

    c = m.contract
    np.save(d / "test_input.npy", x)
    np.save(d / "test_output.npy", y)
    torch.save(net.state_dict(), d / "weights.pt")
    torch.jit.script(net).save(str(d / "weights_torchscript.pt"))
    cls = ARCHITECTURES[c.network.arch]
    arch_file = Path(__import__(cls.__module__, fromlist=["_"]).__file__)  # type: ignore[arg-type]
    shutil.copy(arch_file, d / arch_file.name)
    plane = x[0, 0].max(0) if c.task == "projection" else x[0, 0]
    cover(d / "cover.png", plane, y[0, 0], tgt)
    (d / "README.md").write_text(readme(name, c, m.training, tuple(x.shape[2:]), lay.planes, notes))
    attached = {"contract": c.dump(), "training": m.training or {}}
    (d / BUNDLE_CONFIG).write_text(yaml.safe_dump(attached, sort_keys=False))
    in_names = channel_names(c)

    def size(i: int) -> Any:
        if lay.fixed is not None:
            return int(lay.fixed[i])
        return s.ParameterizedSize(min=lay.mins[i], step=lay.step[i])

    in_axes = [s.BatchAxis(), s.ChannelAxis(channel_names=[s.Identifier(n) for n in in_names])] + [
        s.SpaceInputAxis(id=s.AxisId(a), size=size(i)) for i, a in enumerate(lay.axes)
    ]
    oc = c.network.out_channels
    out_names = (in_names if oc > 1 else ["restored"]) + (["log_scale"] if c.network.probabilistic else [])
    halo = dict(zip(lay.axes, lay.halo))
    out_axes = [s.BatchAxis(), s.ChannelAxis(channel_names=[s.Identifier(n) for n in out_names])] + [
        s.SpaceOutputAxisWithHalo(id=s.AxisId(a), halo=halo[a],
                                  size=s.SizeReference(tensor_id=s.TensorId("raw"), axis_id=s.AxisId(a)))
        if halo[a] else s.SpaceOutputAxis(id=s.AxisId(a), size=s.SizeReference(tensor_id=s.TensorId("raw"),
                                                                                axis_id=s.AxisId(a)))
        for a in lay.out_axes
    ]  # fmt: skip
    n = c.normalization
    pre = [s.ScaleRangeDescr(kwargs=s.ScaleRangeKwargs(axes=[s.AxisId(a) for a in lay.axes], min_percentile=n.pmin,
                                                       max_percentile=n.pmax))]  # fmt: skip
    post = []
    if c.output_floor is not None and not c.network.probabilistic:  # both bounds: deepImageJ needs max too
        post = [s.ClipDescr(kwargs=s.ClipKwargs(min=float(c.output_floor), max=dij.CLIP_MAX))]
    arch = s.ArchitectureFromFileDescr(source=d / arch_file.name, callable=s.Identifier(cls.__name__),
                                       kwargs=_arch_kwargs(c, net, lay.planes))  # fmt: skip
    version = s.Version(torch.__version__.split("+")[0])
    cite = [s.CiteEntry(text="Weigert et al. 2018, Content-aware image restoration", doi=s.Doi(CARE_DOI))]
    if c.network.arch == "wang":
        cite.append(s.CiteEntry(text="Wang et al. 2019, Deep learning enables cross-modality super-resolution",
                                doi=s.Doi(WANG_DOI)))  # fmt: skip
    tags = [FMC_TAG, "restoration", "light-sheet", f"{c.ndim}d", "gan" if c.network.arch == "wang" else "care"]
    descr = s.ModelDescr(
        name=name,
        description="Image restoration (cheap acquisition -> expensive acquisition) trained with fmc-ij.",
        authors=[s.Author(name=a) for a in (authors or ["fmc-ij user"])],
        cite=cite,
        license=s.LicenseId("MIT"),
        documentation=s.FileDescr(source=d / "README.md"),
        covers=[s.FileDescr(source=d / "cover.png")],
        tags=tags + (["projection", "3d-to-2d"] if c.task == "projection" else []) + [c.task],
        attachments=[s.FileDescr(source=d / BUNDLE_CONFIG)],
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
        config=s.Config(bioimageio=s.BioimageioConfig(nickname=dij.nickname(name))),
    )  # fmt: skip
    zip_path = d / "bundle.zip"
    save_bioimageio_package(descr, output_path=zip_path)
    return zip_path


def _failure(summary: Any) -> str:
    for det in summary.details:
        if det.status != "passed":
            errs = "; ".join(str(e.msg) for e in (det.errors or []))[:300]
            return f"{det.name}: {errs}"
    return summary.status


def _sample(sample: np.ndarray | None, target: np.ndarray | None, m: StoredModel) -> tuple[np.ndarray, Any]:
    """A channel-first raw sample for the test tensors, and the first channel's target (for the cover)."""
    n_ch = m.contract.network.in_channels
    nd = m.contract.ndim
    if sample is not None:
        x = np.asarray(sample, np.float32)
        if n_ch == 1:
            return x[None], target
        if x.ndim < 3 or x.shape[0] != n_ch:
            raise FmcInputError(f"the sample needs {n_ch} channels first for this model; got shape {x.shape}")
        return x, (target[0] if target is not None and np.ndim(target) == x.ndim else target)
    return _training_sample(m, nd, n_ch)


def _training_sample(m: StoredModel, nd: int, n_ch: int) -> tuple[np.ndarray, np.ndarray | None]:
    d = (m.training or {}).get("data") or {}
    root = d.get("root")
    if n_ch > 1 and root and Path(root).exists():
        from fmc_ij.data import load_pairs, stack_channels

        first = stack_channels(load_pairs(root, low=d.get("low"), high=d.get("high")), m.contract.channels)[0]
        return np.stack([np.asarray(p.low, np.float32) for p in first.parts]), np.asarray(first.parts[0].high)
    if root and Path(root).exists() and d.get("mode") == "isotropic":  # volumes, no pairs
        from fmc_ij.io import imread

        vols = sorted(p for p in Path(root).rglob(d.get("low") or "*.tif*") if p.is_file())
        if vols:
            return imread(vols[0]).data.astype(np.float32)[None], None
    if root and Path(root).exists():
        from fmc_ij.io import discover, imread

        pairs = discover(root, low=d.get("low"), high=d.get("high"))
        if pairs:
            lo = imread(pairs[0].low).data.astype(np.float32)
            hi = imread(pairs[0].high).data.astype(np.float32) if pairs[0].high else None
            return lo[None], hi
    raise FmcInputError("no sample image for the bundle's test tensors: pass sample= (or keep the training data)")
