"""Run every ``benchmarks/bench_*.py`` script and write ``benchmarks/RESULTS.md`` (``make bench``).

Each script runs in its own process with ``FMC_BENCH_ROWS`` pointing at a JSON-lines file its rows are appended
to; the table groups them by capability with fmc-ij's figure, the peer's (measured in the same run, on the same
data) and the ratio (above 1 = fmc-ij better), under the machine's description. A failing script is reported in
the file and the exit status, and the others still run. Peers come from ``make bench-peers``.

    python benchmarks/run.py [--only register,models] [--out benchmarks/RESULTS.md]

With ``--only``, the other scripts' rows are kept from the last run (``RESULTS.json`` beside the table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import Row, fmt, machine
from _data import ensure_data

HERE = Path(__file__).resolve().parent
BETTER = {"lower": "lower is better", "higher": "higher is better", "gap": "closer to 1 is better"}


def render(rows: list[dict], info: dict[str, str], timings: dict[str, float], failures: dict[str, str],
           budget: str) -> str:  # fmt: skip
    lines = ["# Benchmarks: fmc-ij against its peers", "",
             "Written by `make bench` (`benchmarks/run.py`); every peer figure was measured in the same run, on the",
             "same data (fmc-ij's built-in synthetic light-sheet data), each peer in its own virtual environment",
             "(`make bench-peers`). **Ratio above 1 = fmc-ij better** (peer/ours for times, errors and memory;",
             "ours/peer for throughput; (1 - peer)/(1 - ours) for N_SSIM, whose perfect value is 1). Timings are",
             "wall-clock medians after a warm-up unless the metric says otherwise; see each script's docstring.", "",
             "## Machine", ""]  # fmt: skip
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [f"- training budget per tool: {budget} s", "", "## Results", ""]
    lines += ["| capability | metric | fmc-ij | peer | peer's figure | ratio |", "|---|---|---:|---|---:|---:|"]
    for r in rows:
        row = Row(**{k: r[k] for k in Row.__dataclass_fields__})
        unit = f" ({row.unit})" if row.unit else ""
        lines.append(f"| {row.capability} | {row.metric}{unit}, {BETTER[row.better]} | {fmt(row.ours)} | {row.peer} | "
                     f"{fmt(row.theirs)} | **{row.ratio:.2f}** |")  # fmt: skip
    notes = sorted({(r["capability"], r["peer"], r["note"]) for r in rows if r["note"]})
    if notes:
        lines += ["", "## Notes", ""] + [f"- {c} vs {p}: {n}" for c, p, n in notes]
    lines += ["", "## Scripts", "", "| script | wall s | status |", "|---|---:|---|"]
    for name, sec in timings.items():
        lines.append(f"| `{name}` | {sec:.0f} | {'failed: ' + failures[name] if name in failures else 'ok'} |")
    measured = HERE / "measured.md"  # figures measured by hand, kept with their commands
    if measured.is_file():
        lines += ["", measured.read_text(encoding="utf-8").replace("# Measured", "## Measured", 1).rstrip()]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated script names without bench_ (default: all)")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    a = ap.parse_args()
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    scripts = [p for p in sorted(HERE.glob("bench_*.py")) if not only or p.stem.removeprefix("bench_") in only]
    t0 = time.perf_counter()
    print(f"data: {ensure_data()}", flush=True)
    timings, failures = {"data (simulate once, cached)": time.perf_counter() - t0}, {}
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "rows.jsonl"
        rows_file.touch()
        env = {**os.environ, "FMC_BENCH_ROWS": str(rows_file), "FMC_IJ_PROGRESS": "0"}
        for script in scripts:
            print(f"== {script.name}", flush=True)
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, str(script)], env=env, text=True, stdout=sys.stdout,
                                  stderr=subprocess.PIPE)  # fmt: skip
            timings[script.name] = time.perf_counter() - t
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
                failures[script.name] = last[:300]
                print(f"{script.name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr, flush=True)
        rows = [json.loads(ln) for ln in rows_file.read_text().splitlines() if ln.strip()]
    timings["total"] = time.perf_counter() - t0
    # The rows travel in a JSON file beside the table, so a partial run (--only) replaces just its own scripts.
    store = a.out.with_suffix(".json")
    if only and store.exists():
        old = json.loads(store.read_text(encoding="utf-8"))
        ran = {p.name for p in scripts}
        rows = [r for r in old["rows"] if r.get("script") not in ran] + rows
        keep = {k: v for k, v in old["timings"].items() if k not in ran and k != "total"}
        timings = {**keep, **timings, "total": sum(v for k, v in {**keep, **timings}.items() if k != "total")}
        failures = {**{k: v for k, v in old["failures"].items() if k not in ran}, **failures}
    rows.sort(key=lambda r: r.get("script", ""))
    tmp_store = store.with_suffix(".json.tmp")
    tmp_store.write_text(json.dumps({"rows": rows, "timings": timings, "failures": failures}, indent=1), "utf-8")
    tmp_store.replace(store)
    text = render(rows, machine(), timings, failures, os.environ.get("FMC_BENCH_BUDGETS", "60,240,900"))
    tmp_out = a.out.with_suffix(".md.tmp")
    tmp_out.write_text(text, encoding="utf-8")
    tmp_out.replace(a.out)
    print(f"\n{a.out}: {len(rows)} rows in {timings['total'] / 60:.1f} min" + (f"; FAILED: {', '.join(failures)}"
          if failures else ""))  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
