"""How fast can the benchmark network go on this machine at all? (issue 7's speed goal)

Prints the FLOPs per voxel of the ~1M-parameter 3D U-Net of ``bench_predict.py`` (depth 2, 32 filters, 3x3x3,
anisotropic pooling for 1.0 / 0.4 / 0.4 um voxels), its throughput on whole tiles with no tiling overhead at all
(``inference_mode``, channels-last, the threads torch uses), and the float32 matmul rate of the same CPU: the
ceiling any tiled prediction stays under.

    python benchmarks/roofline.py
"""

from __future__ import annotations

import json
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from fmc_ij.nn.factory import ModelConfig, build_model
from fmc_ij.nn.infer import channels_last, to_channels_last


def main() -> None:
    m = ModelConfig(arch="care", ndim=3, depth=2, base=32, kernel=3).resolve_pool([1.0, 0.4, 0.4])
    net = to_channels_last(build_model(m).eval(), 3)
    print(json.dumps({"parameters": sum(p.numel() for p in net.parameters()), "pool": m.pool,
                      "threads": torch.get_num_threads()}))  # fmt: skip
    for shape in [(32, 128, 128), (64, 128, 128), (64, 256, 256)]:
        x = torch.randn(1, 1, *shape).contiguous(memory_format=channels_last(3))
        with torch.inference_mode():
            net(x)  # warm-up
            t = time.perf_counter()
            for _ in range(2):
                net(x)
            dt = (time.perf_counter() - t) / 2
        with FlopCounterMode(display=False) as f, torch.inference_mode():
            net(x)
        flops = f.get_total_flops()
        print(json.dumps({"tile": shape, "seconds": round(dt, 3), "Mvox_s": round(x.numel() / dt / 1e6, 3),
                          "GFLOP_s": round(flops / dt / 1e9, 1), "MFLOP_per_voxel": round(flops / x.numel() / 1e6, 3),
                          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))  # fmt: skip
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    torch.mm(a, b)
    t = time.perf_counter()
    for _ in range(5):
        torch.mm(a, b)
    print(json.dumps({"matmul_4096_GFLOP_s": round(2 * 4096**3 / ((time.perf_counter() - t) / 5) / 1e9, 1)}))


if __name__ == "__main__":
    main()
