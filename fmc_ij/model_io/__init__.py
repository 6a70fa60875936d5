"""The stored-model contract: one place that writes and reads trained models.

Training writes a model with :func:`write_model`; prediction, fine-tuning (``--init``) and export read it back
with :func:`read_model` from a run folder, an ensemble, a per-channel folder, a model file, a checkpoint or an
fmc-ij bioimage.io bundle, and get the same :class:`ModelContract` (network, normalisation, task, channels,
output floor, training voxel size, provenance) and weights from each.

>>> from fmc_ij.model_io import read_model
>>> m = read_model("runs/care3d")                       # doctest: +SKIP
>>> m.contract.task, m.contract.normalization.pmin      # doctest: +SKIP
('restore', 2.0)
"""

from fmc_ij.model_io.bundle import (
    BUNDLE_CONFIG,
    FMC_TAG,
    is_bundle,
    is_fmc_bundle,
    load_bundle,
    read_bundle,
    read_rdf,
    safe_extract,
)
from fmc_ij.model_io.contract import (
    CONTRACT_FORMAT,
    Calibration,
    GateCalibration,
    ModelContract,
    Normalization,
    Provenance,
    Task,
    TrainingData,
    contract_from_config,
)
from fmc_ij.model_io.store import contract_of, read_model, read_one, write_model
from fmc_ij.model_io.stored import MODEL_FILE, ChannelModels, StoredModel, safe_load

__all__ = [
    "BUNDLE_CONFIG",
    "CONTRACT_FORMAT",
    "Calibration",
    "GateCalibration",
    "FMC_TAG",
    "MODEL_FILE",
    "ChannelModels",
    "ModelContract",
    "Normalization",
    "Provenance",
    "StoredModel",
    "Task",
    "TrainingData",
    "contract_from_config",
    "contract_of",
    "is_bundle",
    "is_fmc_bundle",
    "load_bundle",
    "read_bundle",
    "read_model",
    "read_one",
    "read_rdf",
    "safe_extract",
    "safe_load",
    "write_model",
]
