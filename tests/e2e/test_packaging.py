"""The built wheel carries everything a run needs and works outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # built from a clean copy: setuptools' build/ folder in a checkout can hold files since deleted
    source = tmp_path_factory.mktemp("source") / "lianban"
    junk = shutil.ignore_patterns(".git", ".venv", "var", "build", "*.egg-info", "__pycache__", ".*_cache")
    shutil.copytree(ROOT, source, ignore=junk)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (found,) = out.glob("lianban-*.whl")
    return found


def test_wheel_holds_code_dags_and_project_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    code = {
        str(p.relative_to(ROOT))
        for top in (
            "core",
            "connectors",
            "transforms",
            "store",
            "stages",
            "reports",
            "hub",
            "sandbox",
            "bench",
        )
        for p in (ROOT / top).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert code - names == set(), "code missing from the wheel: add its package to pyproject.toml"
    data = {
        f"lianban_files/{p.relative_to(ROOT)}"
        for folder in ("config", "schemas", "expectations", "policies", "dags")
        for p in (ROOT / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert data - names == set()
    assert "store/migrations/script.py.mako" in names
    assert "reports/templates/report.html.j2" in names


def test_installed_wheel_runs_a_sandbox_cycle_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # the dependencies come from the test's environment (a .pth adds its site-packages after the
    # venv's own, and .pth files inside it, such as an editable install of the checkout, stay unread)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIANBAN_", "PYTHONPATH", "AIRFLOW"))}
    hub = [str(venv / "bin" / "python"), "-m", "hub.cli"]
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import core.settings as s; print(s.ROOT)"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.strip() == str(site / "lianban_files")
    init = subprocess.run(
        [*hub, "sandbox", "init", "--persons", "200"], cwd=work, env=env, capture_output=True, text=True
    )
    assert init.returncode == 0, init.stdout[-2000:] + init.stderr[-2000:]
    run = subprocess.run([*hub, "run"], cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert list((work / "var" / "reports").glob("cycle-*/report.html"))
    assert list((work / "var" / "outbox" / "civil").rglob("civil_two_subsidies_*.csv"))
