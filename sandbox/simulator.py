"""The police department simulator: the 户籍 REST API the sandbox's police connector pulls from.

A small Starlette app served by a real uvicorn on a loopback port, so integration tests and `hub run`
exercise real HTTP (bearer token, paging, 400/401 errors) without any external service. The JSONL
file is read once at start-up and each line is served as written, so every field (rare characters
included) reaches the client byte for byte.

    GET /api/v1/hukou/persons?page=N&page_size=M   (Authorization: Bearer <token>)
    -> {"page": N, "page_size": M, "total": T, "total_pages": P, "items": [...]}   pages are 1-based
    GET /api/v1/hukou/changes?cursor=C&limit=M -> {"items": [...], "next_cursor": C'}: records in
        (gxsj, gmsfhm) order after the cursor; the cursor is the last record's "gxsj|gmsfhm"
    POST /api/v1/hukou/verify {"ids": [...]} (at most 1000) -> {"items": [... the persons found ...]}
    GET /healthz -> {"status": "ok", "persons": T}

Faults can be injected (Faults): every Nth request answered 500, 429 with Retry-After, delayed,
or cut off mid-body, so connector tests see the failures real departments produce.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import hmac
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

log = logging.getLogger(__name__)

PERSONS_PATH = "/api/v1/hukou/persons"
VERIFY_PATH = "/api/v1/hukou/verify"
CHANGES_PATH = "/api/v1/hukou/changes"
MAX_VERIFY_IDS = 1000
_ID_FIELD = re.compile(rb'"gmsfhm":\s*"([^"]*)"')
_UPDATED_FIELD = re.compile(rb'"gxsj":\s*"([^"]*)"')
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000
TOKEN_VARIABLE = "LIANBAN_POLICE_TOKEN"  # noqa: S105 - the name of the variable, not a token


class SimulatorDataError(ValueError):
    """The simulator's data file is not one JSON object per line."""


def load_lines(data_file: Path) -> list[bytes]:
    """The JSONL file as raw lines (UTF-8 bytes without the newline).

    Checked cheaply (strict UTF-8, each line an object's braces) rather than parsed: at provincial
    scale a full json.loads of every line would add seconds to every start.
    """
    data = Path(data_file).read_bytes()
    start = 0
    while start < len(data):  # strict UTF-8, a megabyte of whole lines at a time (no giant str)
        end = data.find(b"\n", start + (1 << 20))
        end = len(data) if end < 0 else end + 1
        try:
            data[start:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, start + exc.start) + 1
            raise SimulatorDataError(f"{data_file} line {line}: not UTF-8 ({exc.reason})") from exc
        start = end
    lines = [line for line in data.splitlines() if line]
    starts = data.startswith(b"{") + data.count(b"\n{")
    ends = data.count(b"}\n") + data.count(b"}\r\n") + data.endswith(b"}")
    if starts != len(lines) or ends != len(lines):  # find the culprit only when something is wrong
        for number, raw in enumerate(data.split(b"\n"), start=1):
            text = raw.removesuffix(b"\r")
            if text and not (text.startswith(b"{") and text.endswith(b"}")):
                raise SimulatorDataError(f"{data_file} line {number}: expected one JSON object per line")
    return lines


@dataclass
class Faults:
    """Failure injection, counted over all requests to the data endpoints (0 = never)."""

    error_500_every: int = 0
    rate_limit_every: int = 0
    retry_after_s: float = 1.0
    drop_every: int = 0
    delay_s: float = 0.0

    def pick(self, number: int) -> str | None:
        for name, every in (
            ("500", self.error_500_every),
            ("429", self.rate_limit_every),
            ("drop", self.drop_every),
        ):
            if every and number % every == 0:
                return name
        return None


def _feed_key(line: bytes) -> str:
    """A record's place in the change feed: 'gxsj|gmsfhm' (also the cursor a client resumes from)."""
    updated = _UPDATED_FIELD.search(line)
    ident = _ID_FIELD.search(line)
    return f"{updated.group(1).decode() if updated else ''}|{ident.group(1).decode() if ident else ''}"


def _cut_off(body: bytes) -> StreamingResponse:
    """Announce the whole body, send half of it, then break the connection."""

    async def halves() -> AsyncIterator[bytes]:
        yield body[: len(body) // 2]
        raise ConnectionAbortedError("simulated connection drop")

    return StreamingResponse(
        halves(), media_type="application/json", headers={"Content-Length": str(len(body))}
    )


def _error(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="hukou"'} if status == 401 else None
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int | JSONResponse:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        return _error(
            400, "bad_parameter", f"{name} must be an integer between {low} and {high}, got {text!r}"
        )
    if not low <= value <= high:
        return _error(
            400, "bad_parameter", f"{name} must be an integer between {low} and {high}, got {value}"
        )
    return value


def create_app(data_file: Path, token: str, faults: Faults | None = None) -> Starlette:
    """The simulator app over one JSONL file, guarded by one bearer token."""
    if not token:
        raise ValueError("the police simulator needs a non-empty token")
    lines = load_lines(data_file)
    by_id = {m.group(1).decode(): line for line in lines if (m := _ID_FIELD.search(line))}
    feed = sorted((_feed_key(line), line) for line in lines)
    feed_keys = [key for key, _ in feed]
    expected = f"Bearer {token}".encode()
    faults = faults or Faults()
    calls = {"n": 0}
    log.info("police simulator: %d persons from %s", len(lines), data_file)

    async def guard(request: Request) -> Response | str | None:
        """Auth, then any injected fault; returns an error response, 'drop', or None to go on."""
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return _error(401, "unauthorized", "missing or wrong bearer token")
        calls["n"] += 1
        if faults.delay_s:
            await asyncio.sleep(faults.delay_s)
        fault = faults.pick(calls["n"])
        if fault == "500":
            return _error(500, "internal", "simulated server error")
        if fault == "429":
            return JSONResponse(
                {"error": "rate_limited", "message": "too many requests"},
                status_code=429,
                headers={"Retry-After": f"{faults.retry_after_s:g}"},
            )
        return fault

    async def persons(request: Request) -> Response:
        refused = await guard(request)
        if isinstance(refused, Response):
            return refused
        page = _int_param(request, "page", 1, 1, 10**9)
        if isinstance(page, Response):
            return page
        page_size = _int_param(request, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        if isinstance(page_size, Response):
            return page_size
        total = len(lines)
        start = (page - 1) * page_size
        head = (
            f'{{"page": {page}, "page_size": {page_size}, "total": {total}, '
            f'"total_pages": {math.ceil(total / page_size)}, "items": ['
        ).encode()
        body = head + b", ".join(lines[start : start + page_size]) + b"]}"
        return _cut_off(body) if refused == "drop" else Response(body, media_type="application/json")

    async def verify(request: Request) -> Response:
        refused = await guard(request)
        if isinstance(refused, Response):
            return refused
        try:
            ids = json.loads(await request.body())["ids"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "bad_body", 'expected a JSON object {"ids": [...]}')
        if not isinstance(ids, list) or len(ids) > MAX_VERIFY_IDS:
            return _error(400, "bad_body", f"ids must be a list of at most {MAX_VERIFY_IDS} ID numbers")
        found = [by_id[i] for i in ids if isinstance(i, str) and i in by_id]
        body = b'{"items": [' + b", ".join(found) + b"]}"
        return _cut_off(body) if refused == "drop" else Response(body, media_type="application/json")

    async def changes(request: Request) -> Response:
        refused = await guard(request)
        if isinstance(refused, Response):
            return refused
        limit = _int_param(request, "limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        if isinstance(limit, Response):
            return limit
        cursor = request.query_params.get("cursor", "")
        start = bisect.bisect_right(feed_keys, cursor) if cursor else 0
        chosen = feed[start : start + limit]
        following = json.dumps(chosen[-1][0] if chosen else cursor or None, ensure_ascii=False).encode()
        body = (
            b'{"items": [' + b", ".join(line for _, line in chosen) + b'], "next_cursor": ' + following + b"}"
        )
        return _cut_off(body) if refused == "drop" else Response(body, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "persons": len(lines)})

    return Starlette(
        routes=[
            Route(PERSONS_PATH, persons),
            Route(VERIFY_PATH, verify, methods=["POST"]),
            Route(CHANGES_PATH, changes),
            Route("/healthz", healthz),
        ]
    )


@contextmanager
def serve(app: Starlette, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0) -> Iterator[str]:
    """Run the app under uvicorn in a background thread; yield its base URL; stop it cleanly on exit.

    The socket is bound here (port 0 = a free port chosen by the OS) and handed to uvicorn, so the URL
    is known before the server starts and no port can be taken in between.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="police-simulator", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout)
            sock.close()
            raise RuntimeError(f"the police simulator did not start on {bound_host}:{bound_port}")
        time.sleep(0.01)
    url = f"http://{bound_host}:{bound_port}"
    log.info("police simulator listening on %s", url)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():  # pragma: no cover - only when a client holds a request open
            server.force_exit = True
            thread.join(timeout)
        sock.close()


def read_token(secrets_env: Path) -> str:
    """The police token from the sandbox's secrets.env (`LIANBAN_POLICE_TOKEN=<hex>`)."""
    for number, line in enumerate(Path(secrets_env).read_text(encoding="utf-8").splitlines(), start=1):
        key, sep, value = line.partition("=")
        if sep and key.strip() == TOKEN_VARIABLE:
            if not value.strip():
                raise ValueError(f"{secrets_env} line {number}: {TOKEN_VARIABLE} is empty")
            return value.strip()
    raise ValueError(f"{secrets_env}: no {TOKEN_VARIABLE}=... line")


@contextmanager
def running_police_simulator(sandbox_dir: Path) -> Iterator[tuple[str, str]]:
    """The sandbox's police API on a free loopback port: yields (base_url, token)."""
    sandbox_dir = Path(sandbox_dir)
    token = read_token(sandbox_dir / "secrets.env")
    app = create_app(sandbox_dir / "police" / "persons.jsonl", token)
    with serve(app) as url:
        yield url, token


# -- receiving endpoint: a department taking exchange files from the hub ------------------------------

RECEIVE_PATH = "/api/v1/exchange/files"
_SAFE_FILE = re.compile(r"[A-Za-z0-9\u4e00-\u9fff][A-Za-z0-9_.\-\u4e00-\u9fff]{0,200}")
MAX_CHUNK_BYTES = 8 * 2**20


def create_receiver_app(inbox: Path, token: str) -> Starlette:
    """A department's receiving endpoint: chunks, then a commit that publishes the file and answers a receipt.

        POST /api/v1/exchange/files/{name}/chunks/{index}   body: the bytes; Idempotency-Key required
        POST /api/v1/exchange/files/{name}/commit  {"manifest": b64, "marker": text, "chunks": [keys]}
        -> {"receipt_id", "file", "sha256", "rows", "received_at", "duplicate"}

    Idempotency: a key seen before with the same body gets the first answer again; with another body,
    422. A file is published into `inbox` as the hub does (data, manifest, then marker, each by
    rename) exactly once: committing it again answers the same receipt marked duplicate, and other
    bytes under a published name are refused (409), since a correction comes as a new version.
    Everything lives on disk, so a restarted simulator keeps its promises. `app.state.published`
    counts publications per file, for tests.
    """
    if not token:
        raise ValueError("the receiving endpoint needs a non-empty token")
    inbox = Path(inbox)
    work = inbox / ".receiver"
    for folder in (inbox, work / "chunks", work / "keys", work / "receipts"):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    expected = f"Bearer {token}".encode()
    published: dict[str, int] = {}

    def digest(text: str | bytes) -> str:
        return hashlib.sha256(text.encode("utf-8") if isinstance(text, str) else text).hexdigest()

    def put(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def replay(key: str, body_hash: str) -> Response | None:
        """The stored answer for a key seen before, a 422 if its body differs, or None for a new key."""
        seen = work / "keys" / digest(key)
        if not seen.exists():
            return None
        record = json.loads(seen.read_text(encoding="utf-8"))
        if record["body"] != body_hash:
            return _error(422, "idempotency_conflict", "this Idempotency-Key was used with another body")
        return JSONResponse(record["answer"], status_code=record["status"])

    def remember(key: str, body_hash: str, status: int, answer: dict[str, object]) -> JSONResponse:
        record = {"body": body_hash, "status": status, "answer": answer}
        put(work / "keys" / digest(key), json.dumps(record, ensure_ascii=False).encode("utf-8"))
        return JSONResponse(answer, status_code=status)

    async def checked(request: Request) -> tuple[str, str, bytes] | Response:
        if not hmac.compare_digest(request.headers.get("authorization", "").encode(), expected):
            return _error(401, "unauthorized", "missing or wrong bearer token")
        name = request.path_params["name"]
        if not _SAFE_FILE.fullmatch(name):
            return _error(400, "bad_name", "file name outside the allowed characters")
        key = request.headers.get("idempotency-key", "")
        if not key or len(key) > 512:
            return _error(
                400, "no_idempotency_key", "an Idempotency-Key header (at most 512 characters) is required"
            )
        body = await request.body()
        return name, key, body

    async def chunk(request: Request) -> Response:
        got = await checked(request)
        if isinstance(got, Response):
            return got
        name, key, body = got
        if len(body) > MAX_CHUNK_BYTES:
            return _error(413, "chunk_too_large", f"a chunk holds at most {MAX_CHUNK_BYTES} bytes")
        body_hash = digest(body)
        answer = replay(key, body_hash)
        if answer is not None:
            return answer
        put(work / "chunks" / digest(key), body)
        return remember(
            key, body_hash, 200, {"file": name, "chunk": request.path_params["index"], "sha256": body_hash}
        )

    async def commit(request: Request) -> Response:
        got = await checked(request)
        if isinstance(got, Response):
            return got
        name, key, body = got
        body_hash = digest(body)
        answer = replay(key, body_hash)
        if answer is not None:
            return answer
        try:
            request_body = json.loads(body)
            manifest_bytes = base64.b64decode(request_body["manifest"], validate=True)
            manifest = json.loads(manifest_bytes)
            marker = str(request_body["marker"]).encode("ascii")
            keys = [str(k) for k in request_body["chunks"]]
        except (ValueError, KeyError, TypeError):
            return _error(400, "bad_body", 'expected {"manifest": base64, "marker": text, "chunks": [keys]}')
        final = inbox / name
        receipt_file = work / "receipts" / f"{name}.json"
        if (inbox / f"{name}.ok").exists():  # published before: the same unit is a duplicate, never a copy
            if (inbox / f"{name}.ok").read_bytes() != marker:
                return remember(
                    key,
                    body_hash,
                    409,
                    {"error": "published", "message": f"{name} already published with other content"},
                )
            receipt = {**json.loads(receipt_file.read_text(encoding="utf-8")), "duplicate": True}
            return remember(key, body_hash, 200, receipt)
        parts = [work / "chunks" / digest(k) for k in keys]
        if not all(p.exists() for p in parts):
            return _error(409, "missing_chunks", "some chunks were never received")
        data = b"".join(p.read_bytes() for p in parts)
        if digest(data) != manifest.get("sha256") or manifest.get("file") != name:
            return _error(422, "checksum", "the chunks do not add up to the manifest's file and SHA-256")
        staging = inbox / ".incoming"
        staging.mkdir(mode=0o700, exist_ok=True)
        for target, content in (
            (final, data),
            (inbox / f"{name}.manifest.json", manifest_bytes),
            (inbox / f"{name}.ok", marker),
        ):
            tmp = staging / f"{target.name}.part"
            tmp.write_bytes(content)
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
        receipt = {
            "receipt_id": digest(f"{name}\n{manifest['sha256']}")[:20],
            "file": name,
            "sha256": manifest["sha256"],
            "rows": manifest.get("rows"),
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "duplicate": False,
        }
        put(receipt_file, json.dumps(receipt, ensure_ascii=False).encode("utf-8"))
        published[name] = published.get(name, 0) + 1
        for p in parts:
            p.unlink(missing_ok=True)
        return remember(key, body_hash, 200, receipt)

    app = Starlette(
        routes=[
            Route(RECEIVE_PATH + "/{name}/chunks/{index:int}", chunk, methods=["POST"]),
            Route(RECEIVE_PATH + "/{name}/commit", commit, methods=["POST"]),
        ]
    )
    app.state.published = published
    return app


if __name__ == "__main__":  # the simulator as a service (docker-compose.yml): python -m sandbox.simulator
    import uvicorn

    _sandbox = Path(os.environ.get("LIANBAN_VAR", "var")) / "sandbox"
    uvicorn.run(
        create_app(_sandbox / "police" / "persons.jsonl", read_token(_sandbox / "secrets.env")),
        host=os.environ.get("LIANBAN_SIMULATOR_HOST", "127.0.0.1"),  # the compose file sets 0.0.0.0
        port=int(os.environ.get("LIANBAN_SIMULATOR_PORT", "8000")),
    )
