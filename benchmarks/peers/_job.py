"""Shared by the peer job scripts (run with a peer's own Python, never fmc-ij's): arguments, timing, output."""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def rss_mb() -> float:
    """Current resident memory in MiB."""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS")) / 1024


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[Any, float]:
    """Run ``fn`` once to warm up (JIT, thread pools), then ``repeat`` times; the result and the median seconds."""
    out = fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, sorted(times)[len(times) // 2]


def done(result: dict[str, Any]) -> None:
    """The last stdout line is the job's result (``_bench.run_peer`` reads it)."""
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


def train_or_predict(train: Callable[[Path, Path, float], None], predict: Callable[[Path, Path, Path], None]) -> None:
    """``train DATA OUT BUDGET_S`` or ``predict OUT IN.tif PRED.npy`` (the model jobs' command line)."""
    task, args = sys.argv[1], sys.argv[2:]
    if task == "train":
        train(Path(args[0]), Path(args[1]), float(args[2]))
    elif task == "predict":
        predict(Path(args[0]), Path(args[1]), Path(args[2]))
    else:
        raise SystemExit(f"unknown task {task}: train or predict")
