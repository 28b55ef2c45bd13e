"""Where every stage reads and writes: paths under var/ and the run ledger.

Stages never guess another stage's paths; they ask here. The ledger (SQLite under
var/state) records batches, their verdicts, watermarks and runs, so a task can be
retried and the cycle always finds the last accepted batch of each source.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core.settings import GX_DIR, ROOT, Settings

_meta = sa.MetaData()

batches = sa.Table(
    "batches",
    _meta,
    sa.Column("batch_id", sa.String, primary_key=True),
    sa.Column("source", sa.String, nullable=False, index=True),
    sa.Column("window", sa.String, nullable=False),
    sa.Column("status", sa.String, nullable=False),  # landed | accepted | held
    sa.Column("rows", sa.Integer),
    sa.Column("accepted_rows", sa.Integer),
    sa.Column("quarantined_rows", sa.Integer),
    sa.Column("landed_at", sa.String),
    sa.Column("verdict_at", sa.String),
    sa.Column("note", sa.String),
)

# Operator decisions on held batches (`hub batch release`): who accepted which batch, when, why it was
# held and how many rows went each way. Staging reads the latest one, so a re-run honours it.
decisions = sa.Table(
    "decisions",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("batch_id", sa.String, nullable=False, index=True),
    sa.Column("source", sa.String, nullable=False),
    sa.Column("decision", sa.String, nullable=False),  # release | partial
    sa.Column("decided_by", sa.String, nullable=False),
    sa.Column("decided_at", sa.String, nullable=False),
    sa.Column("held_note", sa.String),  # why the batch was held
    sa.Column("accepted_rows", sa.Integer),
    sa.Column("quarantined_rows", sa.Integer),
)

watermarks = sa.Table(
    "watermarks",
    _meta,
    sa.Column("source", sa.String, primary_key=True),
    sa.Column("value", sa.String, nullable=False),
    sa.Column("batch_id", sa.String, nullable=False),
    sa.Column("updated_at", sa.String, nullable=False),
)


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Storage:
    """Paths and ledger for one var directory."""

    settings: Settings

    @property
    def var(self) -> Path:
        return self.settings.var_dir

    # -- modes of what holds personal data: explicit, whatever the process umask ---------------------
    @property
    def file_mode(self) -> int:
        return 0o640 if self.settings.file_mode_group else 0o600

    @property
    def dir_mode(self) -> int:
        return 0o750 if self.settings.file_mode_group else 0o700

    def private_dir(self, path: Path) -> Path:
        """`mkdir -p` whose every folder it creates, and `path` itself, gets dir_mode."""
        missing = []
        here = Path(path)
        while not here.exists() and here != here.parent:
            missing.append(here)
            here = here.parent
        for folder in reversed(missing):
            folder.mkdir(mode=self.dir_mode, exist_ok=True)
            os.chmod(folder, self.dir_mode)
        os.chmod(path, self.dir_mode)
        return Path(path)

    def seal(self, folder: Path) -> None:
        """Give a folder of personal data and the files directly in it their private modes."""
        os.chmod(folder, self.dir_mode)
        for entry in folder.iterdir():
            if entry.is_file() and not entry.is_symlink():
                os.chmod(entry, self.file_mode)

    def gx_context(self) -> Path:
        """The runtime Great Expectations context: the committed gx/ copied, plus GX's results of each
        batch (no values: unexpected row positions and counts; transforms/validate.py, runtime_context)."""
        return sync_gx_context(self.private_dir(self.var / "gx"))

    def landing(self, source: str, batch_id: str) -> Path:
        return self.var / "landing" / source / batch_id

    def staged(self, source: str, batch_id: str) -> Path:
        return self.var / "staged" / source / batch_id

    def outbox(self, partner: str, period: str) -> Path:
        return self.var / "outbox" / partner / period

    def report_dir(self, run_id: str) -> Path:
        return self.var / "reports" / run_id

    def run_dir(self, run_id: str) -> Path:
        """Per-run working files (decisions, conflicts) that later cycle tasks read."""
        return self.var / "runs" / run_id

    def master_snapshot(self, store_url: str) -> Path:
        """The current master of one store as an Arrow IPC file, written by each merge for the stages that read it
        whole (one file per store: stores sharing a var directory never overwrite each other's)."""
        where = sa.make_url(store_url).render_as_string(hide_password=True)
        return self.var / "master" / f"current-{hashlib.sha256(where.encode()).hexdigest()[:16]}.arrow"

    @property
    def sandbox(self) -> Path:
        return self.var / "sandbox"

    def state_db(self, name: str) -> sa.Engine:
        """An SQLite database under var/state, created owner-only (its folder too) whatever the umask."""
        path = self.var / "state" / name
        if not path.exists():  # ledgers name batches, files and people's rejected rows: private
            self.private_dir(path.parent)
            path.touch(mode=self.file_mode)
        return sa.create_engine(f"sqlite:///{path}")

    def engine(self) -> sa.Engine:
        engine = self.state_db("ledger.sqlite")
        create_tables(_meta, engine)
        return engine

    # -- batches -------------------------------------------------------------------
    def record_batch(self, batch_id: str, source: str, window: str, rows: int) -> None:
        """Register a landed batch; re-landing the same id keeps the existing record."""
        with self.engine().begin() as conn:
            exists = conn.execute(sa.select(batches.c.batch_id).where(batches.c.batch_id == batch_id)).first()
            if exists is None:
                conn.execute(
                    batches.insert().values(
                        batch_id=batch_id,
                        source=source,
                        window=window,
                        status="landed",
                        rows=rows,
                        landed_at=utcnow(),
                    )
                )

    def set_verdict(
        self, batch_id: str, status: str, accepted: int, quarantined: int, note: str = ""
    ) -> None:
        with self.engine().begin() as conn:
            conn.execute(
                batches.update()
                .where(batches.c.batch_id == batch_id)
                .values(
                    status=status,
                    accepted_rows=accepted,
                    quarantined_rows=quarantined,
                    verdict_at=utcnow(),
                    note=note,
                )
            )

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        with self.engine().connect() as conn:
            row = conn.execute(sa.select(batches).where(batches.c.batch_id == batch_id)).mappings().first()
        return dict(row) if row else None

    def last_accepted(self, source: str, exclude: str | None = None) -> dict[str, Any] | None:
        """The newest accepted batch of a source (other than `exclude`): what the master rests on."""
        with self.engine().connect() as conn:
            row = (
                conn.execute(
                    sa.select(batches)
                    .where(
                        batches.c.source == source,
                        batches.c.status == "accepted",
                        batches.c.batch_id != (exclude or ""),
                    )
                    .order_by(batches.c.verdict_at.desc(), batches.c.landed_at.desc())
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def resolve_batch(self, ref: str) -> str:
        """A batch id from the id itself or a unique prefix of it (what an operator copies from a listing)."""
        with self.engine().connect() as conn:
            found = [
                str(b)
                for b in conn.execute(
                    sa.select(batches.c.batch_id)
                    .where(
                        sa.or_(batches.c.batch_id == ref, batches.c.batch_id.startswith(ref, autoescape=True))
                    )
                    .order_by(batches.c.batch_id)
                ).scalars()
            ]
        if ref in found:
            return ref
        if not found:
            raise KeyError(f"no batch {ref} in the ledger")
        if len(found) > 1:
            raise ValueError(
                f"{ref!r} is the prefix of {len(found)} batches ({', '.join(found[:5])}); give more of it"
            )
        return found[0]

    def unreadable_reason(self, source: str, batch_id: str) -> str | None:
        """Why staging could not read the batch at all (its validation.json error), or None when it was read."""
        staged = self.staged(source, batch_id)
        if (staged / "accepted.parquet").exists():
            return None
        summary = staged / "validation.json"
        doc = json.loads(summary.read_text(encoding="utf-8")) if summary.exists() else {}
        return str(doc.get("error") or "not staged")

    def release(self, batch_id: str, who: str) -> dict[str, Any]:
        """Accept a held batch by an explicit operator decision, recorded with who, when and why it was held.

        A batch held because it cannot be read is refused: the merge would have no rows to read
        (hub.release offers accepting its readable rows in part instead).
        """
        held = self.batch(batch_id)
        if held is None:
            raise KeyError(f"no batch {batch_id} in the ledger")
        if held["status"] != "held":
            raise ValueError(f"batch {batch_id} is {held['status']}, not held")
        unreadable = self.unreadable_reason(held["source"], batch_id)
        if unreadable is not None:
            raise ValueError(
                f"batch {batch_id} cannot be released: it was held because it cannot be read ({unreadable}: "
                f"{held['note']}), so there are no rows to merge"
            )
        decision = self.record_decision(held, "release", who)
        self.set_verdict(
            batch_id,
            "accepted",
            held["accepted_rows"] or 0,
            held["quarantined_rows"] or 0,
            decision_note(decision),
        )
        return {**held, "status": "accepted", "note": decision_note(decision)}

    def record_decision(
        self,
        held: dict[str, Any],
        kind: str,
        who: str,
        accepted: int | None = None,
        quarantined: int | None = None,
    ) -> dict[str, Any]:
        values = {
            "batch_id": held["batch_id"],
            "source": held["source"],
            "decision": kind,
            "decided_by": who,
            "decided_at": utcnow(),
            "held_note": held["note"] or "",
            "accepted_rows": held["accepted_rows"] if accepted is None else accepted,
            "quarantined_rows": held["quarantined_rows"] if quarantined is None else quarantined,
        }
        with self.engine().begin() as conn:
            conn.execute(decisions.insert().values(**values))
        return values

    def decision(self, batch_id: str) -> dict[str, Any] | None:
        """The latest operator decision on a batch, if any."""
        with self.engine().connect() as conn:
            row = (
                conn.execute(
                    sa.select(decisions)
                    .where(decisions.c.batch_id == batch_id)
                    .order_by(decisions.c.id.desc())
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def withdraw_decision(self, decision_id: int) -> None:
        """Drop a decision that could not be carried out (the batch stays held, as if never decided)."""
        with self.engine().begin() as conn:
            conn.execute(decisions.delete().where(decisions.c.id == decision_id))

    def count_decision(self, batch_id: str, accepted: int, quarantined: int) -> None:
        """Record the rows a partial acceptance took each way, once staging has split them."""
        latest = self.decision(batch_id)
        if latest is None:
            return
        with self.engine().begin() as conn:
            conn.execute(
                decisions.update()
                .where(decisions.c.id == latest["id"])
                .values(accepted_rows=accepted, quarantined_rows=quarantined)
            )

    # -- watermarks ----------------------------------------------------------------
    def watermark(self, source: str) -> str | None:
        return self.watermark_record(source)[0]

    def watermark_record(self, source: str) -> tuple[str | None, str | None]:
        """The bookmark of a source and the batch that set it."""
        with self.engine().connect() as conn:
            row = conn.execute(
                sa.select(watermarks.c.value, watermarks.c.batch_id).where(watermarks.c.source == source)
            ).first()
        return (row[0], row[1]) if row else (None, None)

    def commit_watermark(self, source: str, value: str, batch_id: str) -> None:
        """Called only after the batch has landed whole (Singer's bookmark rule)."""
        with self.engine().begin() as conn:
            conn.execute(watermarks.delete().where(watermarks.c.source == source))
            conn.execute(
                watermarks.insert().values(source=source, value=value, batch_id=batch_id, updated_at=utcnow())
            )


# Everything under var/ may hold personal data: readable by its owner only (docs/domain.md,
# Personal information).
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temps(path: Path) -> None:
    """Remove the temporary files of `path` whose writer process no longer runs (killed mid-write)."""
    import glob

    for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not process_running(int(pid)):
            stale.unlink(missing_ok=True)


def process_running(pid: int) -> bool:
    """Whether a process `pid` exists (signal 0 checks without sending; EPERM means another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def publishing(path: Path) -> Iterator[Path]:
    """Yield a temporary name beside `path`; when the block succeeds, make it durable and rename it into place.

    The one way the hub publishes a file: a reader sees the old file or the whole new one, never half;
    a failure removes its `.<name>.tmp-<pid>` file, and one a killed writer left (its process is gone)
    is removed by the next publication of the same file, so no stray copy of personal data stays.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    _remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, PRIVATE_FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def publish_bytes(path: Path, payload: bytes) -> None:
    with publishing(path) as tmp:
        tmp.write_bytes(payload)


# what a runtime GX context copies from the committed one (the rest of it is GX's own, written by runs)
COMMITTED_GX_FILES = ("great_expectations.yml", "expectations/*.json", "validation_definitions/*.json")


def sync_gx_context(runtime: Path, committed: Path = ROOT / GX_DIR) -> Path:
    """Copy the committed GX file context into `runtime`: only the files that differ, each published
    atomically, so concurrent runs agree and runs never write into the checkout."""
    for pattern in COMMITTED_GX_FILES:
        for source in sorted(committed.glob(pattern)):
            data, target = source.read_bytes(), runtime / source.relative_to(committed)
            if not target.is_file() or target.read_bytes() != data:
                publish_bytes(target, data)
    return runtime


def decision_note(decision: dict[str, Any]) -> str:
    """The ledger note of a batch accepted by an operator; the same text on every re-staging."""
    verb = "accepted in part" if decision["decision"] == "partial" else "released"
    return (
        f"{verb} by {decision['decided_by']} at {decision['decided_at']} (was held: {decision['held_note']})"
    )


def create_tables(metadata: sa.MetaData, engine: sa.Engine) -> None:
    """metadata.create_all, safe when tasks on several workers open a new state database at once: every
    CREATE says IF NOT EXISTS, so a table or index another process has just made is taken as made."""
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
            for index in table.indexes:
                conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))


def write_json_atomic(path: Path, payload: Any) -> None:
    """JSON published atomically (see `publishing`)."""
    publish_bytes(path, json.dumps(payload, ensure_ascii=False, indent=2, default=str).encode("utf-8"))


def write_parquet_atomic(frame: Any, path: Path) -> None:
    """A pandas frame as Parquet, published atomically (see `publishing`)."""
    with publishing(path) as tmp:
        frame.to_parquet(tmp, index=False)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file read in 1 MiB blocks (manifests, landing checks, delivery)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
