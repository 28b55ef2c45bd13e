"""The layers point one way (docs/architecture.md): `lint-imports` keeps .importlinter's contracts on this
tree, and breaks them on a copy with an upward import, a runtime import of the sandbox, a file helper in
transforms and a file write in reports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "connectors", "transforms", "store", "stages", "reports", "hub", "sandbox", "bench")
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(root / ".importlinter")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_contract() -> None:
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_an_upward_import_breaks_the_contracts(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    injected = {
        "core/masking.py": "from stages import ingest  # noqa\n",  # core reaching up to a stage
        "hub/run.py": "import sandbox.generator  # noqa\n",  # the runtime importing the side
        "transforms/ids.py": "from core.storage import sha256_file  # noqa\n",  # a file helper in transforms
        "reports/charts.py": "from core.storage import publish_bytes  # noqa\n",  # reports writing files
    }
    for path, line in injected.items():
        target = tmp_path / path
        target.write_text(target.read_text(encoding="utf-8") + line, encoding="utf-8")
    done = _lint(tmp_path)
    assert done.returncode != 0
    out = done.stdout
    assert "core.masking -> stages.ingest" in out, out[-4000:]
    assert "hub.run -> sandbox.generator" in out, out[-4000:]
    assert "transforms.ids -> core.storage" in out, out[-4000:]
    assert "reports.charts -> core.storage" in out, out[-4000:]


def test_the_readme_layout_names_every_top_level_folder() -> None:
    """README's Layout block lists each tracked top-level folder, and nothing that is not there."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    listed = {line.split("/", 1)[0] for line in block.splitlines() if line and not line.startswith(" ")}
    listed = {name for name in listed if " " not in name}
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    folders = {p.split("/", 1)[0] for p in tracked if "/" in p and not p.startswith(".")}
    assert listed == folders
