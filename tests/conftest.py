from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("FMC_IJ_PROGRESS", "0")


def _imagej_missing() -> str | None:
    if not Path(os.environ.get("FMC_IJ_IJ_JAR", "/usr/share/java/ij.jar")).is_file():
        return "ImageJ 1 not installed (make test installs Debian's libij-java when run as root)"
    if shutil.which("java") is None:
        return "no Java runtime"
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run") is None:
        return "no display and no Xvfb (make test installs xvfb when run as root)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _imagej_missing()
    if reason is None:
        return
    for item in items:
        if "imagej" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
