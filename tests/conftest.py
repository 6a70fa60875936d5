from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("FMC_IJ_PROGRESS", "0")
# Test networks have a few filters: small deepImageJ tiles keep their bundles' test tensors (and tests) small.
os.environ.setdefault("FMC_IJ_TILE_MEMORY_MB", "16")


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


STUBS = Path(__file__).parent / "stubs"
STUB_COMMANDS = {
    "ErrorMapStub": ("NanoJ-SQUIRREL", "Calculate Error-Map, RSE and RSP"),
    "RegisterChannelsStub": ("NanoJ-Core", "Register Channels - Estimate"),
    "RegisterChannelsApplyStub": ("NanoJ-Core", "Register Channels - Apply"),
    "EstimateDriftStub": ("NanoJ-Core", "Estimate Drift"),
    "CorrectDriftStub": ("NanoJ-Core", "Correct Drift"),
    "DeepImageJRunStub": ("DeepImageJ", "DeepImageJ Run"),
}


@pytest.fixture(scope="session")
def fake_fiji(tmp_path_factory):
    """A Fiji-shaped folder: Debian's ij.jar in jars/, the NanoJ stand-ins (tests/stubs) compiled into plugins/."""
    import shutil
    import subprocess

    javac, jar = shutil.which("javac"), shutil.which("jar")
    if javac is None or jar is None:
        pytest.skip("no JDK (javac/jar) to compile the NanoJ stand-in plugins: apt-get install default-jdk-headless")
    from fmc_ij.fiji import find_ij_jar

    ij_jar = find_ij_jar()
    root = tmp_path_factory.mktemp("fiji") / "Fiji.app"
    for d in (root / "plugins", root / "jars"):
        d.mkdir(parents=True)
    shutil.copy(ij_jar, root / "jars" / "ij.jar")
    for cls, (menu, command) in STUB_COMMANDS.items():
        build = root.parent / f"build_{cls}"
        build.mkdir()
        subprocess.run(
            [javac, "-cp", str(ij_jar), "-d", str(build), str(STUBS / f"{cls}.java")], check=True, timeout=120
        )
        (build / "plugins.config").write_text(f'Plugins>{menu}, "{command}", {cls}\n')
        name = f"{menu.replace('-', '_')}_{cls}.jar"  # find_nanoj / find_squirrel match the menu part
        subprocess.run([jar, "cf", str(root / "plugins" / name), "-C", str(build), "."], check=True, timeout=120)
    return root
