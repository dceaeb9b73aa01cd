"""The built wheel installs `agentwatch.runtime` and `agentwatch.telemetry`, and no bare names."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_installs_both_packages_under_one_namespace(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("agentwatch-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # Dependencies come from this test's environment (a path, not a site dir: the
    # editable install's import hook there is not activated); the package from the wheel.
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    probe = (
        "import agentwatch.runtime, agentwatch.telemetry, importlib.util;"
        "print(agentwatch.telemetry.__file__);"
        "print(importlib.util.find_spec('runtime'), importlib.util.find_spec('telemetry'))"
    )
    out = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert out.returncode == 0, out.stderr
    telemetry_file, bare = out.stdout.splitlines()
    assert telemetry_file.startswith(str(env_dir))
    assert bare == "None None"
    assert (env_dir / "bin" / "agentwatch").exists()
