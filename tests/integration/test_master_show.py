"""`hub master show` through typer's CliRunner, against a store filled with two merges and an ID change."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from master_frames import (
    DAY1,
    DAY2,
    Result,
    build_master,
    first_merge,
    rehash,
)
from typer.testing import CliRunner

from core.masking import mask_id
from hub.cli import app
from store.master_store import MasterStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def filled(store_url: str, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A config pointing at a store where person 4 changed employment and person 6 got a new ID number."""
    raw = yaml.safe_load((ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8"))
    raw["master_url"] = store_url
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")

    store = MasterStore(store_url)
    first = first_merge(10)
    store.apply_merge(first, "run-1", DAY1)
    master = first.master.copy()
    master.loc[4, ["employment", "hrss_batch"]] = ["retired", "hrss-b2"]
    newcomer = build_master(1, start=7000).iloc[0]
    old_id = master.loc[6, "id_number"]
    master.loc[6, ["id_number", "cert_number", "police_batch"]] = [
        newcomer["id_number"],
        newcomer["cert_number"],
        "police-b2",
    ]
    master = rehash(master).sort_values("id_number").reset_index(drop=True)
    changes = pd.DataFrame(
        {
            "old_id": [old_id],
            "new_id": [newcomer["id_number"]],
            "source": ["police"],
            "batch_id": ["police-b2"],
        }
    ).astype("string")
    store.apply_merge(Result(master, first.conflicts, changes), "run-2", DAY2)
    store.dispose()
    people = {
        "changed": str(first.master.loc[4, "id_number"]),
        "changed_name": str(first.master.loc[4, "name"]),
        "changed_cert": str(first.master.loc[4, "cert_number"]),
        "old": str(old_id),
        "new": str(newcomer["id_number"]),
    }
    return config, people


def _show(config: Path, tmp_path: Path, *args: str) -> tuple[int, str]:
    runner = CliRunner()
    env = {"LIANBAN_VAR": str(tmp_path / "var"), "COLUMNS": "200"}
    result = runner.invoke(app, ["master", "show", *args, "--config", str(config)], env=env)
    return result.exit_code, result.output


def test_show_prints_the_record_as_it_stood_masked(
    filled: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    config, p = filled
    code, out = _show(config, tmp_path, p["changed"])
    assert code == 0, out
    assert p["changed"] not in out and p["changed_cert"] not in out and p["changed_name"] not in out
    assert mask_id(p["changed"]) in out and mask_id(p["changed_cert"]) in out
    assert p["changed_name"][0] + "*" in out
    assert "version 2" in out and "valid 2026-04-01 → now (current); caused by hrss-b2; run run-2" in out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 4}
    assert (
        "retired" in lines["employment"]
        and "hrss" in lines["employment"]
        and "hrss-b2" in lines["employment"]
    )
    assert "police" in lines["name"] and "police-b1" in lines["name"]
    assert "cdpf" in lines["level"] and "cdpf-b1" in lines["level"]
    assert not (tmp_path / "var" / "state" / "audit.jsonl").exists()

    code, out = _show(config, tmp_path, p["changed"], "--as-of", "2026-03-15")
    assert code == 0, out
    assert "version 1" in out and "valid 2026-03-01 → 2026-04-01" in out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 4}
    assert "retired" not in lines["employment"]


def test_show_unmasked_prints_raw_values_and_audits_without_the_id(
    filled: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    config, p = filled
    code, out = _show(config, tmp_path, p["changed"], "--unmasked")
    assert code == 0, out
    assert p["changed"] in out and p["changed_cert"] in out and p["changed_name"] in out
    audit = (tmp_path / "var" / "state" / "audit.jsonl").read_text(encoding="utf-8")
    entry = json.loads(audit.splitlines()[-1])
    assert entry["event"] == "unmasked_display" and entry["user"] and entry["at"]
    assert p["changed"] not in audit and p["changed"][-4:] not in audit


def test_show_follows_an_id_change(filled: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    config, p = filled
    code, out = _show(config, tmp_path, p["old"])
    assert code == 0, out
    assert f"ID changed from {mask_id(p['old'])} to {mask_id(p['new'])}" in out
    assert f"master record {mask_id(p['new'])}, version 1" in out
    # before the change the old number's own record is what stood
    code, out = _show(config, tmp_path, p["old"], "--as-of", "2026-03-02")
    assert code == 0, out
    assert f"master record {mask_id(p['old'])}, version 1" in out and "ID changed" not in out


def test_show_explains_unknown_and_malformed_ids(filled: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    config, p = filled
    unknown = build_master(1, start=9000).loc[0, "id_number"]
    code, out = _show(config, tmp_path, unknown)
    assert code == 1 and "is not in the master file" in out and unknown not in out
    code, out = _show(config, tmp_path, p["changed"], "--as-of", "2025-01-01")
    assert code == 1 and "was not in the master file on 2025-01-01" in out
    broken = p["changed"][:-1] + ("0" if p["changed"][-1] != "0" else "1")
    code, out = _show(config, tmp_path, broken)
    assert code == 2 and "ID_CHECKSUM" in out and broken not in out
    code, out = _show(config, tmp_path, p["changed"], "--as-of", "yesterday")
    assert code == 2 and "YYYY-MM-DD" in out
