"""A fifth department (医保 medical-insurance enrolment) added by configuration and contract files only:
its batch lands through the folder transport, is standardised and validated under its own suite, and
the accepted and quarantined rows go where every department's do. Declared in a master schema (a copy
of schemas/master.yaml the config names) with a precedence entry, it gets its own ingestion DAG on its
schedule, its batch merges into the master with provenance, and its conflict work list is written.
No Python names `medical`."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml
from batch_builders import holders
from test_dag_integrity import _parse
from test_merge import cdpf, police

from core.settings import ROOT, Settings, load_settings
from core.storage import Storage
from stages.exchange import build_exchange
from stages.ingest import pull_stage, validate_stage
from stages.merge import merge_plan_for, merge_stage
from transforms.exchange import exchange_datasets, load_exchange_contracts
from transforms.merge import decode_sources, merge_sources, resolve_precedence

AS_OF = date(2025, 6, 30)
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "medical"


def test_a_fifth_department_lands_and_validates_from_configuration(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8"))
    raw["sources"]["medical"] = {
        "transport": "folder",
        "contract": str(FIXTURES / "medical.yaml"),
        "suite": str(FIXTURES / "medical.json"),
        "path": "{var}/drops/medical",
        "pattern": "medical_*.csv",
        "marker": ".ok",
        "schedule": "30 6 * * 1-5",
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    settings = load_settings(config, var_dir=tmp_path / "var")
    assert "medical" not in settings.merged_sources  # not in the precedence: audit-only by default

    people = holders(11)
    wrong_check = people[10][:17] + ("1" if people[10][17] == "0" else "0")
    kinds = ["职工", "城乡居民"]
    drop = tmp_path / "var" / "drops" / "medical"
    drop.mkdir(parents=True)
    lines = [
        "公民身份号码,姓名,参保类型,更新时间",
        *(f"{p},张三,{kinds[i % 2]},2025-06-01 08:00:00" for i, p in enumerate(people[:10])),
        f"{wrong_check},赵六,城乡居民,2025-06-01 08:00:00",  # a wrong check character
        f"{people[10]},钱七,新农合,2025-06-01 08:00:00",  # a code the contract does not know
    ]
    (drop / "medical_20250630.csv").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    (drop / "medical_20250630.csv.ok").write_bytes(b"")

    landed = pull_stage(settings, "medical", AS_OF)
    assert landed.rows == 12
    staged = validate_stage(settings, "medical", landed.batch_id, AS_OF)
    assert (staged.status, staged.accepted, staged.quarantined) == ("accepted", 10, 2)

    storage = Storage(settings)
    assert storage.last_accepted("medical")["batch_id"] == landed.batch_id  # type: ignore[index]
    folder = storage.staged("medical", landed.batch_id)
    accepted = pd.read_parquet(next(folder.glob("accepted*.parquet")))
    assert sorted(accepted["id_number"]) == sorted(people[:10])
    assert accepted["medical_insurance"].astype(str).value_counts().to_dict() == {
        "employee": 5,
        "resident": 5,
    }
    reasons = pd.read_parquet(folder / "quarantine.parquet")
    assert len(reasons) == 2
    # its suite lives outside the committed GX context: the run added it to the runtime one, which
    # keeps the batch's result (docs/operations.md, Suites)
    runtime = tmp_path / "var" / "gx"
    assert (runtime / "expectations" / "medical.json").is_file()
    assert (runtime / "validation_definitions" / "medical.json").is_file()
    assert list((runtime / "uncommitted" / "validations" / "medical" / landed.batch_id).glob("*/*.json"))
    assert not (ROOT / "gx" / "expectations" / "medical.json").exists()


def test_merging_a_department_the_merge_cannot_read_is_a_config_error(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8"))
    raw["sources"]["medical"] = {
        "transport": "folder",
        "contract": str(FIXTURES / "medical.yaml"),
        "path": "{var}/drops/medical",
        "merge": True,
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ValueError, match=r"config\.yaml: sources\.medical\.merge: the merge reads only"):
        load_settings(config, var_dir=tmp_path / "var")


def test_a_configured_department_gets_its_conflict_work_list() -> None:
    """The work lists follow the departments given (the cycle passes Settings.merged_sources)."""
    from transforms.exchange import exchange_datasets

    people = holders(3)
    master = pd.DataFrame({"id_number": people, "name": ["甲", "乙", "丙"], "hukou_county": ["330106"] * 3})
    decisions = pd.DataFrame(
        {"id_number": people[:1], "service": ["living_subsidy"], "eligible": [True], "amount": [100.0]}
    )
    conflicts = pd.DataFrame(
        {
            "id_number": people,
            "conflict_type": ["NAME_MISMATCH"] * 3,
            "source_a": ["police"] * 3,
            "source_b": ["medical", "cdpf", "medical"],
            "department": ["medical", "cdpf", "medical"],
            "status": ["open", "open", "resolved"],
        }
    )
    datasets = exchange_datasets(master, decisions, conflicts, departments=("cdpf", "medical"))
    assert list(datasets["conflicts_medical"]["id_number"]) == [people[0]]
    assert list(datasets["conflicts_cdpf"]["id_number"]) == [people[1]]
    assert "conflicts_hrss" not in datasets


SCHEDULE = "30 6 * * 1-5"


def _declared(tmp_path: Path) -> Path:
    """A config with medical as a source, in a master schema of its own with a precedence entry."""
    schema = yaml.safe_load((ROOT / "schemas" / "master.yaml").read_text(encoding="utf-8"))
    schema["sources"].append("medical")
    schema["source_codes"]["Y"] = "medical"
    schema["attributes"].append(
        {
            "name": "medical_insurance",
            "kind": "string",
            "sql": "String(16)",
            "carriers": ["medical"],
            "precedence": ["medical"],
        }
    )
    master = tmp_path / "master.yaml"
    master.write_text(yaml.safe_dump(schema, allow_unicode=True, sort_keys=False), encoding="utf-8")
    raw = yaml.safe_load((ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8"))
    raw["master_schema"] = str(master)
    raw["precedence"]["medical_insurance"] = ["medical"]
    raw["sources"]["medical"] = {
        "transport": "folder",
        "contract": str(FIXTURES / "medical.yaml"),
        "suite": str(FIXTURES / "medical.json"),
        "path": "{var}/drops/medical",
        "pattern": "medical_*.csv",
        "marker": ".ok",
        "schedule": SCHEDULE,
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return config


def test_a_declared_fifth_department_gets_its_own_dag_on_its_schedule(tmp_path: Path) -> None:
    parsed = _parse(tmp_path, _declared(tmp_path))
    assert parsed["errors"] == {}
    assert parsed["dags"]["ingest_medical"]["schedule"] == SCHEDULE
    assert parsed["dags"]["ingest_cdpf"]["schedule"] == "0 0 * * *"  # @daily
    # the cycle waits for the departments that feed the master, medical among them
    assert "lianban://staged/medical" in parsed["dags"]["cycle"]["assets"]


def _born(id_number: str) -> str:
    return f"{id_number[6:10]}-{id_number[10:12]}-{id_number[12:14]}"


def _land_medical(settings: Settings, rows: list[tuple[str, str]]) -> str:
    """Drop, pull and validate one medical file; the accepted batch's id."""
    drop = settings.var_dir / "drops" / "medical"
    drop.mkdir(parents=True)
    lines = [
        "公民身份号码,姓名,参保类型,更新时间",
        *(f"{p},张三,{kind},2025-06-01 08:00:00" for p, kind in rows),
    ]
    (drop / "medical_20250630.csv").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    (drop / "medical_20250630.csv.ok").write_bytes(b"")
    landed = pull_stage(settings, "medical", AS_OF)
    staged = validate_stage(settings, "medical", landed.batch_id, AS_OF)
    assert (staged.status, staged.accepted) == ("accepted", len(rows))
    return str(landed.batch_id)


def test_a_declared_fifth_department_merges_under_its_precedence_and_gets_its_work_list(
    tmp_path: Path,
) -> None:
    settings = load_settings(_declared(tmp_path), var_dir=tmp_path / "var")
    assert "medical" in settings.merged_sources
    assert resolve_precedence(settings.precedence, schema=settings.master())["medical_insurance"] == [
        "medical"
    ]

    renewed, kept, unknown, former = holders(4)  # police reissued `former` as `renewed`
    batch = _land_medical(settings, [(former, "城乡居民"), (kept, "职工")])
    storage = Storage(settings)
    accepted = pd.read_parquet(storage.staged("medical", batch) / "accepted.parquet")  # what the cycle reads
    frames = {
        "cdpf": pd.DataFrame(
            [cdpf(id_number=p, cert_number=p + "41", birth_date=_born(p)) for p in (renewed, kept, unknown)]
        ),
        "police": pd.DataFrame(
            [
                police(id_number=renewed, birth_date=_born(renewed), former_id_number=former),
                police(id_number=kept, birth_date=_born(kept), former_id_number=None),
            ]
        ),
        "medical": accepted,
    }
    plan = merge_plan_for(settings)
    result = merge_sources(frames, AS_OF, settings.precedence, settings.region, plan)

    master = result.master.set_index("id_number")
    assert master.loc[renewed, "medical_insurance"] == "resident"  # keyed by the former number: followed
    assert master.loc[kept, "medical_insurance"] == "employee"
    assert pd.isna(master.loc[unknown, "medical_insurance"])
    assert list(master["medical_batch"].fillna("")) == [batch, batch, ""]
    assert decode_sources(master.loc[kept, "sources"], plan)["medical_insurance"] == "medical"
    assert decode_sources(master.loc[unknown, "sources"], plan)["medical_insurance"] is None
    assert decode_sources(master.loc[kept, "sources"], plan)["name"] == "police"  # the others unchanged

    # medical still keys a person by the number police replaced: on medical's work list
    conflicts = result.conflicts.assign(status="open")
    assert conflicts[["id_number", "conflict_type", "department"]].values.tolist() == [
        [renewed, "ID_SUPERSEDED", "medical"]
    ]
    decisions = pd.DataFrame({"id_number": [], "service": [], "eligible": [], "amount": []})
    datasets = exchange_datasets(result.master, decisions, conflicts, departments=settings.merged_sources)
    assert list(datasets["conflicts_medical"]["id_number"]) == [renewed]
    # its partner file: a contract file beside the shipped ones, no code
    contracts = tmp_path / "exchange"
    contracts.mkdir()
    for name in ("purposes.yaml", "police_conflicts.yaml"):
        text = (ROOT / "schemas" / "exchange" / name).read_text(encoding="utf-8")
        (contracts / name.replace("police", "medical")).write_text(
            text.replace("police", "medical").replace("公安", "医疗保障"), encoding="utf-8"
        )
    files = build_exchange(storage, load_exchange_contracts(contracts), datasets, "run-medical", AS_OF)
    (written,) = files
    assert (written.partner, written.rows) == ("medical", 1)
    assert renewed in written.path.read_text(encoding="utf-8-sig")


def test_the_store_refuses_a_master_schema_its_migrations_do_not_hold(tmp_path: Path) -> None:
    """The store keeps its Alembic head's columns: a new master attribute needs its migration first."""
    settings = load_settings(_declared(tmp_path), var_dir=tmp_path / "var")
    with pytest.raises(
        ValueError, match=r"master_schema .*master\.yaml: .*medical_insurance.*Alembic migration"
    ):
        merge_stage(settings, AS_OF, "run-1")
