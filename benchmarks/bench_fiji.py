"""numpy <-> ImageJ 1 ImagePlus through fmc_ij.fiji, against JPype's element-wise conversion, same run.

fmc-ij hands Java a direct view of the numpy memory and lets Java bulk-copy each plane; the comparison converts
each plane with ``JArray(JFloat)(plane)`` (what a plain JPype/scyjava script does), and the round trip is exact.

    python benchmarks/bench_fiji.py [--shape 128,512,512] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from _bench import Row, emit

from fmc_ij.fiji import connect


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="128,512,512")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    ij = connect()
    import jpype
    import scyjava as sj

    print(f"ImageJ {ij.version} ({ij.backend}); stack {shape}")
    rows = []
    for dtype, jtype in ((np.float32, jpype.JFloat), (np.uint16, jpype.JShort)):
        data = (np.random.default_rng(0).random(shape) * 4000).astype(dtype)
        t_to, imp = timed(lambda d=data: ij.to_imageplus(d), a.repeat)
        t_from, back = timed(lambda i=imp: ij.from_imageplus(i), a.repeat)
        assert np.array_equal(back.data, data)

        def naive_to(d=data, jt=jtype):
            stack = sj.jimport("ij.ImageStack")(d.shape[2], d.shape[1])
            view = d.view(np.int16) if d.dtype == np.uint16 else d
            for z in range(d.shape[0]):
                stack.addSlice("", jpype.JArray(jt)(view[z].ravel()))
            return sj.jimport("ij.ImagePlus")("naive", stack)

        def naive_from(i=imp, d=data):
            st = i.getStack()
            return np.stack([np.array(st.getPixels(z + 1)).reshape(d.shape[1:]) for z in range(d.shape[0])])

        n_to, _ = timed(naive_to, max(1, a.repeat // 2))
        n_from, _ = timed(naive_from, max(1, a.repeat // 2))
        cap = f"Fiji bridge {'x'.join(map(str, shape))} {np.dtype(dtype).name}"
        note = f"ImageJ {ij.version} ({ij.backend}); exact round trip checked"
        rows.append(Row(cap, "numpy -> ImagePlus", "s", t_to, "JPype JArray per plane", n_to, note=note))
        rows.append(Row(cap, "ImagePlus -> numpy", "s", t_from, "JPype np.array per plane", n_from, note=note))
    emit(rows)


if __name__ == "__main__":
    main()
