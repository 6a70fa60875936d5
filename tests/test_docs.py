"""The Python examples in docs/ run as written (in order, in one empty folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize("page", ["python.md"])
def test_python_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks(DOCS / page)
    assert blocks, f"{page} has no python examples"
    scope: dict = {}
    for k, code in enumerate(blocks):
        try:
            exec(compile(code, f"{page}[block {k}]", "exec"), scope)
        except Exception as err:  # noqa: BLE001 - name the block that broke
            raise AssertionError(f"{page} block {k} failed: {type(err).__name__}: {err}") from err
