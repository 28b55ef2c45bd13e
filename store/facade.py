"""The master file store (一人一档): current persons, every version, ID changes, conflicts, decisions, runs.

The facade the stages call. SQLAlchemy 2 Core over one backend per database (store/backends): the
embedded default (a SQLite file under var/) and production PostgreSQL; every rule of the master file
lives here, the backends only move many rows. The schema belongs to Alembic (store/migrations):
`MasterStore(url)` upgrades the database to head on open, and the tables it writes are built from
schemas/master.yaml (store/schema.py; a test compares them with the migrated database).

A merge (`apply_merge`) is ONE transaction: a process killed at any point leaves the previous master
intact, and running the merge again writes what a clean run writes. Only persons whose record_hash
changed (or who are new or gone) are written: their open version is closed (valid_to = the run's
as_of) and a new version is inserted. `person`, the current master, is a view of the open versions
(migration 0002), never a second copy. "The file as of date D" is then a query over person_version.
Large sets of keys travel in a temporary table, never in a giant IN list.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from core.storage import publishing
from store.backends import Backend, BulkSession, backend_for
from store.convert import PANDAS_TYPES, typed
from store.frames import (
    all_batches,
    caused_by,
    conflict_frame,
    differs,
    id_change_frame,
    isin,
    join_batches,
    master_frame,
)
from store.schema import (
    CONFLICT_FIELDS,
    CONFLICT_KEY,
    CONFLICT_STATE,
    ID_CHANGE_FIELDS,
    MASTER_COLUMNS,
    SOURCE_ORDER,
    conflict,
    decision_version,
    id_change,
    person,
    person_version,
    run,
)
from transforms.decisions import DecisionDiff

log = logging.getLogger(__name__)


class MergeLike(Protocol):
    """What apply_merge reads from transforms.merge.MergeResult (id_changes may be absent)."""

    master: pd.DataFrame
    conflicts: pd.DataFrame


def _written_at() -> str:
    """Audit timestamp of a write (when it happened, not what the run stands for)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


# -- the open decisions as a file --------------------------------------------------------------------------

OPEN_DECISIONS_KEY = b"lianban.open_decisions"
OPEN_DECISION_COLUMNS = ["id_number", "service", "eligible", "amount", "reasons"]


def _write_open_decisions(path: Path, decisions: pd.DataFrame, tag: dict[str, str]) -> None:
    """The open decisions after a run (its decisions), tagged with the store, the run and its write time."""
    table = pa.Table.from_pandas(decisions[OPEN_DECISION_COLUMNS], preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), OPEN_DECISIONS_KEY: json.dumps(tag)}
    )
    with publishing(path) as tmp:
        pq.write_table(table, tmp)


def _read_open_decisions(path: Path, url: str) -> tuple[pd.DataFrame, dict[str, str]] | None:
    """The file's decisions and tag when it was written for the store at `url`, else None."""
    try:
        schema = pq.read_schema(path)
    except (FileNotFoundError, OSError, pa.ArrowInvalid):
        return None
    tag = json.loads((schema.metadata or {}).get(OPEN_DECISIONS_KEY, b"{}"))
    if tag.get("url") != url or not {"run_id", "at"} <= tag.keys():
        return None
    frame = pq.read_table(path).to_pandas(types_mapper=PANDAS_TYPES.get)
    return frame.astype({"eligible": bool, "amount": "float64"}), tag


def _key_text(frame: pd.DataFrame) -> pd.Series:
    """(id_number, service) as one text per row, for membership tests through Arrow (store.frames.isin)."""
    return frame["id_number"].astype("string") + "\x1f" + frame["service"].astype("string")


# -- the store --------------------------------------------------------------------------------------------


class MasterStore:
    """The master file with its history, ID changes, conflicts queue, decisions and run records."""

    def __init__(self, url: str, chunk_rows: int = 50_000) -> None:
        from store.migrations import upgrade

        self.url = url
        self.chunk_rows = chunk_rows
        self.backend: Backend = backend_for(url)
        self.engine = self.backend.engine()
        # Which bulk path wrote how much (tests assert the PostgreSQL path really is COPY).
        self.stats: Counter[str] = Counter()
        upgrade(self.engine)

    def _bulk(self, conn: sa.Connection) -> BulkSession:
        return self.backend.session(conn, self.chunk_rows, self.stats)

    def _touch_run(
        self, conn: sa.Connection, run_id: str, values: dict[str, Any], added: dict[str, int] | None = None
    ) -> None:
        """Create or update a run record; `added` counts accumulate over retries of the same run."""
        more = {k: sa.func.coalesce(run.c[k], 0) + n for k, n in (added or {}).items()}
        updated = conn.execute(run.update().where(run.c.run_id == run_id).values(**values, **more))
        if updated.rowcount == 0:
            conn.execute(run.insert().values(run_id=run_id, **values, **(added or {})))

    # -- merge --------------------------------------------------------------------------------------------

    def apply_merge(
        self,
        result: MergeLike,
        run_id: str,
        as_of: date,
        scope: pd.Series | None = None,
        batches: dict[str, str | None] | None = None,
    ) -> dict[str, int]:
        """Write one merge into the store in ONE transaction; only changed persons are written.

        scope None: result.master is the whole master (current persons absent from it are removed).
        scope = the id_numbers recomputed: result.master holds the persons of scope still present;
        persons in scope absent from it are removed; persons outside scope are untouched.

        Conflicts of the persons in scope: found again -> open, values refreshed, last_run = this
        run (a resolved one is reopened: status open, resolved_run cleared, first_run kept); new ->
        open with first_run = last_run = this run; open but not found -> resolved (resolved_run =
        this run, last_run stays the last run that saw it). Re-running the same merge writes nothing.
        """
        started = time.perf_counter()
        master = master_frame(result.master)
        found = conflict_frame(result.conflicts)
        changes = id_change_frame(getattr(result, "id_changes", None))
        scope_ids = None
        if scope is not None:
            scope_ids = pd.Series(scope, dtype="string").dropna().drop_duplicates().reset_index(drop=True)
            outside = ~isin(master["id_number"], scope_ids)
            if outside.any():
                raise ValueError(
                    f"merge result master holds {int(outside.sum())} persons outside the scope given"
                )
            outside = ~isin(found["id_number"], scope_ids)
            if outside.any():
                raise ValueError(
                    f"merge result conflicts concern {int(outside.sum())} rows outside the scope given"
                )
        before = dict(self.stats)
        with self.engine.begin() as conn:
            bulk = self._bulk(conn)
            self._check_forward(conn, run_id, as_of)
            scope_keys = None if scope_ids is None else bulk.keys("lb_scope", scope_ids.to_frame("id_number"))
            counts = self._write_persons(conn, bulk, master, scope_keys, run_id, as_of, batches or {})
            counts.update(self._write_conflicts(conn, bulk, found, scope_keys, run_id))
            counts["id_changes"] = self._write_id_changes(conn, bulk, changes, run_id)
            persons = int(conn.execute(sa.select(sa.func.count()).select_from(person)).scalar_one())
            written = counts["new"] + counts["changed"] + counts["removed"]
            self.backend.after_bulk_write(conn, [person_version, conflict], written)
            self._touch_run(
                conn,
                run_id,
                {
                    "as_of": as_of,
                    "persons": persons,
                    "conflicts": counts["conflicts_open"],
                    "master_written_at": _written_at(),
                    "mode": "full" if scope_ids is None else "incremental",
                    "scope": len(master) if scope_ids is None else len(scope_ids),
                    "batches": json.dumps(batches or {}, sort_keys=True),
                },
                # a retry after a committed attempt writes nothing more: the run's total stays right
                added={"written": written},
            )
            bulk.drop_temps()
        paths = {k: v - before.get(k, 0) for k, v in self.stats.items() if v != before.get(k, 0)}
        log.info(
            "master store %s: %d new, %d changed, %d removed, %d unchanged; conflicts %d open, %d resolved; "
            "%.2f s (%s)",
            run_id,
            counts["new"],
            counts["changed"],
            counts["removed"],
            counts["unchanged"],
            counts["conflicts_open"],
            counts["conflicts_resolved"],
            time.perf_counter() - started,
            paths or "nothing written",
        )
        return counts

    def _check_forward(self, conn: sa.Connection, run_id: str, as_of: date) -> None:
        """History only moves forward: a merge as of a day before the last merge would corrupt valid_to."""
        last = conn.execute(
            sa.select(sa.func.max(run.c.as_of)).where(run.c.mode.is_not(None), run.c.run_id != run_id)
        ).scalar_one()
        if last is not None and isinstance(last, str):
            last = date.fromisoformat(last)
        if last is not None and as_of < last:
            raise ValueError(
                f"merge {run_id} is as of {as_of}, but the master already holds a merge as of {last}; "
                "history only moves forward (rebuild the store from landing to go back)"
            )

    def _write_persons(
        self,
        conn: sa.Connection,
        bulk: BulkSession,
        master: pd.DataFrame,
        scope_keys: sa.Table | None,
        run_id: str,
        as_of: date,
        batches: dict[str, str | None],
    ) -> dict[str, int]:
        state = sa.select(person.c.id_number, person.c.record_hash, person.c.version)
        if scope_keys is not None:
            state = state.where(bulk.in_keys(person, scope_keys))
        current = self._read(state, person, conn)
        plan = master[["id_number", "record_hash"]].merge(
            current, on="id_number", how="outer", suffixes=("", "_old"), indicator=True
        )
        is_new = (plan["_merge"] == "left_only").to_numpy()
        is_gone = (plan["_merge"] == "right_only").to_numpy()
        both = (plan["_merge"] == "both").to_numpy()
        is_changed = both & differs(plan["record_hash"], plan["record_hash_old"]).to_numpy()
        counts = {
            "new": int(is_new.sum()),
            "changed": int(is_changed.sum()),
            "removed": int(is_gone.sum()),
            "unchanged": int((both & ~is_changed).sum()),
        }
        if not (is_new | is_gone | is_changed).any():
            return counts
        # version numbers: a current person's next; a returning person's after their open tombstone
        versions_now = plan.loc[is_gone | is_changed, ["id_number", "version"]]
        new_ids = plan.loc[is_new, "id_number"].astype("string")
        returning = pd.DataFrame({"id_number": pd.Series([], dtype="string"), "version": []})
        has_history = conn.execute(sa.select(sa.exists().select_from(person_version))).scalar_one()
        if len(new_ids) and has_history:
            fresh = bulk.keys("lb_new", new_ids.to_frame("id_number"))
            pv = person_version
            returning = self._read(
                sa.select(pv.c.id_number, pv.c.version).where(
                    bulk.in_keys(pv, fresh), pv.c.valid_to.is_(None), pv.c.removed == sa.true()
                ),
                pv,
                conn,
            )
        prior = pd.concat([versions_now, returning]).set_index("id_number")["version"]

        existing = prior.index.to_series().astype("string")  # rows to close, delete or compare
        keys = bulk.keys("lb_touched", existing.to_frame("id_number")) if len(existing) else None
        old = typed(pd.DataFrame({c: pd.Series([], dtype=object) for c in MASTER_COLUMNS}), person)
        if keys is not None:
            query = sa.select(*(person.c[c] for c in MASTER_COLUMNS)).where(bulk.in_keys(person, keys))
            old = self._read(query, person, conn)
        old = old.set_index("id_number", drop=False)

        written = master[isin(master["id_number"], plan.loc[is_new | is_changed, "id_number"])]
        written = written.set_index("id_number", drop=False)
        changed_ids = plan.loc[is_changed, "id_number"]
        cause = all_batches(written)
        if len(changed_ids):
            cause.loc[changed_ids] = caused_by(written.loc[changed_ids], old.loc[changed_ids]).to_numpy()
        gone = old.loc[plan.loc[is_gone, "id_number"]]
        knew = {
            s: (gone[f"{s}_batch"].notna(), pd.Series(batches.get(s), index=gone.index, dtype="string"))
            for s in SOURCE_ORDER
        }
        tomb_cause = join_batches(knew, gone.index).fillna(all_batches(gone))

        def versioned(frame: pd.DataFrame, why: pd.Series, removed: bool) -> pd.DataFrame:
            out = frame.reset_index(drop=True)
            number = prior.reindex(frame.index).fillna(0).astype("int64").to_numpy() + 1
            out.insert(1, "version", number)
            out.insert(2, "valid_from", pd.Timestamp(as_of))
            out.insert(3, "valid_to", pd.NaT)
            out.insert(4, "caused_by", why.reindex(frame.index).to_numpy())
            out.insert(5, "run_id", run_id)
            out.insert(6, "removed", removed)
            return out

        parts = [versioned(written, cause, False), versioned(gone, tomb_cause, True)]
        versions = pd.concat([p for p in parts if len(p)], ignore_index=True)
        if keys is not None:
            # close the open version (a returning person's tombstone too); the person view shows the new one
            bulk.update(person_version, keys, person_version.c.valid_to.is_(None), {"valid_to": as_of})
        bulk.insert(person_version, versions)
        return counts

    def _write_conflicts(
        self,
        conn: sa.Connection,
        bulk: BulkSession,
        found: pd.DataFrame,
        scope_keys: sa.Table | None,
        run_id: str,
    ) -> dict[str, int]:
        query = sa.select(*(conflict.c[c] for c in (*CONFLICT_FIELDS, *CONFLICT_STATE)))
        if scope_keys is not None:
            query = query.where(bulk.in_keys(conflict, scope_keys))
        stored = self._read(query, conflict, conn)
        j = found.merge(stored, on=list(CONFLICT_KEY), how="outer", suffixes=("", "_old"), indicator=True)
        seen = (j["_merge"] != "right_only").to_numpy()
        fresh = (j["_merge"] == "left_only").to_numpy()
        was_open = (j["status"] == "open").fillna(False).to_numpy(dtype=bool)
        resolving = ~seen & was_open
        values = [c for c in CONFLICT_FIELDS if c not in CONFLICT_KEY]
        final = j[list(CONFLICT_KEY)].copy()
        for c in values:
            final[c] = j[c].where(seen, j[f"{c}_old"])
        final["status"] = pd.Series(
            np.where(seen, "open", j["status"].fillna("")), index=j.index, dtype="string"
        )
        final.loc[resolving, "status"] = "resolved"
        final["first_run"] = j["first_run"].where(~fresh, run_id).astype("string")
        final["last_run"] = j["last_run"].where(~seen, run_id).astype("string")
        final["resolved_run"] = j["resolved_run"].where(~seen, pd.NA).astype("string")
        final.loc[resolving, "resolved_run"] = run_id
        touched = fresh.copy()
        for c in (*values, *CONFLICT_STATE):
            old = j[f"{c}_old"] if c in values else j[c]
            touched |= differs(final[c], old.astype("string")).to_numpy()
        reopened = seen & ~fresh & (j["status"] == "resolved").fillna(False).to_numpy(dtype=bool)
        rows = final[touched]
        if len(rows):
            keys = bulk.keys("lb_conflict_keys", rows[list(CONFLICT_KEY)])
            bulk.delete(conflict, keys)
            bulk.insert(conflict, rows)
        open_now = conn.execute(
            sa.select(sa.func.count()).select_from(conflict).where(conflict.c.status == "open")
        ).scalar_one()
        return {
            "conflicts_open": int(open_now),
            "conflicts_new": int(fresh.sum()),
            "conflicts_reopened": int(reopened.sum()),
            "conflicts_resolved": int(resolving.sum()),
        }

    def _write_id_changes(
        self, conn: sa.Connection, bulk: BulkSession, changes: pd.DataFrame, run_id: str
    ) -> int:
        if changes.empty:
            return 0
        known = self._read(sa.select(id_change.c.old_id, id_change.c.new_id), id_change, conn)
        j = changes.merge(known, on=["old_id", "new_id"], how="left", indicator=True)
        new = j.loc[j["_merge"] == "left_only", list(ID_CHANGE_FIELDS)].assign(first_run=run_id)
        bulk.insert(id_change, new)
        return len(new)

    # -- decisions ----------------------------------------------------------------------------------------

    def apply_decisions(
        self,
        decisions: pd.DataFrame,
        run_id: str,
        as_of: date,
        policy_hash: str,
        sha256: str,
        causes: Callable[[pd.Series], pd.Series] | None = None,
        open_snapshot: Path | None = None,
    ) -> tuple[DecisionDiff, dict[str, int]]:
        """Write a run's decisions as changes, in ONE transaction; returns the comparison and counts.

        `decisions`: every person x service of the run, in canonical order (transforms.decisions).
        Compared with the open versions: a new or changed decision closes the open version
        (valid_to = as_of, closed_run = this run) and opens the next; a decision no longer made (the
        person left the master, the service left the policy) only closes. Unchanged decisions are not
        touched, so a day with 1% changed decisions writes about 1% of the rows. A retried run first
        undoes what its earlier attempt committed (its versions deleted, the versions it closed
        reopened), then writes what a clean run writes. `causes(ids)`: the batches each person's facts
        came from, asked only for the persons written.

        `open_snapshot`: a Parquet file of the open decisions. After a run the open versions are
        exactly its decisions, so the file is that run's decisions, tagged with the run and its write
        time; the next run reads it instead of every open version from the database (the read that
        would otherwise cost as much as the day's writes) when the tag names the store's last
        decision run.
        """
        from transforms.decisions import diff

        with self.engine.begin() as conn:
            bulk = self._bulk(conn)
            self._check_decisions_forward(conn, run_id, as_of)
            undone = self._undo_decisions(conn, run_id)
            before = self._open_decisions(conn, run_id, open_snapshot)
            changes = diff(decisions, before)
            rows = changes.rows
            opening = rows[rows["state"] != "gone"]
            closing = int((rows["state"] != "new").sum())
            # an empty table (the first run) has nothing to close and every version is the first
            history = conn.execute(sa.select(sa.exists().select_from(decision_version))).scalar_one()
            keys = (
                bulk.keys("lb_decision_keys", rows[["id_number", "service"]])
                if history and len(rows)
                else None
            )
            if len(opening):
                self._insert_decisions(
                    conn, bulk, keys, decisions, opening, run_id, as_of, policy_hash, causes
                )
            if keys is not None:
                bulk.update(
                    decision_version,
                    keys,
                    sa.and_(decision_version.c.valid_to.is_(None), decision_version.c.run_id != run_id),
                    {"valid_to": as_of, "closed_run": run_id},
                )
            counts = {
                "opened": len(opening),
                "closed": closing,
                "unchanged": changes.unchanged,
                "undone": undone,
            }
            written_at = _written_at()
            self._touch_run(
                conn,
                run_id,
                {
                    "as_of": as_of,
                    "decisions": len(decisions),
                    "decisions_written": len(opening),
                    "decisions_sha256": sha256,
                    "decisions_written_at": written_at,
                },
            )
            bulk.drop_temps()
        if open_snapshot is not None:
            _write_open_decisions(
                open_snapshot, decisions, {"url": self.url, "run_id": run_id, "at": written_at}
            )
        log.info(
            "master store %s: decisions %d opened, %d closed, %d unchanged",
            run_id,
            counts["opened"],
            counts["closed"],
            counts["unchanged"],
        )
        return changes, counts

    def _check_decisions_forward(self, conn: sa.Connection, run_id: str, as_of: date) -> None:
        """Decision history only moves forward too; a past date is a backfill, which writes no versions."""
        last = self._last_decision_day(conn, run_id)
        if last is not None and as_of < last:
            raise ValueError(
                f"decisions of {run_id} are as of {as_of}, but the store holds decisions from {last}; "
                "a past date is a backfill (evaluate and compare, write nothing)"
            )

    @staticmethod
    def _last_decision_day(conn: sa.Connection, exclude_run: str | None = None) -> date | None:
        """The latest as_of of a run that wrote decisions (the small run table, not a scan of versions)."""
        query = sa.select(sa.func.max(run.c.as_of)).where(run.c.decisions_written_at.is_not(None))
        if exclude_run is not None:
            query = query.where(run.c.run_id != exclude_run)
        last = conn.execute(query).scalar_one()
        return date.fromisoformat(last) if isinstance(last, str) else last

    def _undo_decisions(self, conn: sa.Connection, run_id: str) -> int:
        """Take back what an earlier attempt of this run committed (nothing on a first attempt)."""
        wrote = conn.execute(
            sa.select(run.c.decisions_written_at).where(run.c.run_id == run_id)
        ).scalar_one_or_none()
        if wrote is None:
            return 0
        dv = decision_version
        deleted = conn.execute(dv.delete().where(dv.c.run_id == run_id)).rowcount
        conn.execute(dv.update().where(dv.c.closed_run == run_id).values(valid_to=None, closed_run=None))
        return int(deleted)

    def _open_decisions(self, conn: sa.Connection, run_id: str, snapshot: Path | None) -> pd.DataFrame:
        """The open versions' keys and values: the snapshot when it mirrors the store; the snapshot of an
        earlier run and the versions the runs after it opened or closed (read by run, not every open
        version); else every open version read."""
        query = sa.select(run.c.run_id, run.c.decisions_written_at).where(
            run.c.decisions_written_at.is_not(None)
        )
        written = {str(r): str(at) for r, at in conn.execute(query).all()}
        found = None if snapshot is None else _read_open_decisions(snapshot, self.url)
        # the file of a run the store knows as written then; not this run's own (its earlier attempt
        # is undone in this transaction)
        if (
            found is not None
            and found[1]["run_id"] != run_id
            and written.get(found[1]["run_id"]) == found[1]["at"]
        ):
            frame, tag = found
            later = [r for r, at in written.items() if at > tag["at"]]
            if not later:
                self.stats["open_decisions_from_snapshot"] += 1
                return frame
            self.stats["open_decisions_from_snapshot_and_runs"] += 1
            return self._open_decisions_after(conn, frame, later)
        dv = decision_version
        cols = self._columns(dv, OPEN_DECISION_COLUMNS)
        query = sa.select(*cols).where(dv.c.valid_to.is_(None)).order_by(dv.c.id_number, dv.c.service)
        return self._read(query, dv, conn)

    def _open_decisions_after(
        self, conn: sa.Connection, before: pd.DataFrame, later: list[str]
    ) -> pd.DataFrame:
        """The open versions `before` some runs, brought forward by what those runs wrote: a key they
        closed leaves, a version they opened (and is still open) comes in."""
        dv = decision_version
        opened = self._read(
            sa.select(*self._columns(dv, OPEN_DECISION_COLUMNS)).where(
                dv.c.run_id.in_(later), dv.c.valid_to.is_(None)
            ),
            dv,
            conn,
        )
        closed = self._read(
            sa.select(dv.c.id_number, dv.c.service).where(dv.c.closed_run.in_(later)), dv, conn
        )
        # a key whose version a later run replaced had it closed by that run too
        kept = before[~isin(_key_text(before), _key_text(closed))]
        merged = pd.concat([kept, opened.astype(kept.dtypes.to_dict())], ignore_index=True)
        return merged.sort_values(["id_number", "service"], kind="stable").reset_index(drop=True)

    def _insert_decisions(
        self,
        conn: sa.Connection,
        bulk: BulkSession,
        keys: sa.Table | None,
        decisions: pd.DataFrame,
        opening: pd.DataFrame,
        run_id: str,
        as_of: date,
        policy_hash: str,
        causes: Callable[[pd.Series], pd.Series] | None,
    ) -> None:
        """Insert the next version of every opened decision, after whatever history its key has
        (`keys`: every key the run touches; None when the table was empty)."""
        dv = decision_version
        rows = opening[["id_number", "service"]].merge(decisions, on=["id_number", "service"], how="left")
        version = np.ones(len(rows), dtype=np.int64)
        if keys is not None:
            last = self._read(
                sa.select(dv.c.id_number, dv.c.service, sa.func.max(dv.c.version).label("version"))
                .where(bulk.in_keys(dv, keys))
                .group_by(dv.c.id_number, dv.c.service),
                dv,
                conn,
            )
            found = rows[["id_number", "service"]].merge(last, on=["id_number", "service"], how="left")
            version = found["version"].fillna(0).astype("int64").to_numpy() + 1
        # columns kept as they are (Arrow-backed text, not object arrays): the bulk paths hand them on
        values = {c: rows[c] for c in ("period", "eligible", "amount", "reasons", "policy", "policy_version")}
        out = rows[["id_number", "service"]].assign(
            version=version, valid_from=pd.Timestamp(as_of), **values, policy_hash=policy_hash
        )
        if causes is not None:
            out["caused_by"] = causes(out["id_number"]).set_axis(out.index)
        out["run_id"] = run_id
        bulk.insert(dv, out)

    def decisions_in_force(self, day: date, services: Iterable[str] | None = None) -> pd.DataFrame:
        """The decisions in force on `day`: the version of each person x service valid then.

        Columns: id_number, service, eligible, amount, reasons, policy, policy_version, policy_hash,
        valid_from, valid_to, caused_by, run_id; ordered by id_number and service.
        """
        dv = decision_version
        wanted = ["id_number", "service", "eligible", "amount", "reasons", "policy", "policy_version"]
        wanted += ["policy_hash", "valid_from", "valid_to", "caused_by", "run_id"]
        query = sa.select(*self._columns(dv, wanted)).where(
            dv.c.valid_from <= day, sa.or_(dv.c.valid_to.is_(None), dv.c.valid_to > day)
        )
        if services is not None:
            query = query.where(dv.c.service.in_(list(services)))
        return self._read(query.order_by(dv.c.id_number, dv.c.service), dv)

    def last_decision_day(self) -> date | None:
        """The latest date decisions were written for: a run before it is a backfill."""
        with self.engine.connect() as conn:
            return self._last_decision_day(conn)

    def read_decision_versions(self, run_id: str | None = None) -> pd.DataFrame:
        """Every decision version (or those one run opened), ordered by key and version."""
        dv = decision_version
        query = sa.select(*dv.c)
        if run_id is not None:
            query = query.where(dv.c.run_id == run_id)
        return self._read(query.order_by(dv.c.id_number, dv.c.service, dv.c.version), dv)

    def master_rows(self, ids: pd.Series, columns: list[str], day: date | None = None) -> pd.DataFrame:
        """Some persons' master rows (current, or as of `day`), found through a key table, not an IN list."""
        with self.engine.begin() as conn:
            bulk = self._bulk(conn)
            keys = bulk.keys("lb_rows", ids.astype("string").drop_duplicates().to_frame("id_number"))
            if day is None:
                query = sa.select(*self._columns(person, columns)).where(bulk.in_keys(person, keys))
                frame = self._read(query, person, conn)
            else:
                pv = person_version
                query = sa.select(*self._columns(pv, columns)).where(
                    bulk.in_keys(pv, keys),
                    pv.c.valid_from <= day,
                    sa.or_(pv.c.valid_to.is_(None), pv.c.valid_to > day),
                    pv.c.removed == sa.false(),
                )
                frame = self._read(query, pv, conn)
            bulk.drop_temps()
        return frame

    # -- reads --------------------------------------------------------------------------------------------

    @staticmethod
    def _plain(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
        """Select a date or flag without SQLAlchemy's per-value result processing; `typed` converts in bulk."""
        if isinstance(column.type, sa.Date | sa.Boolean):
            return sa.type_coerce(column, sa.String).label(column.name)
        return column

    def _read(
        self, query: sa.Select[Any], table: sa.Table, conn: sa.Connection | None = None
    ) -> pd.DataFrame:
        """Run a select of `table`'s columns into a frame with the merge's dtypes.

        The backend reads in bulk (COPY ... TO STDOUT on PostgreSQL, the DBAPI cursor in chunks on SQLite);
        dates and flags travel as text and are converted here per column.
        """
        if conn is None:
            with self.engine.connect() as own:
                return self._read(query, table, own)
        plain = query.with_only_columns(
            *(self._plain(c) if isinstance(c, sa.Column) else c for c in query.selected_columns),
            maintain_column_froms=True,
        )
        keys = [str(c.name) for c in plain.selected_columns]
        sql = str(plain.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        arrow = self.backend.read(conn, sql, keys, table, self.chunk_rows, self.stats)
        if arrow is None:
            return typed(pd.DataFrame({k: pd.Series([], dtype=object) for k in keys}), table)
        return typed(arrow.to_pandas(types_mapper=PANDAS_TYPES.get, date_as_object=False), table)

    @staticmethod
    def _columns(table: sa.Table, columns: Iterable[str]) -> list[sa.Column[Any]]:
        wanted = list(columns)
        unknown = [c for c in wanted if c not in table.c]
        if unknown:
            raise ValueError(f"table {table.name} has no column(s) {unknown}")
        return [table.c[c] for c in wanted]

    def read_master(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The current master file (MASTER_COLUMNS, or the columns asked for), ordered by id_number."""
        cols = self._columns(person, MASTER_COLUMNS if columns is None else columns)
        return self._read(sa.select(*cols).order_by(person.c.id_number), person)

    def read_master_as_of(self, day: date, columns: list[str] | None = None) -> pd.DataFrame:
        """The master file as it stood on `day` (the versions valid then, tombstones excluded)."""
        pv = person_version
        cols = self._columns(pv, MASTER_COLUMNS if columns is None else columns)
        query = (
            sa.select(*cols)
            .where(
                pv.c.valid_from <= day,
                sa.or_(pv.c.valid_to.is_(None), pv.c.valid_to > day),
                pv.c.removed == sa.false(),
            )
            .order_by(pv.c.id_number)
        )
        return self._read(query, pv)

    def id_chain(self, id_number: str) -> pd.DataFrame:
        """Every ID change linked to this number, either way (old_id, new_id, source, batch_id, first_run)."""
        found = {id_number}
        rows = pd.DataFrame()
        while True:  # a few links at most: one query per hop
            ids = sorted(found)
            rows = self._read(
                sa.select(id_change).where(sa.or_(id_change.c.old_id.in_(ids), id_change.c.new_id.in_(ids))),
                id_change,
            )
            more = set(rows["old_id"].dropna()) | set(rows["new_id"].dropna())
            if more <= found:
                return rows.sort_values(["first_run", "old_id"]).reset_index(drop=True)
            found |= more

    def current_id(self, id_number: str) -> str:
        """The number a person is known by now, following old -> new ID changes."""
        chain = self.id_chain(id_number)
        now, seen = id_number, {id_number}
        step = dict(zip(chain["old_id"], chain["new_id"], strict=True))
        while now in step and step[now] not in seen:
            now = step[now]
            seen.add(now)
        return now

    def history(self, id_number: str) -> pd.DataFrame:
        """Every version of a person, across its ID changes, oldest first."""
        chain = self.id_chain(id_number)
        ids = sorted({id_number} | set(chain["old_id"]) | set(chain["new_id"]))
        pv = person_version
        cols = ["id_number", "version", "valid_from", "valid_to", "caused_by", "run_id", "removed"]
        cols += [c for c in MASTER_COLUMNS if c != "id_number"]
        query = sa.select(*self._columns(pv, cols)).where(pv.c.id_number.in_(ids))
        frame = self._read(query.order_by(pv.c.valid_from, pv.c.id_number, pv.c.version), pv)
        return frame.reset_index(drop=True)

    def current_hashes(self) -> pd.DataFrame:
        """id_number and record_hash of every current person (what an incremental merge compares)."""
        return self.read_master(["id_number", "record_hash"])

    def read_conflicts(self, status: str | None = None) -> pd.DataFrame:
        """The conflicts queue (all, or those with this status), with their lifecycle columns."""
        cols = self._columns(conflict, (*CONFLICT_FIELDS, *CONFLICT_STATE))
        query = sa.select(*cols).order_by(*(conflict.c[c] for c in CONFLICT_KEY))
        if status is not None:
            query = query.where(conflict.c.status == status)
        return self._read(query, conflict)

    def last_run_batches(self) -> dict[str, str | None] | None:
        """The batches the last merge used ({source: batch_id or None}); None before any merge."""
        with self.engine.connect() as conn:
            text = conn.execute(
                sa.select(run.c.batches)
                .where(run.c.mode.is_not(None))
                .order_by(run.c.master_written_at.desc(), run.c.run_id.desc())
                .limit(1)
            ).scalar_one_or_none()
        return None if text is None else dict(json.loads(text))

    def last_merge(self, exclude_run: str | None = None) -> dict[str, Any] | None:
        """The last merge (other than `exclude_run`'s): run_id, as_of, the batches it used and when it was
        written; None before any merge."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    sa.select(run.c.run_id, run.c.as_of, run.c.batches, run.c.master_written_at)
                    .where(run.c.mode.is_not(None), run.c.run_id != (exclude_run or ""))
                    .order_by(run.c.master_written_at.desc(), run.c.run_id.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        as_of = row["as_of"]
        return {
            "run_id": row["run_id"],
            "as_of": date.fromisoformat(as_of) if isinstance(as_of, str) else as_of,
            "batches": dict(json.loads(row["batches"] or "{}")),
            "written_at": row["master_written_at"],
        }

    def read_decisions(self, run_id: str) -> pd.DataFrame:
        """The decisions a run left in force, as the run evaluated them (period = its month).

        The versions opened by this run or an earlier one and not closed by either, where runs are
        ordered as the migration orders them (as_of, then write time); empty for an unknown run.
        """
        with self.engine.connect() as conn:
            runs = conn.execute(
                sa.select(run.c.run_id, run.c.as_of)
                .where(run.c.decisions_written_at.is_not(None))
                .order_by(run.c.as_of, run.c.decisions_written_at, run.c.run_id)
            ).all()
        names = [str(r) for r, _ in runs]
        if run_id not in names:
            return self._read(sa.select(*self._decision_columns()).where(sa.false()), decision_version)
        as_of = runs[names.index(run_id)][1]
        upto = names[: names.index(run_id) + 1]
        dv = decision_version
        query = sa.select(*self._decision_columns(f"{as_of}"[:7])).where(
            dv.c.run_id.in_(upto), sa.or_(dv.c.closed_run.is_(None), dv.c.closed_run.not_in(upto))
        )
        return self._read(query.order_by(dv.c.id_number, dv.c.service), dv)

    @staticmethod
    def _decision_columns(period: str = "") -> list[sa.ColumnElement[Any]]:
        dv = decision_version
        month = sa.literal(period, sa.String(7)).label("period")
        names = ("eligible", "amount", "reasons", "policy", "policy_version")
        return [dv.c.id_number, dv.c.service, month, *(dv.c[n] for n in names)]

    def counts(self) -> dict[str, Any]:
        """Sizes for the report: persons, open conflicts (and by type), decisions, runs."""
        with self.engine.connect() as conn:

            def count(table: sa.Table) -> int:
                return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

            by_type = conn.execute(
                sa.select(conflict.c.conflict_type, sa.func.count())
                .where(conflict.c.status == "open")
                .group_by(conflict.c.conflict_type)
                .order_by(conflict.c.conflict_type)
            ).all()
            return {
                "persons": count(person),
                "conflicts": sum(int(n) for _, n in by_type),
                "conflicts_by_type": {str(t): int(n) for t, n in by_type},
                "decisions": int(
                    conn.execute(
                        sa.select(sa.func.count())
                        .select_from(decision_version)
                        .where(decision_version.c.valid_to.is_(None))
                    ).scalar_one()
                ),
                "runs": count(run),
            }

    def run_record(self, run_id: str) -> dict[str, Any] | None:
        """What the store knows about one run (sizes, mode, batches and write times)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(run).where(run.c.run_id == run_id)).mappings().first()
        return dict(row) if row else None

    def dispose(self) -> None:
        """Close pooled connections (tests and short-lived CLI calls)."""
        self.engine.dispose()
