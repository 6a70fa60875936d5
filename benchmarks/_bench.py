"""Shared plumbing of the benchmark scripts: result rows, the peers' virtual environments, machine facts.

A script measures fmc-ij and a peer in the same run and calls :func:`emit` with :class:`Row` objects: they are
printed as a table and, when ``FMC_BENCH_ROWS`` names a file (``benchmarks/run.py`` sets it), appended to it as
JSON lines. Peers run in their own virtual environments (``make bench-peers`` builds them under
``.bench/peers/NAME``) through :func:`run_peer`, so the product never imports them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = Path(os.environ.get("FMC_BENCH_PEERS", ROOT / ".bench" / "peers"))
PEER_SCRIPTS = Path(__file__).resolve().parent / "peers"
DATA_DIR = Path(os.environ.get("FMC_BENCH_DATA", ROOT / ".bench" / "data"))


@dataclass
class Row:
    """One capability measured for fmc-ij and one peer.

    ``better`` is ``"lower"`` (times, errors, memory), ``"higher"`` (throughput) or ``"gap"`` (scores whose
    perfect value is 1 and that may be negative, such as N_SSIM: compared by the distance to 1). The ratio is
    written so that above 1 means fmc-ij is better: peer/ours for lower, ours/peer for higher, and
    (1 - peer)/(1 - ours) for gap.
    """

    capability: str
    metric: str
    unit: str
    ours: float
    peer: str
    theirs: float
    better: str = "lower"
    note: str = ""

    @property
    def ratio(self) -> float:
        ours, theirs = (1 - self.ours, 1 - self.theirs) if self.better == "gap" else (self.ours, self.theirs)
        if self.better in ("lower", "gap"):
            return theirs / ours if ours else float("inf")
        return ours / theirs if theirs else float("inf")


def fmt(v: float) -> str:
    """Three significant figures, no exponent for everyday magnitudes."""
    if v != v:  # NaN
        return "n/a"
    a = abs(v)
    if a == 0 or 1e-3 <= a < 1e5:
        return f"{v:.3g}" if a < 1000 else f"{v:.0f}"
    return f"{v:.2e}"


def emit(rows: list[Row]) -> None:
    """Print ``rows`` and append them to ``$FMC_BENCH_ROWS`` (JSON lines) when set."""
    print(f"\n{'capability':30s} {'metric':28s} {'fmc-ij':>10s} {'peer':>10s}  {'ratio':>6s}  peer")
    for r in rows:
        print(f"{r.capability:30s} {r.metric + ' (' + r.unit + ')':28s} {fmt(r.ours):>10s} {fmt(r.theirs):>10s}  "
              f"{r.ratio:6.2f}  {r.peer}")  # fmt: skip
    target = os.environ.get("FMC_BENCH_ROWS")
    if target:
        with open(target, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({**asdict(r), "ratio": r.ratio, "script": Path(sys.argv[0]).name}) + "\n")


def peer_python(name: str) -> Path:
    """The Python of peer ``name``'s venv; a clear error if ``make bench-peers`` has not built it."""
    py = PEERS_DIR / name / "bin" / "python"
    if not (PEERS_DIR / name / f".done-{name}").exists() or not py.exists():
        raise SystemExit(f"peer environment '{name}' is missing: run `make bench-peers` (builds {PEERS_DIR / name})")
    return py


def run_peer(name: str, script: str, *args: str, timeout: float = 1800) -> dict:
    """Run ``benchmarks/peers/SCRIPT`` with peer ``name``'s Python; return the JSON its last stdout line holds."""
    env = {**os.environ, "HOME": str(PEERS_DIR / name / "home"), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONWARNINGS": "ignore"}  # fmt: skip
    Path(env["HOME"]).mkdir(parents=True, exist_ok=True)  # NanoPyx and Lightning write state under HOME
    return _run_json([str(peer_python(name)), str(PEER_SCRIPTS / script), *args], f"peer {name} ({script})",
                     env, timeout)  # fmt: skip


def run_self(script: str, *args: str, timeout: float = 1800) -> dict:
    """Run a script of ours in a fresh process (its own peak RSS); return its last JSON stdout line."""
    cmd = [sys.executable, str(Path(__file__).resolve().parent / script), *args]
    return _run_json(cmd, f"{script} {' '.join(args)}", None, timeout)


def _run_json(cmd: list[str], label: str, env: dict[str, str] | None, timeout: float) -> dict:
    """Run ``cmd``; the JSON object of its last ``{``-line, with ``process_s`` (wall seconds) added if absent."""
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"{label} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    out = json.loads(lines[-1])
    out.setdefault("process_s", time.perf_counter() - t)
    return out


def rss_mb() -> float:
    """This process's current resident memory in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, str]:
    """Cores, CPU model, OS, Python and torch versions, device."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cores": str(os.cpu_count()), "cpu": cpu, "os": platform.platform(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        info["torch threads"] = str(torch.get_num_threads())
    except ImportError:
        pass
    return info
