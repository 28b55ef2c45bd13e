"""`hub sandbox init`: one progress line per step (stage, rows, seconds), and an existing master file is
never deleted without --force."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from core.settings import ROOT

PROGRESS = re.compile(r"^(?P<stage>sandbox [a-z ]+?) +(?:(?P<rows>[\d,]+) rows)? +(?P<s>\d+\.\d) s$")


def _init(var: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIANBAN_VAR": str(var), "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    env.pop("LIANBAN_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "sandbox", "init", "--persons", "300", "--seed", "3", *extra],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sandbox_init_shows_one_line_per_step_and_keeps_a_master_file_without_force(tmp_path: Path) -> None:
    var = tmp_path / "var"
    first = _init(var)
    assert first.returncode == 0, first.stdout + first.stderr
    steps = [m for line in first.stderr.splitlines() if (m := PROGRESS.match(line))]
    assert [m["stage"] for m in steps] == [
        "sandbox people",
        "sandbox defects",
        "sandbox cdpf",
        "sandbox civil",
        "sandbox hrss",
        "sandbox police",
        "sandbox ground truth",
        "sandbox audit inputs",
    ], first.stderr
    assert steps[0]["rows"] == "330"  # 300 holders and 30 other residents
    assert len(first.stderr.splitlines()) == len(steps), first.stderr  # quiet: nothing else

    master = var / "master.sqlite"
    master.write_bytes(b"the province's master file")  # as a run leaves it
    refused = _init(var)
    assert refused.returncode == 1
    message = " ".join(refused.stdout.split())  # the console wraps long lines
    assert f"{master} exists" in message and "hub sandbox init --force" in message, message
    assert master.read_bytes() == b"the province's master file"

    forced = _init(var, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert not master.exists()
    assert "sandbox ready" in forced.stdout
