"""How much worse is the simulated single view than the fused one, and how does it change with depth?

Prints SSIM(single, fused), SSIM(single, truth) and SSIM(fused, truth) in the top, middle and bottom
third of the specimen's depth and over the whole volume, per channel, after the challenge's 2/99.8
percentile normalisation (skimage SSIM: Gaussian window sigma 1.5, data_range 1).

    python benchmarks/synthetic_depth_ssim.py [--shape 64,256,256] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse

import numpy as np
from skimage.metrics import structural_similarity

from fmc_ij.synthetic import LightSheetConfig, simulate_lightsheet

SSIM = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 1.0}


def norm(x: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(x, (2, 99.8))
    return ((x - lo) / (hi - lo)).astype(np.float32)


def thirds(truth: np.ndarray) -> list[slice]:
    z = np.flatnonzero(truth.max(axis=(1, 2)) > 0)
    e = np.linspace(z[0], z[-1] + 1, 4).round().astype(int)
    return [slice(e[i], e[i + 1]) for i in range(3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="64,256,256")
    ap.add_argument("--seeds", default="0,1,2")
    a = ap.parse_args()
    cfg = LightSheetConfig(shape=tuple(int(v) for v in a.shape.split(",")))
    rows: dict[tuple[str, str, str], list[float]] = {}
    for seed in (int(s) for s in a.seeds.split(",")):
        for ch, v in simulate_lightsheet(cfg, seed=seed).items():
            ang, fus, tru = norm(v["angle"]), norm(v["fused"]), norm(v["truth"])
            for name, sl in zip(("top", "middle", "bottom", "whole"), [*thirds(v["truth"]), slice(None)]):
                for pair, (x, y) in {
                    "single~fused": (ang, fus),
                    "single~truth": (ang, tru),
                    "fused~truth": (fus, tru),
                }.items():
                    rows.setdefault((ch, name, pair), []).append(structural_similarity(x[sl], y[sl], **SSIM))
    print(f"shape {cfg.shape}, voxel {cfg.spacing} um, seeds {a.seeds}: mean SSIM (min..max over seeds)")
    print(f"{'channel':9} {'third':7} {'single~fused':>20} {'single~truth':>20} {'fused~truth':>20}")
    for ch in ("nucleus", "membrane"):
        for name in ("top", "middle", "bottom", "whole"):
            cells = [rows[(ch, name, p)] for p in ("single~fused", "single~truth", "fused~truth")]
            print(f"{ch:9} {name:7} " + " ".join(f"{np.mean(c):8.3f} ({min(c):.3f}..{max(c):.3f})" for c in cells))


if __name__ == "__main__":
    main()
