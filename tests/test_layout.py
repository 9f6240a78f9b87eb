"""The layout tells the truth: the import rules of docs/architecture.md hold, and the installed
top-level names shadow no well-known package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("powertrain", "powerfleet", "coordinator", "client")
#: Import names of popular PyPI distributions that a project must never install as its own
#: (``proto`` is proto-plus, a dependency of every google-cloud client library).
DENY = {"proto", "google", "grpc", "flwr", "torch", "numpy", "pandas", "redis", "ray", "typer", "rich", "tests",
        "test", "utils", "common", "src", "lib", "core", "config", "scripts", "bench", "docs", "examples",
        "deploy", "app", "main", "server", "api", "models", "data", "setuptools", "yaml", "six", "attr", "click"}


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_import_rules_hold() -> None:
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("coordinator/rounds.py", "import client.runtime", "coordinator is not allowed to import client"),
    ("powertrain/space.py", "import coordinator.fleet", "powertrain is not allowed to import coordinator"),
    ("client/policies.py", "import powerfleet.v1.powerfleet_pb2", "client is not allowed to import powerfleet.v1"),
    ("powertrain/devices/base.py", "import powertrain.optimize",
     "powertrain.devices is not allowed to import powertrain.optimize"),
    ("powerfleet/tasks/data.py", "import client.runtime", "powerfleet.tasks is not allowed to import client"),
])
def test_import_rules_catch_a_violation(tmp_path: Path, module: str, line: str, broken: str) -> None:
    """The check can fail: one forbidden import in a copy of the tree breaks a named contract."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0
    assert broken in proc.stdout and "1 broken" in proc.stdout


def test_wheel_installs_only_our_own_top_level_names(tmp_path: Path) -> None:
    src = tmp_path / "src"  # build from a copy: setuptools leaves build/ beside the sources
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "proto", src / "proto")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("powerfleet-*.whl")
    names = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist() if not n.split("/")[0].endswith(".dist-info")}
    assert names == set(PACKAGES)
    assert not names & DENY
    assert not any(n.startswith("proto/") for n in zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("powerfleet/fleets/")}
    assert {"powerfleet/fleets/mixed-12.toml", "powerfleet/fleets/mixed-100.toml"} <= shipped  # the default fleet
