"""The end of a test run says which tests were skipped, why, and the one command that runs them.

A fixture that cannot start what a test needs skips with a reason naming the missing program and its
package (tests/integration/sshd.py). This hook (registered in tests/conftest.py) groups the skips by
reason and ends with `bash .ci/run`, which installs every such program and runs `make test`.
"""

from __future__ import annotations

from typing import Any

ENABLE_ALL = "bash .ci/run  (as root: installs OpenSSH, Chromium and a CJK font, then runs make test)"
SHOWN_PER_REASON = 5


def _reason(report: Any) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return str(text).removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if r.skipped]
    if not skipped:
        return
    groups: dict[str, list[str]] = {}
    for report in skipped:
        groups.setdefault(_reason(report), []).append(report.nodeid)
    write = terminalreporter.write_line
    terminalreporter.section(f"{len(skipped)} tests skipped: not run on this machine", yellow=True)
    for reason, nodeids in sorted(groups.items(), key=lambda item: -len(item[1])):
        write(f"{len(nodeids)} skipped: {reason}", yellow=True, bold=True)
        for nodeid in nodeids[:SHOWN_PER_REASON]:
            write(f"    {nodeid}")
        if len(nodeids) > SHOWN_PER_REASON:
            write(f"    ... and {len(nodeids) - SHOWN_PER_REASON} more")
    write(f"to run every skipped test: {ENABLE_ALL}", yellow=True, bold=True)
