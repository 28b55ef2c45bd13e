"""`python -m bench.sftp`: our SFTP download against the OpenSSH `sftp` client on a throwaway sshd.

Both clients fetch the same random file from the same loopback server in the same run, with the
same ed25519 client key and the same known_hosts file, alternating rounds so that machine noise
falls on both; each figure is the median of its rounds, timed end to end (connect, authenticate,
download to local disk, disconnect). Target: ours at least half the OpenSSH client's throughput.

The throwaway server (`LocalSshd`) lives here rather than under tests/ because library code must
not import tests; the integration fixtures import it from this module.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.storage import sha256_file

log = logging.getLogger(__name__)

SSHD = "/usr/sbin/sshd"
SFTP = "/usr/bin/sftp"
LOOPBACK = "127.0.0.1"

_CONFIG = """\
# Throwaway sshd for Lianban's benchmark and integration tests: loopback only, key auth only.
Port {port}
ListenAddress {host}
HostKey {host_key}
PidFile {workdir}/sshd.pid
AuthorizedKeysFile {authorized_keys}
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
AllowTcpForwarding no
X11Forwarding no
MaxStartups 50
LogLevel INFO
Subsystem sftp internal-sftp
"""


def write_ed25519_key(path: Path) -> str:
    """Write a new unencrypted ed25519 private key (mode 0600, OpenSSH format); return its public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    path.with_name(path.name + ".pub").write_text(public + "\n", encoding="ascii")
    return public


def known_hosts_line(host: str, port: int, public: str) -> str:
    """One known_hosts entry in OpenSSH's `[host]:port` form (plain host name on port 22)."""
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {public}\n"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalSshd:
    """A running throwaway OpenSSH server: where it listens, and the key and known_hosts to reach it."""

    workdir: Path
    host: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_public: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def env(self, prefix: str) -> dict[str, str]:
        """The environment `SftpClient.from_env(prefix)` reads to reach this server."""
        return {
            f"{prefix}_HOST": self.host,
            f"{prefix}_PORT": str(self.port),
            f"{prefix}_USER": self.user,
            f"{prefix}_KEY": str(self.client_key),
            f"{prefix}_KNOWN_HOSTS": str(self.known_hosts),
        }

    def session_pids(self) -> list[int]:
        """Processes serving client connections (sshd forks one or two per session)."""
        import psutil

        try:
            return [p.pid for p in psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def drop_sessions(self) -> int:
        """Kill every session process, as a network cut would; the listener keeps accepting."""
        pids = self.session_pids()
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def accepted_logins(self) -> int:
        """How many logins the server has accepted so far (from its log)."""
        return self.log_text().count("Accepted publickey")

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="backslashreplace")

    def stop(self) -> None:
        """Stop the listener and any session it forked."""
        children = self.session_pids()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for pid in children:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _check_config(sshd: str, config: Path) -> None:
    """`sshd -t` first, so a bad setup fails with sshd's own words; create a missing privsep directory."""
    for _ in range(2):
        test = subprocess.run(  # noqa: S603 - argv list, no shell; sshd path and our own config file
            [sshd, "-t", "-f", str(config)], capture_output=True, text=True, check=False
        )
        if test.returncode == 0:
            return
        missing = re.search(r"Missing privilege separation directory: (\S+)", test.stderr)
        if missing and os.geteuid() == 0:
            # Packaged sshd expects its (normally boot-created) empty privsep directory when run as root.
            Path(missing.group(1)).mkdir(mode=0o755, parents=True, exist_ok=True)
            continue
        break
    raise RuntimeError(f"{sshd} rejects {config}: {test.stderr.strip()}")


def _wait_ready(server: LocalSshd, timeout_s: float) -> bool:
    """True once the port answers with an SSH banner; False if sshd exited first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            with socket.create_connection((server.host, server.port), timeout=1.0) as sock:
                if sock.recv(64).startswith(b"SSH-2.0-"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def start_sshd(workdir: Path, sshd: str = SSHD, timeout_s: float = 10.0) -> LocalSshd:
    """Start `sshd -D -e -f <config>` on a free loopback port as the current user, with fresh keys."""
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "ssh_host_ed25519_key"
    host_public = write_ed25519_key(host_key)
    client_key = workdir / "client_ed25519"
    (workdir / "authorized_keys").write_text(write_ed25519_key(client_key) + "\n", encoding="ascii")
    config = workdir / "sshd_config"
    known_hosts = workdir / "known_hosts"
    log_path = workdir / "sshd.log"
    last_log = ""
    for _ in range(3):  # a free port can be taken between probing and binding; try another
        port = _free_port(LOOPBACK)
        config.write_text(
            _CONFIG.format(
                port=port,
                host=LOOPBACK,
                host_key=host_key,
                workdir=workdir,
                authorized_keys=workdir / "authorized_keys",
            ),
            encoding="ascii",
        )
        _check_config(sshd, config)
        known_hosts.write_text(known_hosts_line(LOOPBACK, port, host_public), encoding="ascii")
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(  # noqa: S603 - argv list, no shell; the sshd we located
                [sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = LocalSshd(
            workdir=workdir,
            host=LOOPBACK,
            port=port,
            user=getpass.getuser(),
            client_key=client_key,
            known_hosts=known_hosts,
            host_public=host_public,
            log_path=log_path,
            process=process,
        )
        if _wait_ready(server, timeout_s):
            log.info("sshd listening on %s:%d (pid %d)", LOOPBACK, port, process.pid)
            return server
        server.stop()
        last_log = server.log_text()
    raise RuntimeError(f"sshd did not start; its log ({log_path}):\n{last_log[-2000:]}")


@contextmanager
def local_sshd(workdir: Path, sshd: str = SSHD) -> Iterator[LocalSshd]:
    """A throwaway sshd for the duration of a `with` block."""
    server = start_sshd(workdir, sshd)
    try:
        yield server
    finally:
        server.stop()


def openssh_command(server: LocalSshd, batch_file: Path) -> list[str]:
    """The OpenSSH client in batch mode with our key and known_hosts only (no user config, no agent)."""
    return [
        SFTP,
        "-q",
        "-F",
        "/dev/null",
        "-b",
        str(batch_file),
        "-i",
        str(server.client_key),
        "-P",
        str(server.port),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={server.known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        f"{server.user}@{server.host}",
    ]


def _paramiko_get(server: LocalSshd, remote: Path, target: Path) -> None:
    """The untuned baseline: paramiko's own `SFTPClient.get` (prefetch, 32 KiB reads, 2 MiB window)."""
    import paramiko

    ssh = paramiko.SSHClient()
    ssh.load_host_keys(str(server.known_hosts))
    ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
    ssh.connect(
        server.host,
        server.port,
        server.user,
        key_filename=str(server.client_key),
        look_for_keys=False,
        allow_agent=False,
    )
    try:
        with ssh.open_sftp() as sftp:
            sftp.get(str(remote), str(target))
    finally:
        ssh.close()


def bench_sftp(size_mb: int = 200, rounds: int = 3) -> dict[str, Any]:
    """Time SftpClient.retrieve against OpenSSH `sftp` on one random file; MB = 10**6 bytes.

    Also times paramiko's untuned `SFTPClient.get`, to show what the read size and window buy.
    """
    from connectors.sftp import SftpClient

    size = size_mb * 10**6
    with (
        tempfile.TemporaryDirectory(prefix="lianban-bench-sftp-") as tmp,
        local_sshd(Path(tmp) / "sshd") as server,
    ):
        served = Path(tmp) / "srv"
        out = Path(tmp) / "out"
        served.mkdir()
        out.mkdir()
        source = served / f"bench-{size_mb}mb.bin"
        with source.open("wb") as fh:
            for start in range(0, size, 1 << 23):
                fh.write(os.urandom(min(1 << 23, size - start)))
        expected = sha256_file(source)
        batch = Path(tmp) / "get.batch"
        target_openssh = out / "openssh.bin"
        batch.write_text(f'get "{source}" "{target_openssh}"\n', encoding="utf-8")
        command = openssh_command(server, batch)
        ours: list[float] = []
        openssh: list[float] = []
        baseline: list[float] = []
        cipher = ""
        for _ in range(rounds):
            target = out / "ours.bin"
            started = time.perf_counter()
            with SftpClient(
                server.host,
                server.port,
                server.user,
                key_path=server.client_key,
                known_hosts=server.known_hosts,
                source="bench",
            ) as client:
                got = client.retrieve(str(source), target)
                cipher = client.cipher
            ours.append(time.perf_counter() - started)
            if got.sha256 != expected:
                raise RuntimeError("our download differs from the served file")
            target.unlink()

            started = time.perf_counter()
            # argv list, no shell: /usr/bin/sftp with our own key, port and paths
            subprocess.run(command, check=True, stdin=subprocess.DEVNULL, capture_output=True)  # noqa: S603
            openssh.append(time.perf_counter() - started)
            if sha256_file(target_openssh) != expected:
                raise RuntimeError("the OpenSSH client's download differs from the served file")
            target_openssh.unlink()

            started = time.perf_counter()
            _paramiko_get(server, source, out / "baseline.bin")
            baseline.append(time.perf_counter() - started)
            (out / "baseline.bin").unlink()
    ours_mb_s = size / 10**6 / statistics.median(ours)
    openssh_mb_s = size / 10**6 / statistics.median(openssh)
    result = {
        "size_mb": size_mb,
        "rounds": rounds,
        "ours_mb_s": round(ours_mb_s, 1),
        "openssh_mb_s": round(openssh_mb_s, 1),
        "ratio": round(ours_mb_s / openssh_mb_s, 3),
        "target_ratio": 0.5,
        "paramiko_get_mb_s": round(size / 10**6 / statistics.median(baseline), 1),
        "ours_seconds": [round(s, 3) for s in ours],
        "openssh_seconds": [round(s, 3) for s in openssh],
        "ours_cipher": cipher,
        "openssh_command": shlex.join(command),
        "openssh_version": subprocess.run(  # noqa: S603 - argv list, no shell; the ssh beside SFTP
            [str(Path(SFTP).with_name("ssh")), "-V"], capture_output=True, text=True, check=False
        ).stderr.strip(),
        "cpus": os.cpu_count(),
    }
    log.info("sftp bench: %s", result)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its figures as JSON to stdout."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = bench_sftp(args.size_mb, args.rounds)
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0 if result["ratio"] >= result["target_ratio"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
