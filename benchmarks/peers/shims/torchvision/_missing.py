"""Names the shim does not implement: importable (torchmetrics imports them at module level), fail if called."""

from __future__ import annotations

from typing import Any


def missing(module: str, name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)

    def _unavailable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{module}.{name} is not available: the benchmark venv has a torchvision stand-in")

    return _unavailable
