"""fmc_ij.io against plain tifffile (what CSBDeep, CAREamics and the challenge template call), same run.

fmc_ij.io adds metadata parsing, validation, an integrity check and atomic writes; this shows their cost.

    python benchmarks/bench_io.py [--shape 64,512,512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from _bench import Row, emit

from fmc_ij import io


def race(ours, peer, repeat: int) -> tuple[float, float]:
    """Median times of ``ours`` and ``peer`` run alternately (one warm-up each): both meet the same page-cache and
    writeback state, which a run of one then a run of the other does not (a file system flushing the first
    one's writes slows the second)."""
    times: dict[int, list[float]] = {0: [], 1: []}
    for i in range(repeat + 1):
        for k, fn in ((0, ours), (1, peer)) if i % 2 == 0 else ((1, peer), (0, ours)):
            t = time.perf_counter()
            fn()
            if i:
                times[k].append(time.perf_counter() - t)
    return float(np.median(times[0])), float(np.median(times[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="64,512,512")
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    data = np.random.default_rng(0).integers(0, 4000, shape).astype(np.uint16)
    meta = io.ImageMeta(axes="ZYX", spacing={"Z": 1.0, "Y": 0.39, "X": 0.39}, channel="nucleus", study=1)
    mb = data.nbytes / 2**20
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        md = meta.to_fmc_dict()
        cases = {
            "write imagej": (
                lambda: io.imwrite(d / "a.tif", data, meta),
                lambda: tifffile.imwrite(d / "b.tif", data, imagej=True, metadata={"axes": "ZYX", "spacing": 1.0}),
            ),
            "write fmc (tiled BigTIFF)": (
                lambda: io.imwrite(d / "c.tif", data, meta, flavour="fmc"),
                lambda: tifffile.imwrite(d / "e.tif", data, bigtiff=True, metadata=md, tile=(128, 128)),
            ),
            "read imagej": (lambda: io.imread(d / "a.tif"), lambda: tifffile.imread(d / "b.tif")),
            "read fmc (tiled BigTIFF)": (lambda: io.imread(d / "c.tif"), lambda: tifffile.imread(d / "e.tif")),
        }
        print(f"volume {shape} uint16 ({mb:.0f} MiB), median of {a.repeat}, alternating")
        cap = f"TIFF I/O {'x'.join(map(str, shape))} uint16"
        rows = []
        for name, (ours, peer) in cases.items():
            t_o, t_p = race(ours, peer, a.repeat)
            rows.append(Row(cap, name, "s", t_o, "tifffile", t_p))
        t_l, t_f = race(lambda: np.asarray(io.open_lazy(d / "c.tif").data[shape[0] // 2]),
                        lambda: tifffile.imread(d / "e.tif")[shape[0] // 2], a.repeat)  # fmt: skip
        rows.append(Row(cap, "one plane (lazy vs full read)", "s", t_l, "tifffile", t_f))
        emit(rows)


if __name__ == "__main__":
    main()
