"""The built wheel works on its own: a fresh virtualenv, no source tree on the path."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.integration


def run(*args: str | Path, cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT, cwd=tmp_path)
    wheel = next(dist.glob("resilience_stack-*.whl"))  # the distribution name; `import resilience`
    names = zipfile.ZipFile(wheel).namelist()
    assert "resilience/py.typed" in names
    assert any(n.startswith("resilience/web/static/") and n.endswith(".html") for n in names)
    assert not any(n.startswith(("tests/", "examples/")) for n in names)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    py = venv / "bin" / "python"
    run(py, "-m", "pip", "install", "-q", f"{wheel}[yaml]", cwd=tmp_path)
    meta = run(
        py,
        "-c",
        "import importlib.metadata as m; print(m.metadata('resilience-stack')['Name'])",
        cwd=tmp_path,
    )
    assert meta.strip() == "resilience-stack"
    out = run(venv / "bin" / "resilience", "--help", cwd=tmp_path)
    assert "fit" in out and "observe" in out
    for command in (
        ["fit", "run"],
        ["fit", "discover"],
        ["observe", "alerts"],
        ["observe", "grafana"],
    ):
        assert "usage:" in run(venv / "bin" / "resilience", *command, "--help", cwd=tmp_path)
    demo = tmp_path / "circuit_demo.py"
    shutil.copy(ROOT / "examples" / "circuit_demo.py", demo)
    out = run(py, "-I", demo, "--phase-seconds", "0.6", cwd=tmp_path, timeout=120)
    assert "circuit closed: OK" in out
