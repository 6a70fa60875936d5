"""The package map keeps its rules: no import cycle between fmc_ij packages, and data flows one way
(io -> register -> data -> model_io -> train -> predict -> evaluate -> export); function-level imports count."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import fmc_ij

ROOT = Path(fmc_ij.__file__).parent

#: Each package's layer; a package may import only from lower layers (or its own). Foundations (errors, norm,
#: progress) sit at the bottom; the workflows (cli, demo, run_report) at the top.
LAYERS = {
    "__init__": 0, "errors": 0, "norm": 0, "progress": 0,
    "io": 1,
    "report": 2, "metrics": 2, "synthetic": 2,
    "register": 3, "nn": 3,
    "squirrel": 4, "data": 4,
    "model_io": 5,
    "train": 6,
    "predict": 7,
    "evaluate": 8,
    "export": 9,
    "fiji": 10,
    "demo": 11, "run_report": 11, "cli": 12, "__main__": 13,
}  # fmt: skip


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_graph() -> dict[str, dict[str, set[str]]]:
    """{package: {imported package: {files}}} over every ``import``/``from`` in fmc_ij (module and function level)."""
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for f in ROOT.rglob("*.py"):
        rel = f.relative_to(ROOT.parent).with_suffix("")
        src = _unit(".".join(rel.parts).removesuffix(".__init__"))
        for node in ast.walk(ast.parse(f.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fmc_ij":
                names = (
                    [node.module]
                    if node.module != "fmc_ij"
                    else [
                        f"fmc_ij.{a.name}"
                        if (ROOT / a.name).is_dir() or (ROOT / f"{a.name}.py").is_file()
                        else "fmc_ij"
                        for a in node.names
                    ]
                )
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("fmc_ij.")]
            for n in names:
                dst = _unit(n)
                if dst != src:
                    edges[src][dst].add(str(f.relative_to(ROOT)))
    return edges


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle_between_packages():
    edges = import_graph()
    cycle = _cycle({a: set(b) for a, b in edges.items()})
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_upward_imports():
    edges = import_graph()
    packages = {
        p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()
    }
    assert packages <= set(LAYERS), f"packages without a layer: {sorted(packages - set(LAYERS))}"
    upward = [f"{a} -> {b} ({', '.join(sorted(files))})" for a, deps in edges.items() for b, files in deps.items()
              if LAYERS[b] > LAYERS[a]]  # fmt: skip
    assert not upward, "upward imports:\n" + "\n".join(upward)
