"""The benchmarks' shared data: fmc-ij's built-in synthetic light-sheet data (nucleus channel), made once.

``DATA_DIR`` (``.bench/data``, or ``$FMC_BENCH_DATA``) receives

- ``train/low/vol{i}.tif``, ``train/high/vol{i}.tif``: 4 specimens, 48x192x192 at 1.0/0.4/0.4 um, the single
  view (input) and the fused view (target), already aligned;
- ``heldout/low.tif``, ``heldout/high.tif``: one 64x256x256 specimen of another seed (prediction, N_SSIM, SSIM);
- ``plane/low.tif``, ``plane/high.tif``: a 1024x1024 single-view / fused plane pair (SQUIRREL).

:func:`ensure_large` adds, on first use (about 2.5 min), the registration benchmark's sizes:

- ``large/plane_low.tif``, ``large/plane_high.tif``: a 2048x2048 single-view / fused plane pair;
- ``large/volume_low.tif``, ``large/volume_high.tif``: a 128x512x512 single-view / fused volume pair.

Plain ImageJ-flavoured TIFFs, which every peer reads with ``tifffile``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from _bench import DATA_DIR

VERSION = 1
TRAIN_SHAPE, HELDOUT_SHAPE, PLANE_SHAPE = (48, 192, 192), (64, 256, 256), (16, 1024, 1024)
SPACING = (1.0, 0.4, 0.4)


def _write(path: Path, arr: np.ndarray) -> None:
    from fmc_ij.io import ImageMeta, imwrite

    axes = "ZYX" if arr.ndim == 3 else "YX"
    spacing = dict(zip(axes, SPACING[-arr.ndim :]))
    imwrite(path, arr, ImageMeta(axes=axes, spacing=spacing, unit="µm"))


def ensure_data(root: Path = DATA_DIR) -> Path:
    """Simulate the data unless ``root`` already holds this version of it; return ``root``."""
    stamp = root / "bench-data.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("version") == VERSION:
        return root
    from fmc_ij.synthetic import LightSheetConfig
    from fmc_ij.synthetic.lightsheet import simulate_lightsheet

    def views(shape: tuple[int, int, int], seed: int) -> dict[str, np.ndarray]:
        cfg = LightSheetConfig(shape=shape, spacing=SPACING)
        return simulate_lightsheet(cfg, seed=seed, channels=("nucleus",), truth=False)["nucleus"]

    for i in range(4):
        v = views(TRAIN_SHAPE, seed=i)
        _write(root / "train" / "low" / f"vol{i}.tif", v["angle"])
        _write(root / "train" / "high" / f"vol{i}.tif", v["fused"])
    v = views(HELDOUT_SHAPE, seed=1000)
    _write(root / "heldout" / "low.tif", v["angle"])
    _write(root / "heldout" / "high.tif", v["fused"])
    v = views(PLANE_SHAPE, seed=2000)
    z = PLANE_SHAPE[0] // 2
    _write(root / "plane" / "low.tif", v["angle"][z])
    _write(root / "plane" / "high.tif", v["fused"][z])
    stamp.write_text(json.dumps({"version": VERSION, "spacing_um": SPACING}) + "\n")
    return root


LARGE_PLANE, LARGE_VOLUME = (16, 2048, 2048), (128, 512, 512)


def ensure_large(root: Path = DATA_DIR) -> Path:
    """The large registration pairs (their own stamp, so the other data are not re-made); return ``root``."""
    stamp = root / "bench-large.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("version") == VERSION:
        return root
    from fmc_ij.synthetic import LightSheetConfig
    from fmc_ij.synthetic.lightsheet import simulate_lightsheet

    for name, shape, seed in (("plane", LARGE_PLANE, 3000), ("volume", LARGE_VOLUME, 3001)):
        cfg = LightSheetConfig(shape=shape, spacing=SPACING)
        v = simulate_lightsheet(cfg, seed=seed, channels=("nucleus",), truth=False)["nucleus"]
        for kind, key in (("low", "angle"), ("high", "fused")):
            _write(root / "large" / f"{name}_{kind}.tif", v[key][shape[0] // 2] if name == "plane" else v[key])
    stamp.write_text(json.dumps({"version": VERSION, "spacing_um": SPACING}) + "\n")
    return root


def load(name: str) -> np.ndarray:
    """``heldout/low``, ``large/plane_high`` etc. as float32."""
    import tifffile

    root = ensure_large() if name.startswith("large/") else ensure_data()
    return tifffile.imread(root / f"{name}.tif").astype(np.float32)


if __name__ == "__main__":
    print(ensure_data())
