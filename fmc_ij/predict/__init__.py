"""Prediction: tiled and seam-free (receptive-field halo), 2D and 3D, ensembles and Laplace uncertainty,
fallback to the input, files with metadata kept (the challenge container layout).

>>> from fmc_ij.predict import load_predictor, predict_files
>>> p = load_predictor("runs/care3d")                                  # doctest: +SKIP
>>> predict_files(p, ["/input/images/..."], "/output/images/...")      # doctest: +SKIP
"""

from fmc_ij.predict.core import Prediction, difference_weight, fallback_blend, predict_array
from fmc_ij.predict.files import collect_inputs, predict_file, predict_files, write_prediction
from fmc_ij.predict.model import ChannelPredictors, Predictor, load_one, load_predictor
from fmc_ij.predict.restore import Restored, restore
from fmc_ij.predict.tiles import Tile, pad_tile, tile_grid

__all__ = [
    "ChannelPredictors",
    "Prediction",
    "Predictor",
    "Restored",
    "Tile",
    "collect_inputs",
    "difference_weight",
    "fallback_blend",
    "load_one",
    "load_predictor",
    "pad_tile",
    "predict_array",
    "predict_file",
    "predict_files",
    "restore",
    "tile_grid",
    "write_prediction",
]
