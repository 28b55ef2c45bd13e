"""SFTP transport: a partner's drop folder on an SSH server, its host key pinned in a known_hosts file.

A partner uploads `<name>`, optionally `<name>.sha256`, then the marker `<name>.ok`; only files whose
marker exists are taken. Remote names are untrusted input: each is checked against an allow-list
before any local path is built from it. Downloads pipeline reads with paramiko's prefetch and are
retried through tenacity on a dropped connection (reconnect, re-download into the same temporary
file), so one pull lands each file exactly once, byte-identical, through `BatchWriter`.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import logging
import os
import posixpath
import re
import stat
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import paramiko
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from connectors.credentials import sftp_values
from connectors.errors import ConnectorError
from connectors.landing import BatchWriter, Landed
from core.landing import MANIFEST_NAME, Manifest, ManifestError
from core.settings import SftpSource
from core.storage import Storage

log = logging.getLogger(__name__)

TRANSPORT = "sftp"

# Allow-list for remote file names (checked with fullmatch: `$` would also accept a trailing newline).
SAFE_NAME = re.compile(r"[A-Za-z0-9\u4e00-\u9fff][A-Za-z0-9_.\-\u4e00-\u9fff]{0,254}")
MAX_NAME_BYTES = 255
CHECKSUM_SUFFIX = ".sha256"
CHECKSUM_MAX_BYTES = 4096

# Throughput tuning, measured with bench/sftp.py against OpenSSH 9.2 on loopback: reads of
# 255 KiB (sftp-server's largest, SFTP_MAX_READ_LENGTH = 261120) in channel packets that hold one
# whole response, and a window large enough to keep the pipeline full. Servers that cap reads lower
# still work (paramiko falls back to plain reads), only slower: set `request_bytes` for them.
REQUEST_BYTES = 261_120
WINDOW_BYTES = 8 * 2**20
PACKET_BYTES = 2**18


def check_name(name: str, source: str = "?", folder: str = "") -> str:
    """Refuse a remote name that could escape the landing folder or confuse a shell, a log or a disk."""
    shown = repr(name if len(name) <= 80 else name[:80] + "...")
    where = posixpath.join(folder, "") + shown if folder else shown
    problem = None
    if not name or name in {".", ".."}:
        problem = "empty or a directory reference"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif "\x00" in name or any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in name):
        problem = "contains NUL or a control character"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        problem = f"longer than {MAX_NAME_BYTES} bytes"
    elif name[0] in "-.":
        problem = "starts with '-' or '.'"
    elif not SAFE_NAME.fullmatch(name):
        problem = "has characters outside A-Z a-z 0-9 _ . - and CJK (U+4E00-U+9FFF)"
    if problem:
        raise ConnectorError(source, TRANSPORT, where, f"unsafe remote file name refused: {problem}")
    return name


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's `SHA256:...` form, so an operator can compare it with `ssh-keygen -lf`."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return f"{key.get_name()} SHA256:{base64.b64encode(digest).decode('ascii').rstrip('=')}"


class UnknownHostKey(paramiko.SSHException):
    """The server's host key is not in known_hosts (raised by `_RefuseUnknownHost`)."""

    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"{hostname} not found in known_hosts")
        self.hostname = hostname
        self.key = key


class _RefuseUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy that keeps the offered key, so the error can show its fingerprint."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise UnknownHostKey(hostname, key)


class _ShortRead(Exception):
    """Fewer bytes arrived than the server said the file holds (paramiko may report a drop as EOF)."""


def _is_drop(exc: BaseException) -> bool:
    """Worth reconnecting: the connection failed, not the request (missing file, refused key, ...)."""
    if isinstance(exc, ConnectorError | FileNotFoundError | PermissionError):
        return False
    return isinstance(exc, EOFError | OSError | paramiko.SSHException | paramiko.SFTPError | _ShortRead)


@dataclass(frozen=True)
class RemoteFile:
    """A ready file in the drop folder (its name already passed `check_name`)."""

    folder: str
    name: str
    size: int
    mtime: int | None
    marker: str = ".ok"
    checksum_file: str | None = None

    @property
    def path(self) -> str:
        return posixpath.join(self.folder, self.name)

    @property
    def sidecars(self) -> list[str]:
        """Names travelling with the data file: its marker and checksum."""
        return [self.name + self.marker] + ([self.checksum_file] if self.checksum_file else [])


@dataclass(frozen=True)
class Retrieved:
    """One downloaded file: where it is, its size, SHA-256 and line count (for the manifest's rows)."""

    name: str
    path: Path
    bytes: int
    sha256: str
    lines: int
    attempts: int


class SftpClient:
    """One SFTP server: a context-managed connection with small verbs, host key checked against known_hosts."""

    def __init__(
        self,
        host: str,
        port: int = 22,
        username: str = "",
        *,
        known_hosts: str | os.PathLike[str],
        password: str | None = None,
        key_path: str | os.PathLike[str] | None = None,
        key_passphrase: str | None = None,
        source: str = "sftp",
        timeout_s: float = 30.0,
        attempts: int = 5,
        retry_wait_s: float = 1.0,
        max_file_bytes: int = 2 * 1024**3,
        request_bytes: int = REQUEST_BYTES,
        max_requests: int | None = None,
    ) -> None:
        if password is None and key_path is None:
            raise ConnectorError(source, TRANSPORT, f"{host}:{port}", "neither a password nor a key is set")
        self.host = host
        self.port = int(port)
        self.username = username
        self.known_hosts = Path(known_hosts)
        self._password = password
        self._passphrase = key_passphrase
        self.key_path = Path(key_path) if key_path is not None else None
        self.source = source
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.retry_wait_s = retry_wait_s
        self.max_file_bytes = max_file_bytes
        self.request_bytes = request_bytes
        self.max_requests = max_requests
        self._ssh: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    @classmethod
    def from_env(
        cls, prefix: str, *, source: str = "sftp", values: Mapping[str, str] | None = None, **options: Any
    ) -> SftpClient:
        """Read `<prefix>_HOST`, `_PORT`, `_USER`, `_PASSWORD`, `_KEY`, `_KEY_PASSPHRASE`, `_KNOWN_HOSTS`.

        `values` (an Airflow connection's, by the same names without the prefix) win over the environment.
        """

        def value(name: str, required: bool = False) -> str | None:
            found = (values or {}).get(name) or os.environ.get(f"{prefix}_{name}") or None
            if required and found is None:
                raise ConnectorError(
                    source, TRANSPORT, "configuration", f"environment variable {prefix}_{name} is not set"
                )
            return found

        host = value("HOST", required=True)
        user = value("USER", required=True)
        known_hosts = value("KNOWN_HOSTS", required=True)
        port = value("PORT") or "22"
        if not port.isdigit():
            raise ConnectorError(
                source, TRANSPORT, "configuration", f"{prefix}_PORT={port!r} is not a number"
            )
        password, key = value("PASSWORD"), value("KEY")
        if password is None and key is None:
            raise ConnectorError(
                source,
                TRANSPORT,
                "configuration",
                f"set {prefix}_KEY (private key path) or {prefix}_PASSWORD",
            )
        return cls(
            host or "",
            int(port),
            user or "",
            known_hosts=known_hosts or "",
            password=password,
            key_path=key,
            key_passphrase=value("KEY_PASSPHRASE"),
            source=source,
            **options,
        )

    def __repr__(self) -> str:  # never shows the password or passphrase
        return f"SftpClient({self.username}@{self.host}:{self.port}, known_hosts={str(self.known_hosts)!r})"

    # -- connection ------------------------------------------------------------------------------
    def __enter__(self) -> SftpClient:
        self._retrying("connect", self._session)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the connection; the next verb reconnects."""
        sftp, ssh = self._sftp, self._ssh
        self._sftp = self._ssh = None
        with contextlib.suppress(Exception):
            if sftp is not None:
                sftp.close()
        with contextlib.suppress(Exception):
            if ssh is not None:
                ssh.close()

    @property
    def cipher(self) -> str:
        """The negotiated cipher of the current connection (for the benchmark's report)."""
        transport = self._ssh.get_transport() if self._ssh else None
        return str(getattr(transport, "remote_cipher", "")) if transport else ""

    def _session(self) -> paramiko.SFTPClient:
        """The open SFTP session, connecting (again) if there is none or the transport died."""
        transport = self._ssh.get_transport() if self._ssh else None
        if self._sftp is not None and transport is not None and transport.is_active():
            return self._sftp
        self.close()
        self._ssh = self._connect()
        transport = self._ssh.get_transport()
        if transport is None:  # pragma: no cover - connect() succeeded, so a transport exists
            raise paramiko.SSHException("no transport after connect")
        transport.set_keepalive(30)
        sftp = paramiko.SFTPClient.from_transport(
            transport, window_size=WINDOW_BYTES, max_packet_size=PACKET_BYTES
        )
        if sftp is None:
            raise paramiko.SSHException("server refused the sftp subsystem")
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(self.timeout_s)
        self._sftp = sftp
        return sftp

    def _connect(self) -> paramiko.SSHClient:
        where = f"{self.host}:{self.port}"
        ssh = paramiko.SSHClient()
        try:
            ssh.load_host_keys(str(self.known_hosts))
        except OSError as exc:
            raise ConnectorError(
                self.source, TRANSPORT, where, f"known_hosts file {self.known_hosts} cannot be read: {exc}"
            ) from exc
        ssh.set_missing_host_key_policy(_RefuseUnknownHost())
        log.info(
            "%s: connecting to %s@%s (known_hosts %s)", self.source, self.username, where, self.known_hosts
        )
        try:
            ssh.connect(
                self.host,
                self.port,
                self.username,
                password=self._password,
                key_filename=str(self.key_path) if self.key_path else None,
                passphrase=self._passphrase,
                look_for_keys=False,
                allow_agent=False,
                timeout=self.timeout_s,
                banner_timeout=self.timeout_s,
                auth_timeout=self.timeout_s,
                channel_timeout=self.timeout_s,
            )
        except UnknownHostKey as exc:
            ssh.close()
            raise ConnectorError(
                self.source,
                TRANSPORT,
                where,
                f"unknown host key: {self.known_hosts} has no entry for {exc.hostname} (server offers "
                f"{fingerprint(exc.key)}); refusing to connect. Confirm the fingerprint with the partner "
                f"out of band, then add it to {self.known_hosts}",
            ) from None
        except paramiko.BadHostKeyException as exc:
            ssh.close()
            raise ConnectorError(
                self.source,
                TRANSPORT,
                where,
                f"host key CHANGED: server offers {fingerprint(exc.key)} but {self.known_hosts} pins "
                f"{fingerprint(exc.expected_key)}; refusing to connect (possible man-in-the-middle). If the "
                f"partner rotated its key, confirm the new fingerprint out of band and update {self.known_hosts}",
            ) from None
        except paramiko.PasswordRequiredException as exc:  # an AuthenticationException too
            ssh.close()
            raise ConnectorError(
                self.source,
                TRANSPORT,
                where,
                f"key {self.key_path} is encrypted; set the KEY_PASSPHRASE variable",
            ) from exc
        except paramiko.AuthenticationException as exc:
            ssh.close()
            method = f"key {self.key_path}" if self.key_path else "password"
            raise ConnectorError(
                self.source, TRANSPORT, where, f"authentication failed for user {self.username!r} ({method})"
            ) from exc
        except BaseException:
            ssh.close()
            raise
        return ssh

    def _retrying(self, where: str, action: Callable[[], Any]) -> Any:
        """Run one verb; on a dropped connection reconnect with exponential backoff, a bounded number of times."""

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.close()
            log.warning(
                "%s: %s: connection lost (%s: %s); reconnecting, attempt %d of %d",
                self.source,
                where,
                type(exc).__name__,
                exc,
                state.attempt_number + 1,
                self.attempts,
            )

        try:
            return Retrying(
                retry=retry_if_exception(_is_drop),
                wait=wait_exponential(multiplier=self.retry_wait_s, max=30),
                stop=stop_after_attempt(self.attempts),
                before_sleep=before_sleep,
                reraise=True,
            )(action)
        except ConnectorError:
            raise
        except FileNotFoundError as exc:
            raise ConnectorError(
                self.source, TRANSPORT, where, "no such file or folder on the server"
            ) from exc
        except PermissionError as exc:
            raise ConnectorError(self.source, TRANSPORT, where, "permission denied on the server") from exc
        except Exception as exc:
            if not _is_drop(exc):
                raise
            self.close()
            raise ConnectorError(
                self.source,
                TRANSPORT,
                f"{self.host}:{self.port} {where}",
                f"gave up after {self.attempts} attempts: {type(exc).__name__}: {exc}",
            ) from exc

    # -- verbs -----------------------------------------------------------------------------------
    def list_ready(self, folder: str, pattern: str = "*", marker: str = ".ok") -> list[RemoteFile]:
        """Regular files matching `pattern` whose `<name><marker>` exists, by name; unsafe names are refused,
        links and folders skipped with a warning (never followed)."""
        entries = self._retrying(folder, lambda: self._session().listdir_attr(folder))
        names = {e.filename for e in entries}
        ready: list[RemoteFile] = []
        for entry in sorted(entries, key=lambda e: e.filename):
            name = entry.filename
            if name.endswith((marker, CHECKSUM_SUFFIX)) or not fnmatch.fnmatchcase(name, pattern):
                continue
            if name + marker not in names:
                log.info("%s: %r has no %s marker yet; not taken", self.source, name, marker)
                continue
            check_name(name, self.source, folder)
            if not stat.S_ISREG(
                entry.st_mode or 0
            ):  # the listing's attributes are lstat's: links show as links
                log.warning(
                    "%s: %s is not a regular file (symbolic link or folder); not taken",
                    self.source,
                    posixpath.join(folder, name),
                )
                continue
            checksum = name + CHECKSUM_SUFFIX if name + CHECKSUM_SUFFIX in names else None
            ready.append(RemoteFile(folder, name, int(entry.st_size or 0), entry.st_mtime, marker, checksum))
        return ready

    def read_checksum(self, remote: RemoteFile) -> str:
        """The partner's SHA-256 from `<name>.sha256` (`sha256sum` format or the bare hex digest)."""
        if remote.checksum_file is None:
            raise ConnectorError(self.source, TRANSPORT, remote.path, f"no {CHECKSUM_SUFFIX} file")
        path = posixpath.join(remote.folder, remote.checksum_file)

        def fetch() -> bytes:
            with self._session().open(path, "rb") as fh:
                return bytes(fh.read(CHECKSUM_MAX_BYTES + 1))

        body = self._retrying(path, fetch)
        tokens = body[:CHECKSUM_MAX_BYTES].split()
        digest = tokens[0].decode("ascii", "replace").lower() if tokens else ""
        if len(body) > CHECKSUM_MAX_BYTES or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConnectorError(
                self.source, TRANSPORT, path, "expected a 64-digit hex SHA-256 (sha256sum format)"
            )
        return digest

    def retrieve(
        self,
        remote: RemoteFile | str,
        local_path: Path,
        *,
        expected_sha256: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Retrieved:
        """Download one file to `local_path` through a temporary file; a dropped connection restarts it."""
        if isinstance(remote, RemoteFile):
            folder, name = remote.folder, remote.name
        else:
            folder, name = posixpath.split(remote)
            if ".." in folder.split("/"):
                raise ConnectorError(self.source, TRANSPORT, repr(remote), "remote path contains '..'")
        check_name(name, self.source, folder)
        path = posixpath.join(folder, name)
        local_path = Path(local_path)
        partial = local_path.with_name(f".{uuid.uuid4().hex}.part")  # one temporary file for every attempt
        attempts = 0

        def attempt() -> tuple[int, str, int]:
            nonlocal attempts
            attempts += 1
            return self._download(path, partial, progress)

        try:
            size, digest, lines = self._retrying(path, attempt)
            if expected_sha256 is not None and digest != expected_sha256.lower():
                raise ConnectorError(
                    self.source,
                    TRANSPORT,
                    path,
                    f"SHA-256 mismatch: partner's {name}{CHECKSUM_SUFFIX} says {expected_sha256.lower()}, "
                    f"received file hashes to {digest}; refused",
                )
            os.replace(partial, local_path)
        finally:
            partial.unlink(missing_ok=True)
        log.info("%s: retrieved %r, %d bytes in %d attempt(s)", self.source, name, size, attempts)
        return Retrieved(name, local_path, size, digest, lines, attempts)

    def _download(
        self, path: str, partial: Path, progress: Callable[[int], None] | None
    ) -> tuple[int, str, int]:
        """One attempt: pipelined reads (prefetch) of the whole file, hashed and line-counted on the way."""
        sftp = self._session()
        attrs = sftp.lstat(path)
        if not stat.S_ISREG(attrs.st_mode or 0):
            raise ConnectorError(self.source, TRANSPORT, path, "not a regular file (link or folder); refused")
        size = int(attrs.st_size or 0)
        if size > self.max_file_bytes:
            raise ConnectorError(
                self.source,
                TRANSPORT,
                path,
                f"{size} bytes exceeds the ceiling of {self.max_file_bytes} per file",
            )
        digest = hashlib.sha256()
        done = lines = 0
        last = b"\n"
        remote = sftp.open(path, "rb")
        try:
            remote.MAX_REQUEST_SIZE = self.request_bytes  # per file: reads of this size are not re-buffered
            remote.prefetch(size, self.max_requests)
            with partial.open("wb") as out:
                for chunk in _chunks(remote, self.request_bytes):
                    done += len(chunk)
                    if done > self.max_file_bytes:
                        raise ConnectorError(
                            self.source,
                            TRANSPORT,
                            path,
                            f"grew past the ceiling of {self.max_file_bytes} bytes",
                        )
                    digest.update(chunk)
                    out.write(chunk)
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
                    if progress is not None:
                        progress(done)
        except BaseException:
            # Cut the connection before closing the handle: a close would first drain every
            # outstanding prefetch response (or wait on a dead socket).
            self.close()
            raise
        finally:
            with contextlib.suppress(Exception):
                remote.close()
        if done != size:
            raise _ShortRead(f"expected {size} bytes, received {done}")
        return done, digest.hexdigest(), lines + (last != b"\n")

    def move_to_processed(self, remote: RemoteFile, processed: str = "processed") -> str:
        """Move a taken file, its marker and checksum aside, so the partner sees it was collected."""
        check_name(remote.name, self.source, remote.folder)
        target_folder = posixpath.join(remote.folder, processed)

        def move() -> str:  # idempotent, so a retry after a drop finishes what the first try began
            sftp = self._session()
            if not _exists(sftp, target_folder):
                sftp.mkdir(target_folder)
            for name in [remote.name, *remote.sidecars]:
                if _exists(sftp, posixpath.join(remote.folder, name)):
                    _rename(sftp, posixpath.join(remote.folder, name), posixpath.join(target_folder, name))
            return posixpath.join(target_folder, remote.name)

        return str(self._retrying(remote.path, move))


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _rename(sftp: paramiko.SFTPClient, source: str, target: str) -> None:
    """posix-rename@openssh.com replaces an older copy in processed/; plain rename where it is missing."""
    try:
        sftp.posix_rename(source, target)
    except OSError:
        if not _exists(sftp, source):
            raise
        sftp.rename(source, target)


def _chunks(remote: paramiko.SFTPFile, size: int) -> Iterator[bytes]:
    while chunk := remote.read(size):
        yield chunk


def landed_digests(storage: Storage, source: str) -> set[str]:
    """SHA-256 of every file in this source's published batches (their manifests), to skip re-sent files."""
    root = storage.var / "landing" / source
    digests: set[str] = set()
    for path in sorted(root.glob(f"*/{MANIFEST_NAME}")):
        if path.parent.name.startswith("."):
            continue
        try:
            digests.update(f.sha256 for f in Manifest.read(path.parent).files)
        except (OSError, ManifestError) as exc:
            raise ConnectorError(source, TRANSPORT, str(path), f"landing manifest unreadable: {exc}") from exc
    return digests


def _client(source: str, config: SftpSource) -> SftpClient:
    """The source's client from its Airflow connection, else its `<env_prefix>_*` variables."""
    return SftpClient.from_env(
        config.env_prefix or f"LIANBAN_{source.upper()}_SFTP",
        source=source,
        values=sftp_values(config.conn_id),
        timeout_s=config.timeout_s,
        attempts=config.attempts,
        retry_wait_s=config.retry_wait_s,
        max_file_bytes=config.max_file_bytes,
        request_bytes=config.request_bytes,
        max_requests=config.max_requests,
    )


def ready_sftp(storage: Storage, source: str, config: SftpSource) -> tuple[str, int]:
    """The remote folder (host:port/path) and how many files in it are ready: what a drop wait polls."""
    folder = storage.settings.expand(config.folder)
    with _client(source, config) as client:
        return f"{client.host}:{client.port}{folder}", len(
            client.list_ready(folder, config.pattern, config.marker)
        )


def pull_sftp(storage: Storage, source: str, config: SftpSource, as_of: date) -> Landed:
    """Land every ready file not landed before, byte-identical, in one batch; bookmark the last name.

    With nothing new (no ready file, or only files whose SHA-256 already landed) no batch is
    published: an empty batch would become the source's newest accepted batch and hide its facts
    from the merge. The batch already holding the newest content is returned instead (`new=False`).
    """
    seen = landed_digests(storage, source)
    with (
        _client(source, config) as client,
        BatchWriter(storage, source, as_of.strftime("%Y%m%d"), TRANSPORT) as batch,
    ):
        ready = client.list_ready(storage.settings.expand(config.folder), config.pattern, config.marker)
        for remote in ready:
            expected = None
            if config.checksum != "off" and remote.checksum_file:
                expected = client.read_checksum(remote)
            elif config.checksum == "required":
                raise ConnectorError(
                    source, TRANSPORT, remote.path, f"no {remote.name}{CHECKSUM_SUFFIX} sent"
                )
            if expected is not None and expected in seen:
                log.info("%s: %r already landed (same SHA-256); not downloaded", source, remote.name)
                continue
            got = client.retrieve(remote, batch.path_for(remote.name), expected_sha256=expected)
            if got.sha256 in seen:
                got.path.unlink()
                log.info("%s: %r already landed (same SHA-256); skipped", source, remote.name)
                continue
            seen.add(got.sha256)
            batch.added(remote.name, max(got.lines - 1, 0))
        watermark = ready[-1].name if ready else None
        landed = batch.publish(watermark) if batch.files else _unchanged(storage, source, config, watermark)
        if config.move_to_processed:
            for remote in ready:
                try:
                    client.move_to_processed(remote, config.processed_folder)
                except ConnectorError as exc:  # landed already; the next pull skips it by its SHA-256
                    log.warning("%s: could not move %r aside: %s", source, remote.name, exc)
    log.info("%s: %d ready file(s), %d new, batch %s", source, len(ready), len(batch.files), landed.batch_id)
    return landed


def _unchanged(storage: Storage, source: str, config: SftpSource, watermark: str | None) -> Landed:
    """Nothing new arrived: the current batch stays (and the bookmark moves past re-sent files)."""
    batch_id = storage.watermark_record(source)[1]
    manifest_path = storage.landing(source, batch_id) / MANIFEST_NAME if batch_id else None
    if batch_id is None or manifest_path is None or not manifest_path.exists():
        raise ConnectorError(
            source,
            TRANSPORT,
            config.folder,
            f"no file matching {config.pattern} with its {config.marker} marker, and nothing landed before",
        )
    manifest = Manifest.read(manifest_path.parent)
    if watermark is not None and watermark != storage.watermark(source):
        storage.commit_watermark(source, watermark, batch_id)
    log.info("%s: nothing new on the server; batch %s stays current", source, batch_id)
    return Landed(batch_id, manifest_path.parent, manifest.rows, False, manifest)
