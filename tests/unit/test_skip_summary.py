"""A run with skipped tests ends by naming them, grouped by reason, and the command that runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SSHD_REASON = "OpenSSH server not installed: /usr/sbin/sshd is missing (apt-get install openssh-server)"


def test_the_summary_lists_skips_by_reason_with_the_enabling_command(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from skip_summary import pytest_terminal_summary  # noqa: F401\n", encoding="utf-8"
    )
    (tmp_path / "test_tiny.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.parametrize('n', range(7))\n"
        f"def test_sftp(n):\n    pytest.skip({SSHD_REASON!r})\n\n"
        "def test_browser():\n    pytest.skip('no chromium binary on PATH (apt-get install chromium)')\n\n"
        "def test_runs():\n    assert True\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    summary = done.stdout[done.stdout.index("8 tests skipped: not run on this machine") :]
    lines = summary.splitlines()
    assert lines[1] == f"7 skipped: {SSHD_REASON}"
    assert lines[2].strip() == "test_tiny.py::test_sftp[0]"
    assert lines[7].strip() == "... and 2 more"
    assert lines[8] == "1 skipped: no chromium binary on PATH (apt-get install chromium)"
    assert lines[10].startswith("to run every skipped test: bash .ci/run")


def test_a_run_without_skips_says_nothing_of_them(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from skip_summary import pytest_terminal_summary  # noqa: F401\n", encoding="utf-8"
    )
    (tmp_path / "test_tiny.py").write_text("def test_runs():\n    assert True\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "skipped" not in done.stdout, done.stdout
