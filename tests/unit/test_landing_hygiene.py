"""Landing hygiene: a killed pull's temporary folder is removed by the next pull (a running pull's is
not), drop folders never follow symbolic links, and everything landed and staged is private whatever
the umask (0600 / 0700, or 0640 / 0750 with file_mode_group)."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from batch_builders import holders

from connectors.folder import pull_folder
from connectors.landing import BatchWriter
from core.settings import FolderSource, Settings
from core.storage import Storage
from stages.ingest import stage_batch

AS_OF = date(2025, 6, 30)
ROOT = Path(__file__).resolve().parents[2]
HEADER = "公民身份号码,姓名,就业状态,养老保险类型,工伤保险生活护理费,更新时间"
ROW = f"{holders(1)[0]},张三,就业,职工,否,2025-06-01 08:00:00"

KILLED_PULL = """
import os, signal, sys
from connectors.landing import BatchWriter
from core.settings import load_settings
from core.storage import Storage
writer = BatchWriter(Storage(load_settings(var_dir=sys.argv[1])), "hrss", "20250630", "folder")
writer.add_bytes("hrss_persons_20250630.csv", "公民身份号码\\n110101199003077777\\n".encode("gb18030"), 1)
print(writer.tmp.name, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _drop(settings: Settings, name: str = "hrss_persons_20250630.csv") -> Path:
    folder = Path(settings.expand(settings.sources["hrss"].path))  # type: ignore[union-attr]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(f"{HEADER}\r\n{ROW}\r\n".encode("gb18030"))
    (folder / (name + ".ok")).write_bytes(b"")
    return folder


def _config(settings: Settings) -> FolderSource:
    config = settings.sources["hrss"]
    assert isinstance(config, FolderSource)
    return config


def test_a_killed_pulls_temporary_folder_is_removed_by_the_next_pull(settings: Settings) -> None:
    done = subprocess.run(
        [sys.executable, "-c", KILLED_PULL, str(settings.var_dir)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == -9, done.stderr
    root = settings.var_dir / "landing" / "hrss"
    killed = root / done.stdout.strip()
    assert (killed / "hrss_persons_20250630.csv").exists()  # raw personal data left behind
    storage = Storage(settings)
    _drop(settings)
    with BatchWriter(storage, "hrss", "20250630", "folder") as running:  # a concurrent pull, still at work
        landed = pull_folder(storage, "hrss", _config(settings), AS_OF)
        assert not killed.exists() and not killed.with_name(killed.name + ".lock").exists()
        assert running.tmp.is_dir()  # its lock is held: left alone
    assert sorted(p.name for p in root.iterdir()) == [landed.batch_id]


def test_a_symbolic_link_in_the_drop_folder_is_not_followed(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _drop(settings)
    link = folder / "hrss_persons_20250701.csv"  # newer by name: it would be taken
    link.symlink_to("/etc/passwd")
    (folder / (link.name + ".ok")).write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="connectors.folder"):
        landed = pull_folder(Storage(settings), "hrss", _config(settings), AS_OF)
    assert [f.name for f in landed.manifest.files] == ["hrss_persons_20250630.csv"]
    assert "hrss_persons_20250701.csv is a symbolic link; not taken" in caplog.text
    assert not any(b"root:" in p.read_bytes() for p in landed.path.iterdir())


@pytest.mark.parametrize(("group", "file_mode", "dir_mode"), [(False, 0o600, 0o700), (True, 0o640, 0o750)])
def test_landed_and_staged_files_are_private_whatever_the_umask(
    settings: Settings, group: bool, file_mode: int, dir_mode: int
) -> None:
    settings.file_mode_group = group
    _drop(settings)
    old = os.umask(0o002)  # a permissive umask must not leak into the modes
    try:
        landed = pull_folder(Storage(settings), "hrss", _config(settings), AS_OF)
        assert stage_batch(settings, "hrss", landed.batch_id, AS_OF).accepted == 1
    finally:
        os.umask(old)
    seen = {"dirs": 0, "files": 0}
    for top in ("landing", "staged"):
        root = settings.var_dir / top
        assert stat.S_IMODE(root.stat().st_mode) == dir_mode, root
        for path in root.rglob("*"):
            mode = stat.S_IMODE(path.lstat().st_mode)
            kind = "dirs" if path.is_dir() else "files"
            seen[kind] += 1
            assert mode == (dir_mode if kind == "dirs" else file_mode), (path, oct(mode))
    assert (
        seen["files"] >= 6 and seen["dirs"] == 4
    )  # csv, manifest, accepted, quarantine, validation json/html
