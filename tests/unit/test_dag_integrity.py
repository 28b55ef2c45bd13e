"""Every DAG imports cleanly, follows the house rules, and parses without I/O or heavy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter so modules imported by other tests do not hide a parse-time import.
PROBE = textwrap.dedent(
    """
    import json, os, socket, sqlite3, sys, time
    os.environ["AIRFLOW_HOME"] = sys.argv[2]
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = "sqlite:///" + sys.argv[2] + "/never-created.db"
    import airflow.sdk  # noqa: F401  (Airflow itself may import what it likes)
    from airflow.dag_processing.dagbag import DagBag

    before = set(sys.modules)
    touched = []
    def refuse(*args, **kwargs):
        touched.append(repr(args[:2]))
        raise RuntimeError("I/O at DAG parse time")
    socket.socket.connect = refuse
    sqlite3.connect = refuse
    started = time.perf_counter()
    bag = DagBag(sys.argv[1])
    elapsed = time.perf_counter() - started
    heavy = sorted({m.split(".")[0] for m in set(sys.modules) - before}
                   & {"pandas", "pyarrow", "great_expectations", "paramiko", "requests", "duckdb", "sandbox"})
    dags = {
        dag_id: {
            "tags": sorted(dag.tags),
            "catchup": dag.catchup,
            "doc_md": bool(dag.doc_md),
            "retries": {t.task_id: t.retries for t in dag.tasks},
            "tasks": sorted(t.task_id for t in dag.tasks),
            "schedule": getattr(dag.timetable, "expression", None),
            "assets": sorted(a.uri for a in getattr(dag.timetable.asset_condition, "objects", [])),
        }
        for dag_id, dag in bag.dags.items()
    }
    print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags,
                      "heavy": heavy, "touched": touched, "seconds": elapsed}))
    """
)


def _parse(tmp_path: Path, config: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LIANBAN_CONFIG"}
    if config is not None:
        env["LIANBAN_CONFIG"] = str(config)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT / "dags"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dags_parse_cleanly_without_io(tmp_path: Path) -> None:
    result = _parse(tmp_path)
    assert result["errors"] == {}
    assert set(result["dags"]) == {
        "ingest_cdpf",
        "ingest_cdpf_survey",
        "ingest_civil",
        "ingest_civil_payments",
        "ingest_hrss",
        "ingest_police",
        "cycle",
    }
    assert result["touched"] == [], "a DAG file opened a socket or a database while parsing"
    assert result["heavy"] == [], f"heavy modules imported at parse time: {result['heavy']}"
    assert result["seconds"] < 5


def test_dags_follow_house_rules(tmp_path: Path) -> None:
    dags = _parse(tmp_path)["dags"]
    for dag_id, dag in dags.items():
        assert dag["catchup"] is False, dag_id
        assert dag["doc_md"], f"{dag_id} has no doc_md"
        assert "lianban" in dag["tags"], dag_id
        # One retry policy: a pull is retried by its connector only (Airflow would multiply the
        # attempts), a drop wait by its deadline; `fresh` is a verdict, not work. Every other task
        # is retried by Airflow.
        for task_id, retries in dag["retries"].items():
            if task_id in {"pull", "fresh", "wait"}:
                assert retries == 0, f"{dag_id}.{task_id} retries in Airflow and in its client"
            else:
                assert retries >= 1, f"{dag_id}.{task_id} has no retries"
    assert dags["cycle"]["tasks"] == ["audit", "deliver", "eligibility", "exchange", "merge", "report"]
    for source in ("cdpf", "civil", "police", "cdpf_survey"):
        assert dags[f"ingest_{source}"]["tasks"] == ["fresh", "pull", "stage"]
    for source in ("hrss", "civil_payments"):  # drop folders with a configured wait
        assert dags[f"ingest_{source}"]["tasks"] == ["fresh", "pull", "stage", "wait"]
    for source in ("cdpf", "civil", "hrss", "police", "civil_payments", "cdpf_survey"):
        assert dags[f"ingest_{source}"]["schedule"] == "0 0 * * *"  # @daily
    # the cycle waits on the sources that feed the master, never on the audit-only ones
    assert dags["cycle"]["assets"] == [f"lianban://staged/{s}" for s in ("cdpf", "civil", "hrss", "police")]


def test_a_configured_department_gets_its_dag_and_schedule(tmp_path: Path) -> None:
    """A fifth department declared in the config alone appears with its own schedule; no DAG file is
    written for it. Not feeding the master, it does not trigger the cycle."""
    import yaml

    raw = yaml.safe_load((ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8"))
    raw["sources"]["medical"] = {
        "transport": "folder",
        "contract": "tests/fixtures/medical/medical.yaml",
        "path": "{var}/drops/medical",
        "pattern": "medical_*.csv",
        "schedule": "30 6 * * 1-5",
    }
    config = tmp_path / "medical.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    result = _parse(tmp_path, config)
    assert result["errors"] == {}
    dags = result["dags"]
    assert dags["ingest_medical"]["schedule"] == "30 6 * * 1-5"
    assert dags["ingest_medical"]["tasks"] == ["fresh", "pull", "stage"]
    assert dags["ingest_hrss"]["schedule"] == "0 0 * * *"
    assert dags["cycle"]["assets"] == [f"lianban://staged/{s}" for s in ("cdpf", "civil", "hrss", "police")]


def test_partitioned_cycle_maps_merge_and_eligibility_over_prefectures(tmp_path: Path) -> None:
    """`partitions: prefecture`: plan, one mapped task per prefecture, reduce, for merge and eligibility;
    still parsed without I/O (the prefectures are found at run time, by the plan)."""
    import yaml

    raw = yaml.safe_load((ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8"))
    raw["partitions"] = "prefecture"
    config = tmp_path / "partitioned.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    result = _parse(tmp_path, config)
    assert result["errors"] == {} and result["touched"] == [] and result["heavy"] == []
    cycle = result["dags"]["cycle"]
    assert cycle["tasks"] == [
        "audit",
        "deliver",
        "eligibility_part",
        "eligibility_reduce",
        "exchange",
        "merge_part",
        "merge_plan",
        "merge_reduce",
        "partitions_of",
        "report",
    ]
    assert all(retries >= 1 for retries in cycle["retries"].values())
