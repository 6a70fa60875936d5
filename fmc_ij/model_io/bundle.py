"""bioimage.io bundles as stored models: finding and reading their ``rdf.yaml`` (zip, folder or the yaml itself),
unpacking them safely, and reading fmc-ij's own bundles back into a :class:`StoredModel`.

An fmc-ij bundle attaches ``config.yaml`` holding the model's contract and its training config; bundles written
before contracts existed are read from their rdf (architecture kwargs, ``scale_range``, ``clip``) and their
attached training config.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml

from fmc_ij.errors import FmcInputError
from fmc_ij.model_io.contract import ModelContract, contract_from_config
from fmc_ij.model_io.stored import StoredModel
from fmc_ij.nn.factory import ARCHITECTURES, arch_name

#: The bundle attachment with the contract (``contract``) and the training config (``training``).
BUNDLE_CONFIG = "config.yaml"
#: The tag every fmc-ij bundle carries.
FMC_TAG = "fmc-ij"
#: Keyword arguments of a bundle's architecture that only shape the exported network, not the model.
EXPORT_ONLY_KWARGS = ("keep_z", "planes", "mean_floor")


def _rdf_name(names: list[str]) -> str | None:
    """The description file among a bundle's entries: ``rdf.yaml``, ``bioimageio.yaml`` or ``*.bioimageio.yaml``."""
    top = [n for n in names if "/" not in n.strip("/")]
    for want in ("rdf.yaml", "bioimageio.yaml"):
        if want in top:
            return want
    return next((n for n in sorted(top) if n.endswith(".bioimageio.yaml")), None)


def rdf_path(path: str | os.PathLike) -> Path | None:
    """The rdf of a bundle folder or yaml file (None when ``path`` is neither)."""
    path = Path(path)
    if path.is_file() and _rdf_name([path.name]) is not None:
        return path
    if path.is_dir():
        name = _rdf_name([p.name for p in path.iterdir() if p.is_file()])
        return path / name if name else None
    return None


def is_bundle(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a bioimage.io bundle: a ``.zip``, an rdf yaml, or a folder holding one."""
    path = Path(path)
    return path.suffix.lower() == ".zip" or rdf_path(path) is not None


def read_rdf(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed rdf of a bundle (zip, folder or yaml), without unpacking anything."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".zip":
            if not zipfile.is_zipfile(path):
                raise FmcInputError(f"{path}: not a zip file (damaged or not a bioimage.io bundle); re-export or "
                                    "re-download it")  # fmt: skip
            with zipfile.ZipFile(path) as z:
                name = _rdf_name(z.namelist())
                if name is None:
                    raise FmcInputError(f"{path}: no rdf.yaml inside; not a bioimage.io bundle")
                text = z.read(name)
        else:
            rdf = rdf_path(path)
            if rdf is None:
                raise FmcInputError(f"{path}: no rdf.yaml or bioimageio.yaml; not a bioimage.io bundle")
            text = rdf.read_bytes()
        rdf_dict = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise FmcInputError(f"{path}: its rdf is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(rdf_dict, dict):
        raise FmcInputError(f"{path}: its rdf is not a mapping; not a bioimage.io bundle")
    return rdf_dict


def is_fmc_bundle(path: str | os.PathLike) -> bool:
    """Whether a bundle was exported by fmc-ij: its tag and one of fmc-ij's networks as its architecture."""
    rdf = read_rdf(path)
    arch = ((rdf.get("weights") or {}).get("pytorch_state_dict") or {}).get("architecture") or {}
    return FMC_TAG in (rdf.get("tags") or []) and arch_name(str(arch.get("callable"))) is not None


def safe_extract(bundle: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack a bundle, refusing entries with absolute paths or ``..`` (path traversal)."""
    dest = Path(dest)
    if not zipfile.is_zipfile(bundle):
        raise FmcInputError(f"{bundle}: not a zip file (damaged or not a bioimage.io bundle); re-export or "
                            "re-download it")  # fmt: skip
    with zipfile.ZipFile(bundle) as z:
        for n in z.namelist():
            if n.startswith(("/", "\\")) or ".." in Path(n).parts or ":" in n.split("/")[0]:
                raise FmcInputError(f"{bundle}: refusing zip entry {n!r} (absolute or parent path)")
        z.extractall(dest)
    return dest


def load_bundle(bundle: str | os.PathLike, dest: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(rdf, state_dict) of an fmc-ij bundle, unpacked safely into ``dest``; weights load with ``weights_only``."""
    root = safe_extract(bundle, dest)
    rdf = read_rdf(root)
    entry = (rdf.get("weights") or {}).get("pytorch_state_dict")
    if not entry:
        raise FmcInputError(f"{bundle}: no pytorch_state_dict weights; fmc-ij reads those")
    try:
        state = torch.load(root / entry["source"], map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError for anything but tensors and containers
        raise FmcInputError(f"{bundle}: refusing its weights: not a plain state dict ({type(err).__name__})") from None
    return rdf, state


def _legacy_contract(rdf: dict[str, Any], training: dict[str, Any]) -> ModelContract:
    """The contract of a bundle written before contracts: the network from the rdf's architecture, the
    percentiles from ``scale_range``, the output floor from ``clip`` (or the probabilistic network's floor)."""
    arch = rdf["weights"]["pytorch_state_dict"].get("architecture", {})
    kwargs = dict(arch.get("kwargs", {}))
    mean_floor = kwargs.get("mean_floor")
    kwargs = {k: v for k, v in kwargs.items() if k not in EXPORT_ONLY_KWARGS}
    inp, out = rdf["inputs"][0], rdf["outputs"][0]
    pre = {op["id"]: op.get("kwargs", {}) for op in inp.get("preprocessing", [])}
    post = {op["id"]: op.get("kwargs", {}) for op in out.get("postprocessing", [])}
    floor = mean_floor if mean_floor is not None else post.get("clip", {}).get("min")
    rng = pre.get("scale_range", {})
    network = {"arch": arch_name(str(arch.get("callable"))), **kwargs, "output_floor": floor}
    data = dict(training.get("data") or {})
    data.update({"pmin": rng.get("min_percentile", 2.0), "pmax": rng.get("max_percentile", 99.8)})
    contract = contract_from_config({**training, "model": network, "data": data})
    if contract.network.in_channels > 1:
        ch = [a for a in inp["axes"] if isinstance(a, dict) and a.get("type") == "channel"]
        names = [str(c) for c in (ch[0].get("channel_names") or [])] if ch else []
        contract = contract.model_copy(update={"channels": names})
    return contract


def bundle_contract(rdf: dict[str, Any], attached: dict[str, Any] | None, source: str) -> ModelContract:
    """The contract of an fmc-ij bundle from its rdf and its attached ``config.yaml``."""
    attached = attached or {}
    if "contract" in attached:
        return ModelContract.parse(attached["contract"], source)
    return _legacy_contract(rdf, attached)


def read_bundle(path: str | os.PathLike) -> StoredModel:
    """An fmc-ij bundle as a :class:`StoredModel`; another tool's bundle is refused."""
    path = Path(path)
    if not is_fmc_bundle(path):
        raise FmcInputError(f"{path}: a bioimage.io model from another tool; this step needs an fmc-ij model (run "
                            "folder or fmc-ij bundle)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fmc-bundle-") as tmp:
        if path.suffix.lower() == ".zip":
            rdf, state = load_bundle(path, tmp)
            root = Path(tmp)
        else:
            root = rdf_path(path).parent  # type: ignore[union-attr]
            rdf = read_rdf(path)
            entry = rdf["weights"]["pytorch_state_dict"]
            try:
                state = torch.load(root / entry["source"], map_location="cpu", weights_only=True)
            except Exception as err:
                raise FmcInputError(f"{path}: refusing its weights: not a plain state dict ({type(err).__name__})"
                                    ) from None  # fmt: skip
        attached = None
        if (root / BUNDLE_CONFIG).is_file():
            try:
                attached = yaml.safe_load((root / BUNDLE_CONFIG).read_text())
            except yaml.YAMLError:
                raise FmcInputError(f"{path}: its {BUNDLE_CONFIG} is not valid YAML; re-export the bundle") from None
    contract = bundle_contract(rdf, attached if isinstance(attached, dict) else None, str(path))
    assert contract.network.arch in ARCHITECTURES
    training = (attached or {}).get("training") if attached and "contract" in attached else attached
    return StoredModel(contract, [state], path, "bundle", training, {"rdf": rdf})
