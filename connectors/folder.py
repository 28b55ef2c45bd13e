"""Folder transport: a drop folder where a partner puts files and then a marker (e.g. `.ok`)."""

from __future__ import annotations

import logging
import shutil
from datetime import date
from pathlib import Path

from connectors.errors import ConnectorError
from connectors.landing import BatchWriter, Landed
from hub.settings import FolderSource
from hub.storage import Storage

log = logging.getLogger(__name__)


def ready_files(folder: Path, pattern: str, marker: str) -> list[Path]:
    """Files matching the pattern whose marker exists; a file without its marker may still be written."""
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.with_name(p.name + marker).exists())


def count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))


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
        shutil.copyfile(newest, batch.path_for(newest.name))
        batch.added(newest.name, max(count_lines(newest) - 1, 0))
        return batch.publish(newest.name)
