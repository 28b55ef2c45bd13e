"""A fifth department (医保 medical-insurance enrolment) added by configuration and contract files only:
its batch lands through the folder transport, is standardised and validated under its own suite, and
the accepted and quarantined rows go where every department's do. No Python names `medical`."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml
from batch_builders import holders

from core.settings import ROOT, load_settings
from core.storage import Storage
from stages.ingest import pull_stage, validate_stage

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
    assert accepted["insurance_type"].astype(str).value_counts().to_dict() == {"employee": 5, "resident": 5}
    reasons = pd.read_parquet(folder / "quarantine.parquet")
    assert len(reasons) == 2


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
