"""The deliver step: every published exchange and reject file to its partner, once, with a ledger.

Runs after exchange (`deliver_stage`), or by hand (`hub deliver`, `hub redeliver`). What is published
is what has a marker under outbox/; where it goes is the contract's `delivery` (reject files go
where the department's first contract goes). The ledger (var/state/deliveries.sqlite) holds a row per
attempt: partner, file, SHA-256, transport, outcome and receipt. A file is
- pending: attempted (started or sent) but not acknowledged yet;
- acked: the partner's receipt is in (REST answers with it; SFTP and folder partners write
  `<file>.ack`), after which the next delta for that contract is computed against that file;
- failed: the last attempt failed, or no receipt came within the deadline after the re-sends (补传).
A file already acknowledged is never sent again, and a re-send of a pending file cannot make a second
copy: the transports skip a unit whose marker is already on the partner's side (connectors/push.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from connectors.push import FolderPush, Pusher, PushError, RestPush, SftpPush, Unit
from core.publish import MANIFEST, MARKER, acknowledge
from core.results import DeliverResult
from core.settings import Settings, load_settings
from core.storage import Storage, create_tables, utcnow

log = logging.getLogger(__name__)

STATUSES = ("pending", "failed", "acked")
DEFAULT_DEADLINE_HOURS = 24.0
DEFAULT_RESENDS = 1

_meta = sa.MetaData()
attempts = sa.Table(
    "delivery_attempts",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("partner", sa.String, nullable=False, index=True),
    sa.Column("contract", sa.String, nullable=False),
    sa.Column("file", sa.String, nullable=False, index=True),
    sa.Column("sha256", sa.String, nullable=False),
    sa.Column("transport", sa.String, nullable=False),
    sa.Column("destination", sa.String, nullable=False),
    sa.Column("started_at", sa.String, nullable=False),
    sa.Column("finished_at", sa.String),
    sa.Column("outcome", sa.String, nullable=False),  # started | sent | acked | failed
    sa.Column("receipt", sa.Text),
    sa.Column("error", sa.Text),
)


class DeliveryError(RuntimeError):
    """Some files could not be delivered or got no receipt in time; the message lists them."""


@dataclass(frozen=True)
class Route:
    """Where a contract's files go (the contract's `delivery`), with its receipt deadline."""

    contract: str
    partner: str
    config: dict[str, Any]

    @property
    def deadline(self) -> timedelta:
        return timedelta(hours=float(self.config.get("receipt_deadline_hours", DEFAULT_DEADLINE_HOURS)))

    @property
    def resends(self) -> int:
        return int(self.config.get("resends", DEFAULT_RESENDS))


def engine(storage: Storage) -> sa.Engine:
    made = storage.state_db("deliveries.sqlite")
    create_tables(_meta, made)
    return made


def load_routes(directory: Path) -> dict[str, Route]:
    """contract -> Route, read from the contracts' `delivery` blocks (full checks happen in exchange)."""
    routes = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(raw, dict) and "contract" in raw and isinstance(raw.get("delivery"), dict):
            routes[str(raw["contract"])] = Route(
                str(raw["contract"]), str(raw["partner"]), dict(raw["delivery"])
            )
    return routes


def route_for(routes: dict[str, Route], manifest: dict[str, Any]) -> Route | None:
    """The contract's route; reject files take the route of the department's first contract."""
    if manifest.get("contract") in routes:
        return routes[str(manifest["contract"])]
    partner = manifest.get("partner")
    for route in routes.values():
        if route.partner == partner:
            return Route(str(manifest.get("contract")), route.partner, route.config)
    return None


def published_units(storage: Storage) -> Iterator[tuple[Unit, dict[str, Any]]]:
    """Every published unit under outbox/ (a marker, its data file and manifest), in path order."""
    outbox = storage.var / "outbox"
    for marker in sorted([*outbox.glob(f"*/*/*{MARKER}")]):
        data = marker.with_name(marker.name.removesuffix(MARKER))
        manifest = json.loads(data.with_name(data.name + MANIFEST).read_text(encoding="utf-8"))
        yield (
            Unit(str(manifest["partner"]), str(manifest["contract"]), str(manifest["run_id"]), data,
                 str(manifest["sha256"])),
            manifest,
        )  # fmt: skip


def pusher(settings: Settings, route: Route) -> Pusher:
    """The transport for a route; connection values and secrets come from the environment."""
    config = route.config
    transport = config["transport"]
    if transport == "folder":
        return FolderPush(Path(settings.expand(str(config["path"]))))
    if transport == "sftp":
        client = SftpPush.from_env(
            str(config["env_prefix"]),
            source=route.partner,
            folder=settings.expand(str(config["folder"])),
            attempts=int(config.get("attempts", 5)),
            retry_wait_s=float(config.get("retry_wait_s", 1.0)),
        )
        if not isinstance(client, SftpPush):  # from_env is a classmethod of SftpPush's base
            raise TypeError(f"route {route.partner}: the SFTP client is a {type(client).__name__}")
        return client
    if transport == "rest":
        base = os.environ.get(str(config["base_url_env"]))
        token = os.environ.get(str(config["token_env"]))
        if not base or not token:
            raise PushError(f"{route.contract}: set {config['base_url_env']} and {config['token_env']}")
        return RestPush(
            base,
            token,
            endpoint=str(config.get("endpoint", "/api/v1/exchange/files")),
            chunk_bytes=int(config.get("chunk_bytes", 256 * 1024)),
            attempts=int(config.get("attempts", 5)),
            retry_wait_s=float(config.get("retry_wait_s", 0.5)),
        )
    raise PushError(f"{route.contract}: unknown transport {transport!r}")


class _Ledger:
    def __init__(self, storage: Storage) -> None:
        self.engine = engine(storage)

    def latest(self, partner: str, file: str, sha256: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(attempts)
                .where(attempts.c.partner == partner, attempts.c.file == file, attempts.c.sha256 == sha256)
                .order_by(attempts.c.id.desc())
            ).first()
        return dict(row._mapping) if row else None

    def count(self, partner: str, file: str, sha256: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(attempts)
                    .where(
                        attempts.c.partner == partner, attempts.c.file == file, attempts.c.sha256 == sha256
                    )
                ).scalar_one()
            )

    def start(self, unit: Unit, push: Pusher) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                attempts.insert().values(
                    partner=unit.partner,
                    contract=unit.contract,
                    file=unit.name,
                    sha256=unit.sha256,
                    transport=push.transport,
                    destination=push.destination,
                    started_at=utcnow(),
                    outcome="started",
                )  # fmt: skip
            )
            primary = result.inserted_primary_key
            if primary is None:
                raise RuntimeError("delivery ledger: the database returned no key for the new attempt")
            return int(primary[0])

    def finish(
        self, attempt: int, outcome: str, receipt: dict[str, Any] | None = None, error: str = ""
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                attempts.update()
                .where(attempts.c.id == attempt)
                .values(
                    outcome=outcome,
                    finished_at=utcnow(),
                    receipt=json.dumps(receipt, ensure_ascii=False) if receipt else None,
                    error=error or None,
                )
            )


@contextmanager
def _pushers() -> Iterator[dict[str, Pusher]]:
    """Connections opened on demand, one per route, all closed at the end."""
    opened: dict[str, Pusher] = {}
    try:
        yield opened
    finally:
        for push in opened.values():
            push.close()


def deliver(
    settings: Settings,
    contracts_dir: Path | None = None,
    *,
    partner: str | None = None,
    files: list[str] | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Send what is unsent, collect receipts, re-send (补传) what is overdue; raise on failures.

    `force` re-sends pending and failed files at once (`hub redeliver`), ignoring the deadline.
    """
    storage = Storage(settings)
    routes = load_routes(contracts_dir or settings.path("schemas/exchange"))
    ledger = _Ledger(storage)
    now = now or datetime.now(UTC)
    counts = {"sent": 0, "acked": 0, "already": 0, "resent": 0, "failed": 0}
    problems: list[str] = []
    with _pushers() as opened:
        for unit, manifest in published_units(storage):
            if (partner and unit.partner != partner) or (files and unit.name not in files):
                continue
            route = route_for(routes, manifest)
            if route is None:
                log.warning("%s: no delivery route for partner %s; not sent", unit.name, unit.partner)
                continue
            last = ledger.latest(unit.partner, unit.name, unit.sha256)
            if last and last["outcome"] == "acked":
                counts["already"] += 1
                continue
            key = json.dumps(route.config, sort_keys=True)
            try:
                push = opened.get(key) or opened.setdefault(key, pusher(settings, route))
            except Exception as exc:
                problems.append(f"{unit.partner}/{unit.name}: {exc}")
                counts["failed"] += 1
                continue
            if last and last["outcome"] == "sent":
                receipt = push.receipt(unit)
                if receipt is not None:
                    ledger.finish(int(last["id"]), "acked", receipt)
                    _acknowledged(storage, unit, manifest)
                    counts["acked"] += 1
                    continue
                sent_at = datetime.fromisoformat(str(last["finished_at"]))
                if not force and now - sent_at < route.deadline:
                    continue
                if ledger.count(unit.partner, unit.name, unit.sha256) > route.resends and not force:
                    ledger.finish(int(last["id"]), "failed", None, f"no receipt within {route.deadline}")
                    problems.append(
                        f"{unit.partner}/{unit.name}: no receipt within {route.deadline} after re-sends"
                    )
                    counts["failed"] += 1
                    continue
                counts["resent"] += 1
                log.warning(
                    "%s/%s: no receipt within %s; re-sending (补传)", unit.partner, unit.name, route.deadline
                )
            elif (
                last
                and last["outcome"] == "failed"
                and not force
                and last["error"]
                and "no receipt" in last["error"]
            ):
                continue  # raised once already; `hub redeliver` sends it again
            attempt = ledger.start(unit, push)
            try:
                receipt = push.deliver(unit)
            except Exception as exc:
                ledger.finish(attempt, "failed", None, f"{type(exc).__name__}: {exc}")
                problems.append(f"{unit.partner}/{unit.name}: {exc}")
                counts["failed"] += 1
                continue
            if receipt is not None:
                ledger.finish(attempt, "acked", receipt)
                _acknowledged(storage, unit, manifest)
                counts["acked"] += 1
            else:
                ledger.finish(attempt, "sent")
                late = push.receipt(unit)  # a partner that answers at once (or one acked earlier)
                if late is not None:
                    ledger.finish(attempt, "acked", late)
                    _acknowledged(storage, unit, manifest)
                    counts["acked"] += 1
            counts["sent"] += 1
    if problems:
        raise DeliveryError("delivery failed for:\n  " + "\n  ".join(problems))
    return counts


def _acknowledged(storage: Storage, unit: Unit, manifest: dict[str, Any]) -> None:
    """A receipt is in: the next delta for the contract starts from this file (a duplicate changes nothing)."""
    if manifest.get("kind") in ("delta", "snapshot"):
        acknowledge(storage, unit.contract, unit.name)
    log.info("receipt %s/%s", unit.partner, unit.name)


def deliveries(
    storage: Storage, partner: str | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    """One row per file (its latest attempt), with its status and the number of attempts."""
    with engine(storage).connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(attempts).order_by(attempts.c.id))]
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["partner"], row["file"], row["sha256"])
        tries = latest.get(key, {}).get("attempts", 0) + 1
        acked = latest.get(key, {}).get("status") == "acked"
        latest[key] = {**row, "attempts": tries, "status": "acked" if acked else _status(row["outcome"])}
    out = [r for r in latest.values() if (partner is None or r["partner"] == partner)]
    return [r for r in out if status is None or r["status"] == status]


def _status(outcome: str) -> str:
    return {"acked": "acked", "failed": "failed"}.get(outcome, "pending")


def deliver_stage(settings: Settings, as_of: date, run_id: str) -> DeliverResult:
    """The cycle's deliver step, after exchange: counts by outcome, kept beside the run; a failure is kept
    too (the report runs after a failed delivery) and raises DeliveryError."""
    storage = Storage(settings)
    try:
        counts = deliver(settings)
    except DeliveryError as exc:
        DeliverResult(run_id=run_id, failed=True, error=str(exc)).save(storage, run_id)
        raise
    log.info("deliver %s (%s): %s", run_id, as_of, counts)
    return DeliverResult(run_id=run_id, rows=counts["sent"], **counts).save(storage, run_id)


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.deliver`: the deliver step on its own, light enough to start in a fraction of a second."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--contracts", type=Path, default=None, help="contracts folder (default schemas/exchange)"
    )
    parser.add_argument("--partner", default=None)
    parser.add_argument("--force", action="store_true", help="re-send pending and failed files now")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="-v: each file; -vv: each upload and rename too"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        counts = deliver(load_settings(), args.contracts, partner=args.partner, force=args.force)
    except DeliveryError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    sys.stdout.write(json.dumps(counts) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
