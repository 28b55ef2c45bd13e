"""The master store on both backends (SQLite file, throwaway PostgreSQL database), by the same tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from master_frames import (
    DAY1,
    DAY2,
    DAY3,
    Result,
    build_master,
    first_merge,
    name_conflicts,
    no_conflicts,
    rehash,
    second_merge,
    table_frame,
)

from core.master_schema import MASTER_SCHEMA_PATH, load_master_schema
from store import migrations
from store.master_store import MASTER_COLUMNS, MasterStore, metadata
from store.schema import build_tables, conflict, id_change, person_version, sql_type


def _count(url: str, table: str) -> int:
    return len(table_frame(url, table, "1"))


WRITES = ("copy_rows", "ingest_rows")


def _written(store: MasterStore) -> int:
    """Rows the store has sent to the database so far, whichever bulk path it took."""
    return sum(store.stats[k] for k in WRITES)


def _store(url: str, **kw: int) -> MasterStore:
    return MasterStore(url, **kw)


def test_the_store_keeps_the_merge_contract() -> None:
    """The interface of issue 5: the store's record and conflict columns are the merge's, in order."""
    from store import master_store
    from transforms import merge

    assert tuple(merge.MASTER_COLUMNS) == master_store.MASTER_COLUMNS
    assert tuple(merge.CONFLICT_COLUMNS) == master_store.CONFLICT_FIELDS
    assert [c.name for c in master_store.person.columns][: len(merge.MASTER_COLUMNS)] == list(
        merge.MASTER_COLUMNS
    )


# -- schema -----------------------------------------------------------------------------------------------


def _schema_with_one_more_attribute(folder: Path) -> Path:
    """schemas/master.yaml with one attribute line added, as a helper adding an attribute would."""
    text = MASTER_SCHEMA_PATH.read_text(encoding="utf-8")
    line = "  - {name: pension_scheme, kind: string, sql: String(16), carriers: [hrss], precedence: [hrss]}\n"
    anchor = "\n# Where each value came from"
    assert anchor in text
    path = folder / "master.yaml"
    path.write_text(text.replace(anchor, "\n" + line + anchor, 1), encoding="utf-8")
    return path


def test_the_models_are_the_columns_of_schemas_master_yaml() -> None:
    """The store's tables are built from the YAML: every declared column with its SQL type, in order."""
    schema = load_master_schema()
    declared = schema.sql_types()
    stored = {c.name: c for c in person_version.columns if c.name in declared}
    assert list(stored) == list(declared) == list(MASTER_COLUMNS)
    for name, spec in declared.items():
        assert repr(stored[name].type) == repr(sql_type(spec)), name
        kind = {**schema.attribute_columns, **schema.provenance_columns}[name]
        assert stored[name].nullable == (kind != "flag" and name != schema.key.name), name
    assert len(schema.attributes) == int(declared["sources"][len("String(") : -1])  # a code per attribute
    for record, table in ((schema.conflict, conflict), (schema.id_change, id_change)):
        fields = {f.name: f for f in (*record.fields, *record.state)}
        assert set(table.c.keys()) == set(fields)
        assert [c.name for c in table.primary_key.columns] == list(record.key)
        for name, f in fields.items():
            assert repr(table.c[name].type) == repr(sql_type(f.sql)), name


def test_alembic_upgrade_head_creates_the_tables_the_models_describe(store_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(store_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
        command.upgrade(migrations.config(store_url), "head")  # the command line's path, not MasterStore's
        tables = set(sa.inspect(engine).get_table_names())
        assert sa.inspect(engine).get_view_names() == ["person"]
        assert {
            "person_version",
            "id_change",
            "conflict",
            "decision_version",
            "run",
            "alembic_version",
        } <= tables
        with engine.connect() as conn:
            context = MigrationContext.configure(conn)
            assert set(context.get_current_heads()) == migrations.heads()
            assert compare_metadata(context, metadata) == []
            # the comparison can fail: one more attribute line in schemas/master.yaml without its
            # migration shows up as a column the database lacks and a `sources` too narrow for it
            drifted = build_tables(load_master_schema(_schema_with_one_more_attribute(tmp_path)))
            diff = [
                d[0] if isinstance(d, tuple) else d[0][0] for d in compare_metadata(context, drifted.metadata)
            ]
            assert sorted(diff) == ["add_column", "modify_type"]
            added = next(d for d in compare_metadata(context, drifted.metadata) if isinstance(d, tuple))
            assert (added[2], added[3].name) == ("person_version", "pension_scheme")
        MasterStore(store_url).dispose()  # an up-to-date database: opening it changes nothing
        assert set(sa.inspect(engine).get_table_names()) == tables
    finally:
        engine.dispose()


def test_each_database_gets_its_backend_and_others_are_refused() -> None:
    from store.backends import PostgresBackend, SqliteBackend, backend_for

    assert isinstance(backend_for("sqlite:///var/master.db"), SqliteBackend)
    assert isinstance(backend_for("postgresql+psycopg://postgres@127.0.0.1/x"), PostgresBackend)
    for url in ("postgresql+psycopg2://u:secret@h/x", "mysql+pymysql://u@h/x"):
        with pytest.raises(ValueError, match="expected sqlite:///FILE or postgresql\\+psycopg://") as caught:
            backend_for(url)
        assert "secret" not in str(caught.value)


def test_a_store_from_before_migrations_is_refused_with_advice(store_url: str) -> None:
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE person (id_number VARCHAR(18) PRIMARY KEY)")
    engine.dispose()
    with pytest.raises(migrations.StoreSchemaError, match="before schema migrations"):
        MasterStore(store_url)


# -- merges -----------------------------------------------------------------------------------------------


def test_full_apply_round_trips_and_a_repeat_writes_nothing(store_url: str) -> None:
    store = _store(store_url)
    result = first_merge(300)
    counts = store.apply_merge(result, "run-1", DAY1, batches={"cdpf": "cdpf-b1", "hrss": None})
    assert counts["new"] == 300 and counts["changed"] == counts["removed"] == counts["unchanged"] == 0
    assert counts["conflicts_open"] == 2 and counts["conflicts_new"] == 2
    pd.testing.assert_frame_equal(store.read_master(), result.master)
    pd.testing.assert_frame_equal(store.read_master_as_of(DAY1), result.master)
    assert store.read_master_as_of(DAY1 - timedelta(days=1)).empty
    assert list(store.read_master().columns) == list(MASTER_COLUMNS)
    versions = table_frame(store_url, "person_version", "id_number")
    assert (versions["caused_by"] == "cdpf-b1,police-b1,civil-b1,hrss-b1").all()
    assert versions["valid_to"].isna().all() and (versions["version"] == 1).all()

    written = _written(store)
    again = store.apply_merge(first_merge(300), "run-1", DAY1)  # a retried task
    assert again == {
        "new": 0,
        "changed": 0,
        "removed": 0,
        "unchanged": 300,
        "conflicts_open": 2,
        "conflicts_new": 0,
        "conflicts_reopened": 0,
        "conflicts_resolved": 0,
        "id_changes": 0,
    }
    assert _written(store) == written  # not one row written
    later = store.apply_merge(first_merge(300), "run-2", DAY2)
    assert (later["new"], later["changed"], later["removed"], later["unchanged"]) == (0, 0, 0, 300)
    # only the two conflicts' last_run moved (2 keys + 2 rows); no person row or version was written
    assert _written(store) - written == 4
    assert _count(store_url, "person_version") == 300
    assert table_frame(store_url, "person", "id_number")["run_id"].eq("run-1").all()
    assert store.read_conflicts()["last_run"].eq("run-2").all()
    record = store.run_record("run-1")
    assert record is not None and record["mode"] == "full" and record["written"] == 300
    assert store.run_record("run-2")["written"] == 0  # type: ignore[index]
    assert store.last_run_batches() == {}  # run-2 gave none
    store.dispose()


def test_one_changed_person_writes_one_version_and_the_past_stays_readable(store_url: str) -> None:
    store = _store(store_url)
    first = first_merge(200)
    store.apply_merge(first, "run-1", DAY1)
    master = first.master.copy()
    master.loc[7, ["employment", "hrss_batch"]] = ["retired", "hrss-b2"]
    master.loc[:, "civil_batch"] = "civil-b2"  # a new batch with the same facts is not a change
    counts = store.apply_merge(Result(rehash(master), first.conflicts), "run-2", DAY2)
    assert (counts["changed"], counts["unchanged"], counts["new"], counts["removed"]) == (1, 199, 0, 0)
    assert _count(store_url, "person_version") == 201
    pid = master.loc[7, "id_number"]

    now = store.read_master().set_index("id_number")
    assert now.loc[pid, "employment"] == "retired"
    assert now.loc[master.loc[8, "id_number"], "civil_batch"] == "civil-b1"  # untouched row keeps its batch
    before = store.read_master_as_of(DAY1)
    pd.testing.assert_frame_equal(before, first.master)
    assert store.read_master_as_of(DAY2).set_index("id_number").loc[pid, "employment"] == "retired"

    history = store.history(pid)
    assert list(history["version"]) == [1, 2]
    assert list(history["valid_from"].dt.date) == [DAY1, DAY2]
    assert history["valid_to"].dt.date.tolist()[0] == DAY2 and pd.isna(history["valid_to"].iloc[1])
    assert history["caused_by"].tolist() == ["cdpf-b1,police-b1,civil-b1,hrss-b1", "hrss-b2"]
    assert list(history["run_id"]) == ["run-1", "run-2"]
    store.dispose()


def test_a_source_change_of_an_attribute_blames_the_new_source(store_url: str) -> None:
    store = _store(store_url)
    first = first_merge(20)
    store.apply_merge(first, "run-1", DAY1)
    master = first.master.copy()
    # cdpf now gives the name (police lost it): same value, new source -> a change caused by cdpf
    master.loc[2, "sources"] = "C" + master.loc[2, "sources"][1:]
    master.loc[2, "cdpf_batch"] = "cdpf-b2"
    counts = store.apply_merge(Result(rehash(master)), "run-2", DAY2)
    assert counts["changed"] == 1
    history = store.history(master.loc[2, "id_number"])
    assert history["caused_by"].iloc[-1] == "cdpf-b2" and history["sources"].iloc[-1].startswith("CP")
    store.dispose()


def test_removed_person_gets_a_tombstone_and_can_return(store_url: str) -> None:
    store = _store(store_url)
    first = first_merge(50)
    store.apply_merge(first, "run-1", DAY1)
    gone = first.master.loc[10, "id_number"]
    counts = store.apply_merge(
        Result(first.master.drop(index=10), first.conflicts), "run-2", DAY2, batches={"cdpf": "cdpf-b2"}
    )
    assert counts["removed"] == 1 and counts["unchanged"] == 49
    assert gone not in set(store.read_master()["id_number"])
    assert gone in set(store.read_master_as_of(DAY1)["id_number"])
    assert gone not in set(store.read_master_as_of(DAY2)["id_number"])
    history = store.history(gone)
    assert history["removed"].tolist() == [False, True]
    assert history["caused_by"].iloc[1] == "cdpf-b2"  # the batch in which the person no longer appears
    assert history["valid_to"].dt.date.iloc[0] == DAY2

    back = store.apply_merge(first, "run-3", DAY3)
    assert back["new"] == 1 and back["unchanged"] == 49
    history = store.history(gone)
    assert history["version"].tolist() == [1, 2, 3] and history["removed"].tolist() == [False, True, False]
    assert history["valid_to"].dt.date.tolist()[1] == DAY3 and pd.isna(history["valid_to"].iloc[2])
    assert gone in set(store.read_master()["id_number"])
    store.dispose()


def test_conflict_lifecycle_open_resolved_reopened(store_url: str) -> None:
    store = _store(store_url)
    master = build_master(10)
    both = name_conflicts(master, [1, 2])
    store.apply_merge(Result(master, both), "run-1", DAY1)
    counts = store.apply_merge(Result(master, both.iloc[[1]]), "run-2", DAY2)
    assert (counts["conflicts_open"], counts["conflicts_resolved"]) == (1, 1)
    table = store.read_conflicts().set_index("id_number")
    one, two = master.loc[1, "id_number"], master.loc[2, "id_number"]
    assert table.loc[one, "status"] == "resolved" and table.loc[one, "resolved_run"] == "run-2"
    assert table.loc[one, "last_run"] == "run-1"
    assert table.loc[two, ["status", "first_run", "last_run"]].tolist() == ["open", "run-1", "run-2"]
    assert len(store.read_conflicts("open")) == 1 and store.counts()["conflicts"] == 1

    changed = both.copy()
    changed.loc[0, "value_b"] = "别名"
    counts = store.apply_merge(Result(master, changed), "run-3", DAY3)
    assert counts["conflicts_reopened"] == 1 and counts["conflicts_open"] == 2
    table = store.read_conflicts().set_index("id_number")
    assert table.loc[one, ["status", "first_run", "last_run"]].tolist() == ["open", "run-1", "run-3"]
    assert pd.isna(table.loc[one, "resolved_run"])
    assert table.loc[one, "value_b"] == "别名" and table.loc[one, "department"] == "cdpf"
    # a person leaving the master takes their open conflicts to resolved
    counts = store.apply_merge(Result(master.drop(index=2), changed.iloc[[0]]), "run-4", DAY3)
    assert counts["conflicts_resolved"] == 1 and store.read_conflicts("open")["id_number"].tolist() == [one]
    store.dispose()


def test_incremental_scope_touches_only_the_persons_recomputed(store_url: str) -> None:
    store = _store(store_url)
    first = first_merge(100)
    store.apply_merge(first, "run-1", DAY1)
    scope = first.master["id_number"].iloc[[1, 2, 3, 50]]
    part = first.master.iloc[[1, 2]].copy()  # 3 and 50 left every source; 1 changed
    part.loc[1, "level"] = 1 if part.loc[1, "level"] != 1 else 2
    counts = store.apply_merge(Result(rehash(part), first.conflicts.iloc[[0]]), "run-2", DAY2, scope=scope)
    assert (counts["changed"], counts["unchanged"], counts["removed"], counts["new"]) == (1, 1, 2, 0)
    now = store.read_master()
    assert len(now) == 98 and set(scope.iloc[[2, 3]]).isdisjoint(now["id_number"])
    # conflict of person 3 was in scope and not found again -> resolved; person 1's stays open
    assert store.read_conflicts("open")["id_number"].tolist() == [first.master.loc[1, "id_number"]]
    assert store.run_record("run-2")["mode"] == "incremental"  # type: ignore[index]
    assert store.run_record("run-2")["scope"] == 4  # type: ignore[index]
    with pytest.raises(ValueError, match="outside the scope"):
        store.apply_merge(first, "run-3", DAY3, scope=scope)
    store.dispose()


def test_id_change_is_kept_and_followed(store_url: str) -> None:
    store = _store(store_url)
    first = first_merge(20)
    store.apply_merge(first, "run-1", DAY1)
    old_id = first.master.loc[4, "id_number"]
    moved = first.master.copy()
    new_row = build_master(1, start=5000)
    moved.loc[4] = new_row.iloc[0].to_numpy()
    moved.loc[4, "name"] = first.master.loc[4, "name"]
    moved = rehash(moved).sort_values("id_number").reset_index(drop=True)
    new_id = new_row.loc[0, "id_number"]
    changes = pd.DataFrame(
        {"old_id": [old_id], "new_id": [new_id], "source": ["police"], "batch_id": ["police-b2"]}
    ).astype("string")
    counts = store.apply_merge(Result(moved, first.conflicts, changes), "run-2", DAY2)
    assert (counts["new"], counts["removed"], counts["id_changes"]) == (1, 1, 1)
    assert store.apply_merge(Result(moved, first.conflicts, changes), "run-3", DAY3)["id_changes"] == 0
    assert store.current_id(old_id) == new_id and store.current_id(new_id) == new_id
    history = store.history(old_id)
    assert history["id_number"].tolist() == [old_id, old_id, new_id]
    assert history["removed"].tolist() == [False, True, False]
    pd.testing.assert_frame_equal(store.history(new_id), history)
    chain = store.id_chain(new_id)
    assert chain[["old_id", "new_id", "first_run"]].values.tolist() == [[old_id, new_id, "run-2"]]
    store.dispose()


def test_history_only_moves_forward(store_url: str) -> None:
    store = _store(store_url)
    store.apply_merge(first_merge(5), "run-2", DAY2)
    with pytest.raises(ValueError, match="history only moves forward"):
        store.apply_merge(first_merge(5), "run-1", DAY1)
    store.apply_merge(first_merge(5), "run-2", DAY2)  # a retried run of the same day is fine
    store.dispose()


def test_decisions_round_trip_and_a_retry_replaces_them(store_url: str) -> None:
    store = _store(store_url)
    result = first_merge(5)
    store.apply_merge(result, "run-1", DAY1)
    decisions = pd.DataFrame(
        {
            "id_number": pd.array(list(result.master["id_number"].iloc[:3]), dtype="string"),
            "service": pd.array(["living_subsidy"] * 3, dtype="string"),
            "period": pd.array(["2026-03"] * 3, dtype="string"),
            "eligible": [True, False, True],
            "amount": [345.0, 0.0, 172.5],
            "reasons": pd.array(["", "NOT_LOW_INCOME", ""], dtype="string"),
            "policy": pd.array(["p"] * 3, dtype="string"),
            "policy_version": pd.array(["v"] * 3, dtype="string"),
        }
    )
    store.apply_decisions(decisions, "run-1", DAY1, "policyhash", "sha")
    store.apply_decisions(decisions, "run-1", DAY1, "policyhash", "sha")
    pd.testing.assert_frame_equal(store.read_decisions("run-1"), decisions)
    assert store.read_decisions("other").empty
    assert store.counts() == {
        "persons": 5,
        "conflicts": 2,
        "conflicts_by_type": {"NAME_MISMATCH": 2},
        "decisions": 3,
        "runs": 1,
    }
    assert store.run_record("run-1")["decisions"] == 3  # type: ignore[index]
    store.dispose()


def test_a_large_merge_takes_the_bulk_path_of_its_backend(store_url: str, backend: str) -> None:
    store = _store(store_url, chunk_rows=20_000)
    first = first_merge(50_000)
    store.apply_merge(first, "run-1", DAY1)
    copied, ingested = store.stats["copy_rows"], store.stats["ingest_rows"]
    if backend == "postgres":
        # person_version + conflict keys + conflicts: COPY only, reads by COPY ... TO too
        assert copied == 50_000 + 2 * 2 and ingested == 0
        assert store.stats["copy_statements"] == 3 and store.stats["copy_out_statements"] > 0
    else:
        # the versions staged by ADBC ingest, once: the current master is a view of them
        assert ingested == 50_000 + 2 * 2 and copied == 0 and store.stats["copy_out_statements"] == 0
    second = second_merge(50_000)
    counts = store.apply_merge(second, "run-2", DAY2)
    assert counts["changed"] == len(range(0, 50_000, 10)) - len(
        set(range(0, 50_000, 10)) & set(range(5, 50_000, 97))
    )
    assert counts["removed"] == len(range(5, 50_000, 97)) and counts["new"] == 1000
    pd.testing.assert_frame_equal(store.read_master(), second.master)
    pd.testing.assert_frame_equal(store.read_master_as_of(DAY1), first.master)
    store.dispose()


def test_both_backends_store_odd_text_and_nulls_faithfully(store_url: str) -> None:
    store = _store(store_url)
    master = build_master(4)
    master["name"] = pd.array(['引号"和,逗号', "", None, "反斜杠\\N\t换行\n"], dtype="string")
    master.loc[1, "dibao_standard"] = 1234.5678901234
    master.loc[2, "category"] = pd.NA
    master = rehash(master)
    store.apply_merge(Result(master, no_conflicts()), "run-1", DAY1)
    pd.testing.assert_frame_equal(store.read_master(), master)
    store.dispose()


def test_two_stores_built_the_same_way_agree(new_store_url: Callable[[], str]) -> None:
    a, b = _store(new_store_url()), _store(new_store_url())
    for store in (a, b):
        store.apply_merge(first_merge(500), "run-1", DAY1)
    a.apply_merge(second_merge(500), "run-2", DAY2)
    b.apply_merge(second_merge(500), "run-2", DAY2)
    b.apply_merge(second_merge(500), "run-2", DAY2)  # retried: no difference
    for read in ("read_master", "read_conflicts", "current_hashes"):
        pd.testing.assert_frame_equal(getattr(a, read)(), getattr(b, read)())
    a.dispose()
    b.dispose()


@pytest.mark.postgres
@pytest.mark.integration
def test_a_bulk_merge_leaves_postgresql_fresh_statistics(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a bulk load, autovacuum analyzes later; the next 1% merge's key joins would be planned from
    a near-empty table (full scans of person_version). A large merge analyzes what it wrote."""
    from store.backends import PostgresBackend

    def planned_rows(store: MasterStore) -> dict[str, float]:
        with store.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT relname, reltuples FROM pg_class WHERE relname IN ('conflict', 'person_version')"
            )
            return {str(name): float(n) for name, n in rows}

    monkeypatch.setattr(PostgresBackend, "analyze_after_rows", 500)
    store = _store(pg_url)
    store.apply_merge(first_merge(300), "run-1", DAY1)  # below the threshold: left to autovacuum
    assert planned_rows(store) == {"conflict": -1.0, "person_version": -1.0}  # never analyzed
    store.apply_merge(first_merge(1_000), "run-2", DAY2)  # 700 new persons
    assert planned_rows(store) == {"conflict": 2.0, "person_version": 1_000.0}
    store.dispose()


def test_the_person_view_migration_goes_down_and_up_keeping_the_current_master(store_url: str) -> None:
    store = _store(store_url)
    store.apply_merge(first_merge(50), "run-1", DAY1)
    before = store.read_master()
    store.dispose()
    command.downgrade(migrations.config(store_url), "0001")  # person becomes a table of its own again
    engine = sa.create_engine(store_url)
    try:
        assert "person" in sa.inspect(engine).get_table_names() and not sa.inspect(engine).get_view_names()
        assert sa.inspect(engine).get_pk_constraint("person")["constrained_columns"] == ["id_number"]
    finally:
        engine.dispose()
    assert _count(store_url, "person") == 50
    store = _store(store_url)  # opening upgrades to head: the view again
    after = store.read_master()
    store.dispose()
    # below 0004 the bundle facts have no column: they come back as unknown (flags false), the rest whole
    added = ["hukou_nature", "lower_limb", "wheelchair_vehicles", "able_to_work"]
    assert after["hukou_nature"].isna().all() and after["wheelchair_vehicles"].isna().all()
    assert not after["lower_limb"].any() and not after["able_to_work"].any()
    assert (after["sources"] == before["sources"].str[:22]).all()
    pd.testing.assert_frame_equal(
        after.drop(columns=[*added, "sources"]), before.drop(columns=[*added, "sources"])
    )
