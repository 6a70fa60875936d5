"""numpy <-> ImageJ 1 ImagePlus through fmc_ij.fiji, against JPype's element-wise conversion, same run.

fmc-ij hands Java a direct view of the numpy memory and lets Java bulk-copy each plane (one copy); the comparison
converts each plane with ``JArray(JFloat)(plane)`` / ``np.array(pixels)`` and stacks them (what a plain
JPype/scyjava script does), and both round trips are checked exact.

Where ImagePlus -> numpy spends its time: not in the copy (about 0.03 s for 128 MiB into memory already touched)
but in the kernel giving the new 128 MiB array its pages (zeroing them, and compacting memory for huge pages when
it is fragmented), which the peer's ``np.stack`` pays as well. That cost swings from 0.03 s to 0.8 s with what
ran before, so the two sides are timed alternately, each first in turn, and compared by their medians; the script
prints both parts for the record.

    python benchmarks/bench_fiji.py [--shape 128,512,512] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from _bench import Row, emit

from fmc_ij.fiji import connect


def race(ours: Callable[[], object], peer: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``peer``, run alternately (each first in every other round)."""
    times: dict[int, list[float]] = {0: [], 1: []}
    for r in range(repeat):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for side in order:
            fn = (ours, peer)[side]
            t = time.perf_counter()
            out = fn()
            times[side].append(time.perf_counter() - t)
            del out
    return statistics.median(times[0]), statistics.median(times[1])


def where_the_time_goes(ij, imp, shape: tuple[int, ...], dtype: np.dtype) -> str:
    """Fresh-array page faults vs the plane copies themselves, medians of 3."""
    fault, copy = [], []
    for _ in range(3):
        t = time.perf_counter()
        out = np.empty(shape, dtype)
        out.fill(0)  # first touch: the kernel maps and zeroes every page
        fault.append(time.perf_counter() - t)
        typed, _ = ij._typed_buffer(out, dtype)
        stack, plane = imp.getStack(), shape[1] * shape[2]
        t = time.perf_counter()
        for i in range(shape[0]):
            typed.position(i * plane)
            typed.put(stack.getPixels(i + 1))
        copy.append(time.perf_counter() - t)
        del out
    return f"new array's pages {statistics.median(fault):.3f} s, plane copies {statistics.median(copy):.3f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="128,512,512")
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    ij = connect()
    import jpype
    import scyjava as sj

    print(f"ImageJ {ij.version} ({ij.backend}); stack {shape}")
    rows = []
    for dtype, jtype in ((np.float32, jpype.JFloat), (np.uint16, jpype.JShort)):
        data = (np.random.default_rng(0).random(shape) * 4000).astype(dtype)
        imp = ij.to_imageplus(data)

        def naive_to(d=data, jt=jtype):
            stack = sj.jimport("ij.ImageStack")(d.shape[2], d.shape[1])
            view = d.view(np.int16) if d.dtype == np.uint16 else d
            for z in range(d.shape[0]):
                stack.addSlice("", jpype.JArray(jt)(view[z].ravel()))
            return sj.jimport("ij.ImagePlus")("naive", stack)

        def naive_from(i=imp, d=data):
            st = i.getStack()
            planes = [np.array(st.getPixels(z + 1)).reshape(d.shape[1:]) for z in range(d.shape[0])]
            return np.stack(planes).view(d.dtype)

        assert np.array_equal(ij.from_imageplus(naive_to()).data, data)
        assert np.array_equal(ij.from_imageplus(imp).data, data) and np.array_equal(naive_from(), data)
        t_to, n_to = race(lambda d=data: ij.to_imageplus(d), naive_to, a.repeat)
        t_from, n_from = race(lambda i=imp: ij.from_imageplus(i), naive_from, a.repeat)
        print(f"{np.dtype(dtype).name} ImagePlus -> numpy: {where_the_time_goes(ij, imp, shape, np.dtype(dtype))}")
        cap = f"Fiji bridge {'x'.join(map(str, shape))} {np.dtype(dtype).name}"
        note = f"ImageJ {ij.version} ({ij.backend}); exact round trips checked; medians of {a.repeat}, alternating"
        rows.append(Row(cap, "numpy -> ImagePlus", "s", t_to, "JPype JArray per plane", n_to, note=note))
        rows.append(Row(cap, "ImagePlus -> numpy", "s", t_from, "JPype np.array per plane", n_from, note=note))
    emit(rows)


if __name__ == "__main__":
    main()
