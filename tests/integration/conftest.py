"""Integration fixtures for the SFTP transport: one throwaway sshd per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# master-store backends (sqlite file, throwaway PostgreSQL database) for the store's tests
from master_frames import backend, new_store_url, store_url  # noqa: F401
from sshd import LocalSshd, serve, served_folder


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSshd]:
    """`/usr/sbin/sshd -D -e` on a free loopback port: temporary host key, ed25519 client key, known_hosts."""
    yield from serve(tmp_path_factory.mktemp("sshd") / "server")


@pytest.fixture
def drop(sshd: LocalSshd) -> Path:
    """An empty folder served by the sshd, for one test."""
    return served_folder(sshd)


@pytest.fixture
def sftp_env(sshd: LocalSshd, monkeypatch: pytest.MonkeyPatch) -> str:
    """Connection variables for source `hrss` (LIANBAN_HRSS_SFTP_*) pointing at the test sshd."""
    prefix = "LIANBAN_HRSS_SFTP"
    for name, value in sshd.env(prefix).items():
        monkeypatch.setenv(name, value)
    return prefix
