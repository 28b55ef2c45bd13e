"""The per-prefecture cycle (`partitions: prefecture`) against the single one on the same sandbox.

Day 1 runs every DAG through `hub run` in two var directories, one per mode (the partitioned cycle DAG
maps merge and eligibility over the prefectures). The sandbox holds numbers police reissued in another
prefecture than the first one's (the generator puts every second reissue elsewhere). Day 2 adds a police
batch in which persons' 户籍 moved to another prefecture and a number was reissued across prefectures,
and runs the cycle's stages in-process, incremental. Both days the store, the decisions and every partner
file must be the same in both modes (hashes compared).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from run_digests import decisions_digest, partner_files, store_digest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
HUB = [sys.executable, "-m", "hub.cli"]
DAY1 = date(2026, 11, 30)
DAY2 = DAY1 + timedelta(days=1)
MODES = ("none", "prefecture")
# one key for both var directories, so the pseudonymised partner file can be compared byte for byte
KEYS = {"LIANBAN_PSEUDONYM_KEY_CDPF_STATS": "partition-test-key-" + "0" * 32}


def _config(base: Path, mode: str) -> Path:
    path = base / f"config-{mode}.yaml"
    path.write_text(
        (ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8") + f"\npartitions: {mode}\n"
    )
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("partitions")
    out: dict[str, tuple[Path, Path]] = {}
    procs = []
    for mode in MODES:
        var, config = base / mode, _config(base, mode)
        env = {**os.environ, **KEYS, "LIANBAN_VAR": str(var), "LIANBAN_CONFIG": str(config)}
        env.pop("LIANBAN_POLICE_URL", None)
        if not out:  # one sandbox, copied into the other var directory: the same data in both modes
            init = [*HUB, "sandbox", "init", "--persons", "2000", "--seed", "5", "--as-of", DAY1.isoformat()]
            subprocess.run(init, env=env, cwd=ROOT, check=True, capture_output=True)
        else:
            shutil.copytree(base / MODES[0] / "sandbox", var / "sandbox", symlinks=True)
        run = [*HUB, "run", "--date", DAY1.isoformat()]
        procs.append(
            (mode, subprocess.Popen(run, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        )
        out[mode] = (var, config)
    for mode, proc in procs:  # both modes at once: the wall time of one
        log, _ = proc.communicate(timeout=1200)
        assert proc.returncode == 0, f"{mode}: " + log.decode(errors="backslashreplace")[-3000:]
    return out


def _store(var: Path) -> str:
    return f"sqlite:///{var / 'master.sqlite'}"


def _same_everywhere(runs: dict[str, tuple[Path, Path]], run_id: str) -> None:
    (single, _), (parted, _) = runs["none"], runs["prefecture"]
    assert store_digest(_store(parted)) == store_digest(_store(single))
    assert decisions_digest(parted, run_id) == decisions_digest(single, run_id)
    files = partner_files(single, run_id)
    assert len(files) >= 5, files
    assert partner_files(parted, run_id) == files


def _id_changes(var: Path) -> pd.DataFrame:
    engine = sa.create_engine(_store(var))
    with engine.connect() as conn:
        frame = pd.read_sql_table("id_change", conn)
    engine.dispose()
    return frame


def test_day_one_partitioned_dag_equals_single(runs: dict[str, tuple[Path, Path]]) -> None:
    parted = runs["prefecture"][0]
    plan = json.loads((parted / "runs" / f"cycle-{DAY1}" / "parts" / "plan.json").read_text())
    assert len(plan["partitions"]) >= 10 and "other" in plan["partitions"]
    assert not (runs["none"][0] / "runs" / f"cycle-{DAY1}" / "parts").exists()
    changes = _id_changes(parted)
    across = changes[changes["old_id"].str.slice(0, 4) != changes["new_id"].str.slice(0, 4)]
    assert len(across) >= 1, "the sandbox has no number reissued in another prefecture"
    _same_everywhere(runs, f"cycle-{DAY1}")


def _day_two_batch(settings: Any) -> dict[str, str]:
    """A new accepted police batch: 户籍 of a few persons moved to another prefecture, one number reissued
    in another prefecture (police's row under the new number names the old one). Returns old -> new."""
    from core.storage import Storage, write_parquet_atomic
    from sandbox.generator import check_char

    storage = Storage(settings)
    last = storage.last_accepted("police")
    assert last is not None
    police = pd.read_parquet(storage.staged("police", last["batch_id"]) / "accepted.parquet")
    cdpf_last = storage.last_accepted("cdpf")
    assert cdpf_last is not None
    holders = set(
        pd.read_parquet(storage.staged("cdpf", cdpf_last["batch_id"]) / "accepted.parquet")["id_number"]
    )
    local = police[
        police["id_number"].isin(holders).to_numpy()
        & police["former_id_number"].isna().to_numpy()
        & police["id_number"].str.startswith("3301").fillna(False).to_numpy()
    ].sort_values("id_number")
    movers = local["id_number"].iloc[1:40:8]
    hit = police["id_number"].isin(movers).to_numpy()
    police.loc[hit, "hukou_county"] = "330302"  # from a Hangzhou-numbered 户籍 to Wenzhou's 鹿城区
    old = str(local["id_number"].iloc[0])
    first17 = "330602" + old[6:14] + f"{(int(old[14:17]) + 2) % 1000:03d}"  # 绍兴市越城区, same birth and sex
    new = first17 + check_char(first17)
    row = (police["id_number"] == old).to_numpy()
    police.loc[row, "id_number"] = new
    police.loc[row, "former_id_number"] = old
    batch_id = "police-partition-test-day2"
    police["_batch_id"] = batch_id
    write_parquet_atomic(police, storage.private_dir(storage.staged("police", batch_id)) / "accepted.parquet")
    storage.record_batch(batch_id, "police", "partition test", len(police))
    storage.set_verdict(batch_id, "accepted", len(police), 0, note="partition test: moves and a reissue")
    return {old: new}


def _cycle_in_process(settings: Any, mode: str, run_id: str) -> None:
    from stages import partitions
    from stages.eligibility import eligibility_stage
    from stages.exchange import exchange_stage
    from stages.merge import merge_stage

    if mode == "none":
        merge_stage(settings, DAY2, run_id)
        eligibility_stage(settings, DAY2, run_id)
    else:
        found = partitions.merge_plan_stage(settings, DAY2, run_id)
        parts = [partitions.merge_part_stage(settings, DAY2, run_id, p) for p in found]
        merged = partitions.merge_reduce_stage(settings, DAY2, run_id, parts)
        decided = [partitions.eligibility_part_stage(settings, DAY2, run_id, p) for p in merged["partitions"]]
        partitions.eligibility_reduce_stage(settings, DAY2, run_id, decided)
    exchange_stage(settings, DAY2, run_id)


def test_day_two_moves_and_reissue_across_prefectures(
    runs: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.settings import load_settings

    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)
    run_id = f"cycle-{DAY2}"
    reissued: dict[str, str] = {}
    for mode in MODES:
        var, config = runs[mode]
        settings = load_settings(config, var)
        assert settings.partitions == mode
        reissued = _day_two_batch(settings)
        _cycle_in_process(settings, mode, run_id)
        merged = json.loads((var / "runs" / run_id / "merge.json").read_text())
        assert merged["mode"] == "incremental"
    parted = runs["prefecture"][0]
    ((old, new),) = reissued.items()
    assert old[:4] != new[:4]
    changes = _id_changes(parted)
    assert new in set(changes.loc[changes["old_id"] == old, "new_id"])
    plan = json.loads((parted / "runs" / run_id / "parts" / "plan.json").read_text())
    assert plan["incremental"] and new[:4] in plan["partitions"]
    # the old number's cdpf row was planned into the new number's partition, not its own
    cdpf = pd.read_parquet(parted / "runs" / run_id / "parts" / new[:4] / "cdpf.parquet")
    assert old in set(cdpf["id_number"])
    master = pd.read_parquet(parted / "runs" / run_id / "parts" / new[:4] / "merged-master.parquet")
    assert new in set(master["id_number"]) and old not in set(master["id_number"])
    _same_everywhere(runs, run_id)
