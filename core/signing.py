"""Ed25519 signatures over exchange manifests, and the offline check a partner runs (`hub verify`).

Whoever can change a file can change its checksum too, so a manifest's SHA-256 proves nothing on its
own; the hub signs the canonical form of every manifest and a partner checks it with the public key
only. The private key comes from the secrets store (environment variable LIANBAN_SIGNING_KEY, a PEM
that Airflow can inject from a connection or variable); the sandbox generates one on first use under
var/keys (0600). Key rotation is described in docs/operations.md.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.storage import sha256_file

log = logging.getLogger(__name__)

SIGNING_KEY_VARIABLE = "LIANBAN_SIGNING_KEY"
PRIVATE_NAME = "manifest_ed25519.pem"
PUBLIC_NAME = "manifest_ed25519.pub.pem"
UNSIGNED = ("signature",)


class VerifyError(ValueError):
    """A delivered file or its manifest does not check out; the message says which was tampered with."""


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey
    key_id: str

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a public key, so a partner holding several knows which one to use."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def write_private(path: Path, data: bytes) -> None:
    """Create a secret file 0600 from the start (never briefly world-readable), in a 0700 folder."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_signing_key(var_dir: Path) -> SigningKey:
    """The manifest signing key: from the secrets store, else the sandbox's own key (made on first use)."""
    pem = os.environ.get(SIGNING_KEY_VARIABLE)
    where = f"environment variable {SIGNING_KEY_VARIABLE}"
    keys = Path(var_dir) / "keys"
    if not pem:
        path = keys / PRIVATE_NAME
        where = str(path)
        if not path.exists():
            log.warning("no %s set: generating a sandbox signing key under %s", SIGNING_KEY_VARIABLE, keys)
            private = Ed25519PrivateKey.generate()
            write_private(
                path,
                private.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
        pem = path.read_text(encoding="ascii")
    try:
        loaded = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: expected an unencrypted Ed25519 private key in PEM form") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{where}: expected an Ed25519 key, found {type(loaded).__name__}")
    key = SigningKey(loaded, key_id(loaded.public_key()))
    public = keys / PUBLIC_NAME
    if not public.exists() or public.read_bytes() != key.public_pem():  # what partners are given
        keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        public.write_bytes(key.public_pem())
    return key


def canonical(manifest: dict[str, Any]) -> bytes:
    """The signed bytes: the manifest without its signature, keys sorted, compact UTF-8 JSON."""
    body = {k: v for k, v in manifest.items() if k not in UNSIGNED}
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign_manifest(manifest: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """The manifest with its key id and an Ed25519 signature over its canonical form."""
    body = {**manifest, "key_id": key.key_id}
    signature = key.private.sign(canonical(body))
    return {**body, "signature": base64.b64encode(signature).decode("ascii")}


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        loaded = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise VerifyError(f"{path}: cannot read the public key: {exc}") from exc
    if not isinstance(loaded, Ed25519PublicKey):
        raise VerifyError(f"{path}: expected an Ed25519 public key, found {type(loaded).__name__}")
    return loaded


def count_rows(path: Path, manifest: dict[str, Any]) -> int:
    """Data rows in a delivered file, read the way the partner reads it (its format and encoding)."""
    fmt = manifest.get("format", "csv")
    if fmt == "csv":
        text = path.read_bytes().decode(str(manifest.get("encoding", "utf-8-sig")))
        return max(sum(1 for _ in csv.reader(io.StringIO(text, newline=""))) - 1, 0)
    if fmt == "jsonl":
        return path.read_bytes().count(b"\n")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    if fmt == "xlsx":
        from openpyxl import load_workbook

        book = load_workbook(path, read_only=True)
        try:
            return max(int(book.active.max_row or 0) - 1, 0)
        finally:
            book.close()
    raise VerifyError(f"{path}: manifest names an unknown format {fmt!r}")


def verify_delivery(data: Path, manifest_path: Path, public_key: Path) -> dict[str, Any]:
    """Check a delivered file offline: the manifest's signature, then the file's SHA-256, bytes and rows.

    The manifest is checked first: if its signature fails the manifest was changed (or signed by another
    key) and nothing in it can be trusted; if it holds and the file differs, the file was changed.
    """
    try:
        manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VerifyError(f"{manifest_path}: manifest unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("signature"), str):
        raise VerifyError(f"{manifest_path}: manifest tampered or unsigned: no signature")
    public = load_public_key(public_key)
    if manifest.get("key_id") != key_id(public):
        raise VerifyError(
            f"{manifest_path}: manifest signed with key {manifest.get('key_id')!r}, "
            f"but {public_key} is {key_id(public)!r}"
        )
    try:
        public.verify(base64.b64decode(manifest["signature"], validate=True), canonical(manifest))
    except (InvalidSignature, ValueError) as exc:
        raise VerifyError(
            f"{manifest_path}: manifest tampered: the signature does not match its content"
        ) from exc
    if manifest.get("file") != Path(data).name:
        raise VerifyError(
            f"{data}: manifest {manifest_path} describes {manifest.get('file')!r}, not this file"
        )
    digest = sha256_file(Path(data))
    if digest != manifest.get("sha256"):
        raise VerifyError(
            f"{data}: file tampered: sha256 {digest} but the signed manifest says {manifest.get('sha256')}"
        )
    rows = count_rows(Path(data), manifest)
    if rows != manifest.get("rows"):
        raise VerifyError(
            f"{data}: file tampered: {rows} rows but the signed manifest says {manifest.get('rows')}"
        )
    return manifest
