"""Pushing published exchange files to partners: a folder, an SFTP server, or a REST endpoint.

Every transport delivers the same unit (data file, signed manifest, marker) so that nothing partial or
unmatched is ever visible on the partner's side and a re-send after any interruption leaves exactly
one copy: files travel under temporary names in a hidden staging folder (`.lianban-incoming`, which
partners ignore), are renamed into place data first, manifest second, marker last, and a unit whose
marker is already there with the same content is not sent again. REST sends the data in bounded
chunks, each POST carrying an Idempotency-Key (run, file, chunk), then a commit whose answer is the
receipt. Each step is logged at INFO, which is how an operator (and the interrupted-delivery test)
sees how far a delivery got.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import posixpath
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paramiko
import requests
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from connectors.sftp import SftpClient
from core.publish import MANIFEST, MARKER  # the suffixes a published unit carries

log = logging.getLogger(__name__)

STAGING = ".lianban-incoming"
ACK_SUFFIX = ".ack"


class PushError(RuntimeError):
    """A delivery failed; the message names the partner, the destination and the file."""


@dataclass(frozen=True)
class Unit:
    """One published file with its manifest and marker, ready to go to its partner."""

    partner: str
    contract: str
    run_id: str
    data: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def manifest(self) -> Path:
        return self.data.with_name(self.name + MANIFEST)

    @property
    def marker(self) -> Path:
        return self.data.with_name(self.name + MARKER)

    def parts(self) -> list[tuple[Path, str]]:
        """Local file and remote name, in publishing order: data, manifest, marker last."""
        return [
            (self.data, self.name),
            (self.manifest, self.name + MANIFEST),
            (self.marker, self.name + MARKER),
        ]


class Pusher(Protocol):
    transport: str
    destination: str

    def deliver(self, unit: Unit) -> dict[str, Any] | None:
        """Send the unit; the partner's receipt when the transport answers with one at once."""

    def receipt(self, unit: Unit) -> dict[str, Any] | None:
        """The partner's receipt (its ack file) if there is one yet."""

    def close(self) -> None: ...


def _step(unit: Unit, transport: str, step: str) -> None:
    log.debug("push %s %s %s: %s", transport, unit.partner, unit.name, step)  # each upload and rename


def _parse_ack(raw: bytes) -> dict[str, Any]:
    """An ack file as the partner wrote it: JSON if it is JSON, else its first 200 characters as text."""
    text = raw.decode("utf-8", errors="backslashreplace")  # an odd byte stays visible, never lost
    with contextlib.suppress(ValueError):
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            return parsed
    return {"text": text[:200]}


class FolderPush:
    """A partner's inbox folder on a shared file system."""

    transport = "folder"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.destination = str(self.folder)

    def deliver(self, unit: Unit) -> dict[str, Any] | None:
        marker = self.folder / (unit.name + MARKER)
        if marker.exists() and marker.read_bytes() == unit.marker.read_bytes():
            _step(unit, self.transport, "already delivered")
            return None
        staging = self.folder / STAGING
        staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        for local, remote in unit.parts():
            tmp = staging / f"{remote}.part"
            _step(unit, self.transport, f"upload {remote}")
            with local.open("rb") as src:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                    dst.flush()
                    os.fsync(dst.fileno())
            _step(unit, self.transport, f"publish {remote}")
            os.replace(tmp, self.folder / remote)
        _step(unit, self.transport, "done")
        return None

    def receipt(self, unit: Unit) -> dict[str, Any] | None:
        ack = self.folder / (unit.name + ACK_SUFFIX)
        return {"ack_file": ack.name, **_parse_ack(ack.read_bytes())} if ack.exists() else None

    def close(self) -> None:
        return None


class SftpPush(SftpClient):
    """A partner's SFTP inbox: the pull client's connection (host key pinned, retries), pushing instead."""

    transport = "sftp"

    def __init__(self, *args: Any, folder: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.folder = folder
        self.destination = f"{self.username}@{self.host}:{self.port}{folder}"

    def deliver(self, unit: Unit) -> dict[str, Any] | None:
        staging = posixpath.join(self.folder, STAGING)
        marker_bytes = unit.marker.read_bytes()

        def attempt() -> None:  # idempotent: a retry after a drop starts over and ends the same
            sftp = self._session()
            _step(unit, self.transport, "connected")
            try:
                with sftp.open(posixpath.join(self.folder, unit.name + MARKER), "rb") as fh:
                    if fh.read() == marker_bytes:
                        _step(unit, self.transport, "already delivered")
                        return
            except FileNotFoundError:
                pass
            try:
                sftp.mkdir(staging, 0o700)
            except OSError:
                if not stat_is_dir(sftp, staging):
                    raise
            for local, remote in unit.parts():
                tmp = posixpath.join(staging, remote + ".part")
                _step(unit, self.transport, f"upload {remote}")
                sftp.put(str(local), tmp, confirm=True)
                sftp.chmod(tmp, 0o600)
                _step(unit, self.transport, f"publish {remote}")
                sftp.posix_rename(tmp, posixpath.join(self.folder, remote))
            _step(unit, self.transport, "done")

        self._retrying(posixpath.join(self.folder, unit.name), attempt)
        return None

    def receipt(self, unit: Unit) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            sftp = self._session()
            ack = posixpath.join(self.folder, unit.name + ACK_SUFFIX)
            try:
                with sftp.open(ack, "rb") as fh:
                    return {"ack_file": posixpath.basename(ack), **_parse_ack(fh.read(65536))}
            except FileNotFoundError:
                return None

        result = self._retrying(posixpath.join(self.folder, unit.name + ACK_SUFFIX), read)
        return result if isinstance(result, dict) else None


def stat_is_dir(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        return stat.S_ISDIR(sftp.stat(path).st_mode or 0)
    except FileNotFoundError:
        return False


class _Retryable(Exception):
    """A REST answer worth retrying (5xx, 429) or a dropped connection."""


class RestPush:
    """A partner's receiving endpoint: chunks, then a commit answered by a receipt."""

    transport = "rest"

    def __init__(
        self,
        base_url: str,
        token: str,
        endpoint: str = "/api/v1/exchange/files",
        chunk_bytes: int = 256 * 1024,
        attempts: int = 5,
        retry_wait_s: float = 0.5,
        timeout_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.endpoint = endpoint
        self.destination = self.base_url + endpoint
        self.chunk_bytes = chunk_bytes
        self.attempts = attempts
        self.retry_wait_s = retry_wait_s
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _post(self, path: str, key: str, **kwargs: Any) -> dict[str, Any]:
        url = f"{self.destination}/{path}"

        def once() -> dict[str, Any]:
            try:
                response = self.session.post(
                    url, headers={"Idempotency-Key": key}, timeout=self.timeout_s, **kwargs
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise _Retryable(f"{url}: {exc}") from exc
            if response.status_code >= 500 or response.status_code == 429:
                raise _Retryable(f"{url}: HTTP {response.status_code}")
            if response.status_code >= 400:
                raise PushError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
            body = response.json()
            if not isinstance(body, dict):
                raise PushError(f"{url}: expected a JSON object, found {type(body).__name__}")
            return body

        try:
            result: dict[str, Any] = Retrying(
                retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
                wait=wait_exponential(multiplier=self.retry_wait_s, max=30),
                stop=stop_after_attempt(self.attempts),
                reraise=True,
            )(once)
        except _Retryable as exc:
            raise PushError(f"gave up after {self.attempts} attempts: {exc}") from exc
        return result

    def deliver(self, unit: Unit) -> dict[str, Any] | None:
        keys = []
        with unit.data.open("rb") as fh:
            for index, chunk in enumerate(iter(lambda: fh.read(self.chunk_bytes), b"")):
                key = f"{unit.run_id}:{unit.name}:{index}"
                _step(unit, self.transport, f"chunk {index}")
                self._post(f"{unit.name}/chunks/{index}", key, data=chunk)
                keys.append(key)
        _step(unit, self.transport, "commit")
        receipt = self._post(
            f"{unit.name}/commit",
            f"{unit.run_id}:{unit.name}:commit",
            json={
                "manifest": base64.b64encode(unit.manifest.read_bytes()).decode("ascii"),
                "marker": unit.marker.read_text(encoding="ascii"),
                "chunks": keys,
            },
        )
        if receipt.get("sha256") != unit.sha256:
            raise PushError(
                f"{self.destination}: receipt for {unit.name} names sha256 {receipt.get('sha256')}"
            )
        _step(unit, self.transport, "done")
        return receipt

    def receipt(self, unit: Unit) -> dict[str, Any] | None:
        return None  # the commit's answer is the receipt

    def close(self) -> None:
        self.session.close()
