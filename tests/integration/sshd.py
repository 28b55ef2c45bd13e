"""Fixture helpers: the throwaway OpenSSH server (launcher in bench.sftp), a drop folder, env wiring.

Imported as `sshd` (pytest puts this folder on sys.path; tests/ is not a package).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.sftp import SSHD, LocalSshd, known_hosts_line, local_sshd, write_ed25519_key

__all__ = [
    "SSHD",
    "LocalSshd",
    "drop_file",
    "known_hosts_with_other_key",
    "serve",
    "served_folder",
    "write_ed25519_key",
]


def serve(workdir: Path) -> Iterator[LocalSshd]:
    """Yield a running sshd; skip (with the install hint) only when the OpenSSH server is not installed."""
    if not Path(SSHD).is_file():
        pytest.skip(f"OpenSSH server not installed: {SSHD} is missing (apt-get install openssh-server)")
    with local_sshd(workdir) as server:
        yield server


def served_folder(server: LocalSshd) -> Path:
    """A fresh folder on the server (no chroot: the remote path equals the local one)."""
    folder = server.workdir.parent / "srv" / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    return folder


def drop_file(
    folder: Path, name: str, data: bytes, marker: str | None = ".ok", checksum: str | None = None
) -> Path:
    """Upload the way a partner does: the data, then the optional `.sha256`, then the marker."""
    path = folder / name
    path.write_bytes(data)
    if checksum is not None:
        digest = hashlib.sha256(data).hexdigest() if checksum == "good" else checksum
        (folder / f"{name}.sha256").write_text(f"{digest}  {name}\n", encoding="utf-8")
    if marker is not None:
        (folder / f"{name}{marker}").write_bytes(b"")
    return path


def known_hosts_with_other_key(server: LocalSshd, path: Path) -> Path:
    """A known_hosts file pinning a different ed25519 key for the server's [host]:port (a changed key)."""
    public = write_ed25519_key(path.with_name(path.name + ".otherkey"))
    path.write_text(known_hosts_line(server.host, server.port, public), encoding="ascii")
    return path
