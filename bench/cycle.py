"""`hub bench`: time every stage in-process on a sandbox of N persons, against a DuckDB floor.

The compute floor is a hand-written DuckDB query over the same staged parquet files that does the
merge's joins and evaluates every service of the policy; merge plus eligibility, and their compute
alone (without store writes), are reported as ratios to it. The store floor is the same master rows
written by the backend's fastest bulk path (ADBC ingest; COPY binary on PostgreSQL) into a fresh
table; the merge's store write is reported as a ratio to it. The 1%-change day runs merge,
eligibility, exchange, deliver and report incrementally and gives each stage's share: the partners
acknowledge what the full run delivered (as a department's inbox does, with an .ack file), so the
day's delta files are computed against what they hold, as every day after the first is.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psutil

from core.results import StageResult
from core.settings import Settings, load_settings
from core.storage import Storage, write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class StageTiming:
    stage: str
    rows: int
    seconds: float
    peak_rss_mib: float


class PeakRss:
    """Samples this process's resident memory every 10 ms while a stage runs."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.01)

    def __enter__(self) -> PeakRss:
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


class Bench:
    def __init__(self) -> None:
        self.timings: list[StageTiming] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, int]]:
        """Time a block; the block sets out['rows'] to the number of rows it handled."""
        out = {"rows": 0}
        with PeakRss() as rss:
            started = time.perf_counter()
            yield out
            elapsed = time.perf_counter() - started
        self.timings.append(StageTiming(name, out["rows"], elapsed, rss.peak / 2**20))
        log.info("%s: %.2f s", name, elapsed)

    def seconds(self, name: str) -> float:
        return next(t.seconds for t in self.timings if t.stage == name)


def sa_backend(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0]


def _sandbox_matches(storage: Storage, persons: int, seed: int) -> bool:
    meta = storage.sandbox / "sandbox.json"
    if not meta.exists():
        return False
    from sandbox.generator import generator_fingerprint

    info = json.loads(meta.read_text(encoding="utf-8"))
    made_here = info.get("generator") == generator_fingerprint()
    return bool(info.get("persons") == persons and info.get("seed") == seed and made_here)


def duckdb_floor(settings: Settings, as_of: date) -> int:
    """The same joins and every service of the policy as one hand-written DuckDB query, written to parquet."""
    import duckdb

    from transforms.eligibility import load_policy

    storage = Storage(settings)
    staged: dict[str, str] = {}
    for source in settings.sources:
        batch = storage.last_accepted(source)
        if batch is None:
            raise RuntimeError(f"no accepted batch of {source} to benchmark")
        staged[source] = str(storage.staged(source, batch["batch_id"]) / "accepted.parquet")
    policy = load_policy(settings.path(settings.policy), as_of)
    # the period's values with the province-wide adjustments in force (a declared 临时救助 period)
    p = {name: policy.parameter_sources(name, None)[0] for name in policy.parameters}
    # the other departments' rows under a number police has replaced (原公民身份号码) follow the person
    # S608: the SQL is built from our own staged paths under var/ and the policy's typed numbers, never
    # from data; DuckDB takes no bound parameter in these positions (a COPY target, nested table functions)
    rekeyed = {
        source: f"""(SELECT s.* REPLACE (coalesce(ch.new_id, s.id_number) AS id_number)
            FROM read_parquet('{staged[source]}') s LEFT JOIN changes ch ON s.id_number = ch.old_id)"""  # noqa: S608
        for source in ("cdpf", "hrss", "civil")
    }
    query = f"""
    WITH changes AS (
        SELECT former_id_number AS old_id, arg_max(id_number, updated_at) AS new_id
        FROM read_parquet('{staged["police"]}') WHERE former_id_number IS NOT NULL GROUP BY former_id_number),
    cdpf AS (
        SELECT * FROM {rekeyed["cdpf"]}
        QUALIFY row_number() OVER (PARTITION BY id_number ORDER BY updated_at DESC) = 1),
    police AS (
        SELECT * FROM read_parquet('{staged["police"]}')
        QUALIFY row_number() OVER (PARTITION BY id_number ORDER BY updated_at DESC) = 1),
    hrss AS (
        SELECT * FROM {rekeyed["hrss"]}
        QUALIFY row_number() OVER (PARTITION BY id_number ORDER BY updated_at DESC) = 1),
    civil AS (
        SELECT id_number,
               bool_or(assistance_type = 'dibao') AS dibao,
               bool_or(assistance_type = 'dibao_edge') AS dibao_edge,
               bool_or(assistance_type = 'tekun') AS tekun,
               bool_or(assistance_type IN ('orphan', 'de_facto_orphan')) AS orphan_support,
               max(dibao_standard) FILTER (WHERE assistance_type IN ('dibao', 'dibao_edge')) AS dibao_standard
        FROM {rekeyed["civil"]}
        WHERE active AND start_date <= DATE '{as_of}' AND (end_date IS NULL OR end_date >= DATE '{as_of}')
        GROUP BY id_number),
    m AS (
        SELECT c.id_number, c.level, c.category, c.institutional_care, c.needs_long_term_care,
               c.cert_status, c.cert_valid_until,
               coalesce(p.birth_date, c.birth_date) AS birth_date, p.death_date, p.hukou_status,
               c.cert_status = 'active' AND c.cert_valid_until >= DATE '{as_of}' AS cert_ok,
               coalesce(p.hukou_status = 'normal' AND starts_with(p.hukou_county, '33'), false) AS local_ok,
               coalesce(v.dibao, false) AS dibao, coalesce(v.dibao_edge, false) AS dibao_edge,
               coalesce(v.tekun, false) AS tekun, coalesce(v.orphan_support, false) AS orphan_support,
               v.dibao_standard, coalesce(h.work_injury_care, false) AS wic, h.pension_type,
               h.employment, p.hukou_nature, c.lower_limb, c.wheelchair_vehicles, c.able_to_work
        FROM cdpf c LEFT JOIN police p USING (id_number) LEFT JOIN civil v USING (id_number)
        LEFT JOIN hrss h USING (id_number)),
    f AS (
        SELECT *,
               coalesce(death_date IS NOT NULL
                   AND (year(DATE '{as_of}') * 12 + month(DATE '{as_of}'))
                       - (year(death_date) * 12 + month(death_date)) >= 1, false) AS died_before,
               death_date IS NOT NULL OR coalesce(hukou_status = 'dead', false) AS known_dead,
               year(DATE '{as_of}') - year(birth_date)
                   - CASE WHEN month(DATE '{as_of}') * 100 + day(DATE '{as_of}')
                               < month(birth_date) * 100 + day(birth_date) THEN 1 ELSE 0 END AS age
        FROM m),
    d AS (
        SELECT id_number,
               cert_ok AND local_ok AND (dibao OR dibao_edge) AND NOT died_before AND NOT tekun AND NOT wic
                   AND NOT orphan_support AS living,
               cert_ok AND local_ok AND coalesce(needs_long_term_care, false)
                   AND (level <= 2 OR (level >= 3 AND category IN (5, 6)))
                   AND NOT died_before AND NOT tekun AND NOT wic AS nursing,
               {p["living_share_of_dibao"]} * dibao_standard AS living_amount,
               ({p["nursing_tier1"]} * (level = 1)::INT + {p["nursing_tier2"]} * (level = 2)::INT
                + {p["nursing_tier3"]} * (level >= 3)::INT)
                   * (1 + {p["institutional_uplift"]} * institutional_care::INT) AS nursing_amount,
               coalesce(cert_ok AND local_ok AND level IN (1, 2)
                   AND age BETWEEN {p["pension_age_min"]} AND {p["pension_age_max"]}
                   AND pension_type = 'resident', false) AND NOT died_before AS pension,
               cert_ok AND local_ok AND (level IN (1, 2) OR dibao) AND NOT died_before AS medical,
               coalesce(cert_status = 'active', false) AND known_dead AS cancel_on_death,
               coalesce(cert_status = 'active' AND cert_valid_until < DATE '{as_of}', false)
                   AND NOT known_dead AS expired,
               coalesce(cert_status = 'active' AND cert_valid_until >= DATE '{as_of}'
                   AND date_diff('day', DATE '{as_of}', cert_valid_until::DATE) <= {p["renewal_days"]}, false)
                   AND NOT known_dead AS renewal,
               cert_ok AND local_ok AND coalesce(age BETWEEN {p["referral_age_min"]} AND {p["referral_age_max"]}
                   AND employment IN ('unemployed', 'not_employed') AND able_to_work, false)
                   AND NOT known_dead AS referral,
               cert_ok AND local_ok AND coalesce(category IN (4, 7) AND lower_limb AND wheelchair_vehicles >= 1, false)
                   AND NOT died_before AS fuel,
               cert_ok AND local_ok AND (level IN (1, 2) OR dibao) AND {p["temporary_declared"]} >= 1
                   AND coalesce(hukou_nature IN ('urban', 'rural'), false) AND NOT died_before AS temporary,
               {p["fuel_per_vehicle"]} * wheelchair_vehicles AS fuel_amount,
               CASE WHEN hukou_nature = 'urban' THEN {p["temporary_urban"]} ELSE {p["temporary_rural"]} END
                   AS temporary_amount
        FROM f)
    SELECT id_number, 'living_subsidy' AS service, living AS eligible,
           CASE WHEN living THEN round(living_amount, 2) ELSE 0 END AS amount FROM d
    UNION ALL
    SELECT id_number, 'nursing_subsidy', nursing, CASE WHEN nursing THEN round(nursing_amount, 2) ELSE 0 END FROM d
    UNION ALL
    SELECT id_number, 'pension_contribution', pension,
           CASE WHEN pension THEN {p["pension_contribution"]} ELSE 0 END FROM d
    UNION ALL
    SELECT id_number, 'medical_insurance_subsidy', medical,
           CASE WHEN medical THEN {p["medical_contribution"]} ELSE 0 END FROM d
    UNION ALL
    SELECT id_number, 'cert_cancellation_on_death', cancel_on_death, 0 FROM d
    UNION ALL
    SELECT id_number, 'cert_expired', expired, 0 FROM d
    UNION ALL
    SELECT id_number, 'cert_renewal_reminder', renewal, 0 FROM d
    UNION ALL
    SELECT id_number, 'employment_referral', referral, 0 FROM d
    UNION ALL
    SELECT id_number, 'wheelchair_fuel_subsidy', fuel, CASE WHEN fuel THEN fuel_amount ELSE 0 END FROM d
    UNION ALL
    SELECT id_number, 'temporary_assistance', temporary,
           CASE WHEN temporary THEN temporary_amount ELSE 0 END FROM d
    """  # noqa: S608
    target = storage.var / "bench-floor-decisions.parquet"
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.execute(f"COPY ({query}) TO '{target}' (FORMAT parquet)")
    rows = con.execute("SELECT count(*) FROM read_parquet(?)", [str(target)]).fetchone()
    con.close()
    return int(rows[0]) if rows else 0


def store_floor(settings: Settings, snapshot: Path, tag: str) -> dict[str, Any]:
    """The current master's rows written by the backend's fastest bulk path into a fresh table.

    ADBC bulk ingest: into a new SQLite file beside the store (SQLite), or a new table in the store's
    database through COPY binary (PostgreSQL). Independent of the store's own code, dropped afterwards.
    """
    import pyarrow as pa
    import sqlalchemy as sa

    with pa.memory_map(str(snapshot)) as source:
        table = pa.ipc.open_file(source).read_all()
    url = sa.make_url(settings.master_url)
    name = f"bench_store_floor_{tag.lower()}"
    started = time.perf_counter()
    if url.get_backend_name() == "postgresql":
        import adbc_driver_postgresql.dbapi as pg

        uri = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with pg.connect(uri) as conn, conn.cursor() as cursor:
            rows = cursor.adbc_ingest(name, table, mode="create")
            conn.commit()
            seconds = time.perf_counter() - started
            cursor.execute(f'DROP TABLE "{name}"')
            conn.commit()
    else:
        import adbc_driver_sqlite.dbapi as lite

        target = Path(url.database or ".").with_name(f"{name}.sqlite")
        with lite.connect(str(target)) as conn, conn.cursor() as cursor:
            rows = cursor.adbc_ingest(name, table, mode="create")
            conn.commit()
        seconds = time.perf_counter() - started
        target.unlink()
    return {"path": "adbc_ingest", "rows": rows, "columns": table.num_columns, "seconds": seconds}


def _change_one_percent(settings: Settings, run_tag: str) -> int:
    """A new accepted batch of every source in which the rows of 1% of the certificate holders changed.

    cdpf moves their disability level up one step, police their 户籍 county within the province, hrss
    their employment status and civil their 低保 standard; every one of them is a change of the merged
    record (the cdpf change alone makes sure of it). Returns the number of persons changed.
    """
    import numpy as np
    import pandas as pd

    storage = Storage(settings)
    frames: dict[str, tuple[str, pd.DataFrame]] = {}
    for source in ("cdpf", "police", "hrss", "civil"):
        last = storage.last_accepted(source)
        if last is None:
            raise RuntimeError(f"no accepted {source} batch to change")
        frames[source] = (
            last["batch_id"],
            pd.read_parquet(storage.staged(source, last["batch_id"]) / "accepted.parquet"),
        )
    holders = frames["cdpf"][1]["id_number"].drop_duplicates().sort_values()
    chosen = pd.Index(holders.iloc[::100])
    for source, (_, frame) in frames.items():
        hit = frame["id_number"].isin(chosen).to_numpy()
        if source == "cdpf":
            frame.loc[hit, "level"] = (frame.loc[hit, "level"] % 4 + 1).astype(frame["level"].dtype)
            frame.loc[hit, "cert_number"] = frame.loc[hit, "cert_number"].str.slice(0, 19) + frame.loc[
                hit, "level"
            ].astype("string")
        elif source == "police":  # a move between two Hangzhou districts
            here = (frame.loc[hit, "hukou_county"] == "330106").fillna(False).to_numpy(dtype=bool)
            frame.loc[hit, "hukou_county"] = pd.array(np.where(here, "330102", "330106"), dtype="string")
        elif source == "hrss":
            cycle = {"employed": "unemployed", "unemployed": "not_employed", "not_employed": "employed"}
            frame.loc[hit, "employment"] = frame.loc[hit, "employment"].map(cycle).astype("string")
        else:
            frame.loc[hit, "dibao_standard"] = frame.loc[hit, "dibao_standard"] + 10
        batch_id = f"{source}-bench-1pct-{run_tag}"
        frame["_batch_id"] = batch_id
        out = storage.staged(source, batch_id)
        out.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(out / "accepted.parquet", index=False)
        storage.record_batch(batch_id, source, "bench-1pct", len(frame))
        storage.set_verdict(
            batch_id,
            "accepted",
            len(frame),
            0,
            note=f"hub bench: rows of 1% of persons changed ({int(hit.sum())})",
        )
    return len(chosen)


def deliver_and_acknowledge(settings: Settings, as_of: date, run_id: str) -> StageResult:
    """The deliver stage, then each folder partner's receipt for what it received, collected by a
    second delivery pass (the sandbox's departments acknowledge at once)."""
    from stages.deliver import deliver, deliver_stage, load_routes

    sent = deliver_stage(settings, as_of, run_id)
    for route in load_routes(settings.path("schemas/exchange")).values():
        if route.config.get("transport") != "folder":
            continue
        inbox = Path(settings.expand(str(route.config["path"])))
        for marker in inbox.glob("*.ok"):
            ack = marker.with_name(marker.name.removesuffix(".ok") + ".ack")
            if not ack.exists():
                ack.write_text('{"received": true}', encoding="utf-8")
    deliver(settings)
    return sent


def run_bench(
    persons: int, seed: int, base: Path | None = None, master_url: str | None = None
) -> dict[str, Any]:
    """Generate (or reuse) the sandbox, run every stage once in-process, and time each.

    The master store is a new SQLite file per run unless `master_url` names an (empty) database: the
    full merge writes every person, then a batch of every source with 1% of persons changed is merged
    incrementally.
    """
    from sandbox.services import police_simulator
    from stages.eligibility import eligibility_stage
    from stages.exchange import exchange_stage
    from stages.ingest import pull_stage, validate_stage
    from stages.merge import merge_stage
    from stages.report import report_stage

    bench_dir = (base or load_settings().var_dir) / "bench"
    root = bench_dir / f"p{persons}-s{seed}"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    settings = load_settings(var_dir=root)
    settings = settings.model_copy(
        update={"master_url": master_url or f"sqlite:///{root}/bench-master-{stamp}.sqlite"}
    )
    storage = Storage(settings)
    bench = Bench()
    if not _sandbox_matches(storage, persons, seed):
        from sandbox.generator import init_sandbox

        with bench.stage("sandbox init") as out:
            init_sandbox(settings, persons=persons, seed=seed)
            out["rows"] = persons
    as_of = date.fromisoformat(
        json.loads((storage.sandbox / "sandbox.json").read_text(encoding="utf-8"))["as_of"]
    )
    run_id = f"bench-{as_of}"
    os.environ["LIANBAN_VAR"] = str(root)
    with police_simulator(settings):
        for source in settings.sources:
            with bench.stage(f"pull {source}") as out:
                landed = pull_stage(settings, source, as_of)
                out["rows"] = landed.rows
            with bench.stage(f"validate {source}") as out:
                staged = validate_stage(settings, source, landed.batch_id, as_of)
                out["rows"] = staged.accepted + staged.quarantined
    with bench.stage("merge") as out:
        merged = merge_stage(settings, as_of, run_id, full=True).as_json()
        out["rows"] = int(merged["rows"])
    with bench.stage("store floor (master rows, bulk path)") as out:
        store_floor_figures = store_floor(settings, storage.master_snapshot(settings.master_url), stamp)
        out["rows"] = int(store_floor_figures["rows"])
    steps: list[tuple[str, Callable[..., StageResult]]] = [
        ("eligibility", eligibility_stage),
        ("exchange", exchange_stage),
        ("deliver", deliver_and_acknowledge),
        ("report", report_stage),
    ]
    results: dict[str, dict[str, Any]] = {}
    for name, step in steps:
        with bench.stage(name) as out:
            results[name] = step(settings, as_of, run_id).as_json()
            out["rows"] = int(results[name].get("rows", 0))
    with bench.stage("duckdb floor (merge + eligibility)") as out:
        out["rows"] = duckdb_floor(settings, as_of)
    changed = _change_one_percent(settings, stamp)
    with bench.stage("merge incremental (1% of persons changed)") as out:
        incremental = merge_stage(settings, as_of, f"{run_id}-1pct").as_json()
        out["rows"] = int(incremental["written"]["changed"])
    if incremental["mode"] != "incremental" or incremental["written"]["changed"] != changed:
        raise RuntimeError(
            f"incremental merge did not write exactly the {changed} changed persons: {incremental}"
        )
    with bench.stage("eligibility incremental (1% of persons changed)") as out:
        decided = eligibility_stage(settings, as_of, f"{run_id}-1pct").as_json()
        out["rows"] = int(decided["written"]["opened"])
    day = [
        "merge incremental (1% of persons changed)",
        "eligibility incremental (1% of persons changed)",
    ]
    for name, step in steps[1:]:  # eligibility ran just above
        label = f"{name} incremental (1% of persons changed)"
        with bench.stage(label) as out:
            out["rows"] = int(step(settings, as_of, f"{run_id}-1pct").as_json().get("rows", 0))
        day.append(label)
    full_written = int(results["eligibility"]["written"]["opened"])
    ours = bench.seconds("merge") + bench.seconds("eligibility")
    floor = bench.seconds("duckdb floor (merge + eligibility)")
    side = {
        "sandbox init",
        "duckdb floor (merge + eligibility)",
        "store floor (master rows, bulk path)",
        *day,
    }
    # compute: reading the inputs and computing, without the store writes (the floor writes no store)
    merge_steps, elig_steps = merged.get("seconds", {}), results["eligibility"].get("seconds", {})
    compute = (
        merge_steps.get("read_and_scope", 0)
        + merge_steps.get("merge", 0)
        + elig_steps.get("read", 0)
        + elig_steps.get("evaluate", 0)
    )
    store_write = merge_steps.get("store", 0)
    day_seconds = sum(bench.seconds(s) for s in day)
    cycle_stages = [t for t in bench.timings if t.stage not in side]
    figures: dict[str, Any] = {
        "persons": persons,
        "seed": seed,
        "as_of": str(as_of),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "stages": [asdict(t) for t in bench.timings],
        "cycle_seconds": sum(t.seconds for t in cycle_stages),
        "merge_plus_eligibility_seconds": ours,
        "duckdb_floor_seconds": floor,
        "ratio_to_floor": ours / floor if floor else None,
        "compute_seconds": compute,
        "compute_ratio_to_floor": compute / floor if floor else None,
        "eligibility_seconds_by_step": elig_steps,
        "store_write_seconds": store_write,
        "store_floor": store_floor_figures,
        "store_ratio_to_floor": store_write / store_floor_figures["seconds"],
        "one_percent_day": {
            "seconds": day_seconds,
            "stages": {s: bench.seconds(s) for s in day},
            "share": {s: bench.seconds(s) / day_seconds for s in day},
        },
        "pull_rows_per_second": {
            t.stage.removeprefix("pull "): t.rows / t.seconds
            for t in bench.timings
            if t.stage.startswith("pull ") and t.seconds
        },
        "master_backend": sa_backend(settings.master_url),
        "incremental_merge_seconds": bench.seconds("merge incremental (1% of persons changed)"),
        "incremental_share_of_full": bench.seconds("merge incremental (1% of persons changed)")
        / bench.seconds("merge"),
        "peak_rss_mib": max(t.peak_rss_mib for t in bench.timings),
        # where the merge's time goes: reading the staged batches (and, incremental, finding the scope),
        # the merge itself, the store write (one transaction)
        "merge_seconds_by_step": merged.get("seconds", {}),
        "incremental_seconds_by_step": incremental.get("seconds", {}),
        "incremental_scope": incremental["scope"],
        "incremental_written": incremental["written"],
        # decision versions written: every decision on the first run, only the changed ones after
        "eligibility_incremental_seconds": bench.seconds("eligibility incremental (1% of persons changed)"),
        "decisions_written_full": full_written,
        "decisions_written_incremental": decided["written"],
        "decisions_written_share": int(decided["written"]["opened"]) / full_written if full_written else None,
    }
    write_json_atomic(bench_dir / f"bench-{persons}-{stamp}.json", figures)
    figures["json"] = str(bench_dir / f"bench-{persons}-{stamp}.json")
    return figures
