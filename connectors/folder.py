"""Folder transport: a drop folder where a partner puts files and then a marker (e.g. `.ok`)."""

from __future__ import annotations

import logging
import os
import shutil
import stat
from datetime import date
from pathlib import Path

from connectors.errors import ConnectorError
from connectors.landing import BatchWriter, Landed
from core.settings import FolderSource
from core.storage import Storage

log = logging.getLogger(__name__)


def ready_files(folder: Path, pattern: str, marker: str) -> list[Path]:
    """Regular files matching the pattern whose marker exists; a file without its marker may still be written.

    Symbolic links are never followed (a link to /etc/passwd must not reach landing): skipped, named
    in a warning.
    """
    ready = []
    for path in sorted(folder.glob(pattern)):
        if not path.with_name(path.name + marker).exists():
            continue
        if path.is_symlink():
            log.warning(
                "%s: %s is a symbolic link; not taken (drop folders take regular files only)",
                folder,
                path.name,
            )
        elif path.is_file():
            ready.append(path)
    return ready


def count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))


def _copy_nofollow(source: str, path: Path, target: Path) -> None:
    """Copy a regular file, refusing one that became a link (or anything else) since it was listed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:  # ELOOP: the name is a symbolic link now
        raise ConnectorError(
            source, "folder", str(path), f"cannot open without following links: {exc}"
        ) from exc
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise ConnectorError(source, "folder", str(path), "not a regular file; refused")
        with target.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)


def pull_folder(storage: Storage, source: str, config: FolderSource, as_of: date) -> Landed:
    """Land the newest ready file byte-identical; the same file again yields the same batch."""
    folder = Path(storage.settings.expand(config.path))
    if not folder.is_dir():
        raise ConnectorError(source, "folder", str(folder), "drop folder does not exist")
    files = ready_files(folder, config.pattern, config.marker)
    if not files:
        raise ConnectorError(
            source,
            "folder",
            str(folder),
            f"no file matching {config.pattern} with its {config.marker} marker",
        )
    newest = files[-1]
    with BatchWriter(storage, source, as_of.strftime("%Y%m%d"), "folder") as batch:
        _copy_nofollow(source, newest, batch.path_for(newest.name))
        batch.added(newest.name, max(count_lines(newest) - 1, 0))
        return batch.publish(newest.name)
