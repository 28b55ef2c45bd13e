"""The independent oracle against the hub at a larger size: every service, person by person.

`make test` compares them at 2,000 persons through the real DAGs (tests/e2e/test_cycle.py); this test
runs the same stages in-process at 50,000 persons, where rarer combinations of facts occur (two
wheelchairs, a birthday on the run date, a death in the run's month). Marked `slow`, so left out by
default: `pytest -m slow`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PERSONS = 50_000


def test_every_decision_matches_the_oracle_at_50000_persons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.settings import load_settings
    from hub.run import side_services
    from sandbox.generator import init_sandbox
    from stages.eligibility import eligibility_stage
    from stages.ingest import pull_stage, validate_stage
    from stages.merge import merge_stage
    from transforms.eligibility import load_policy

    var = tmp_path / "var"
    monkeypatch.setenv("LIANBAN_VAR", str(var))
    monkeypatch.delenv("LIANBAN_POLICE_URL", raising=False)
    settings = load_settings(var_dir=var)
    info = init_sandbox(settings, persons=PERSONS, seed=11)
    as_of, run_id = info.as_of, f"scale-{info.as_of}"
    with side_services(settings):
        for source in settings.sources:
            landed = pull_stage(settings, source, as_of)
            validate_stage(settings, source, landed.batch_id, as_of)
    merge_stage(settings, as_of, run_id, full=True)
    decided = eligibility_stage(settings, as_of, run_id)

    truth = pd.read_csv(info.truth_dir / "decisions.csv", dtype={"id_number": str})
    got = pd.read_parquet(decided.path)
    merged = truth.merge(
        got[["id_number", "service", "eligible", "amount"]],
        on=["id_number", "service"],
        how="outer",
        suffixes=("_truth", "_hub"),
        indicator=True,
    )
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"].head(10).to_string()
    wrong = merged[
        (merged["eligible_truth"].astype(bool) != merged["eligible_hub"].astype(bool))
        | ((merged["amount_truth"] - merged["amount_hub"]).abs() > 0.005)
    ]
    assert wrong.empty, f"{len(wrong)} decisions differ, e.g.\n{wrong.head(10).to_string()}"
    policy = load_policy(settings.path(settings.policy), as_of)
    per_service = merged.groupby("service")["eligible_truth"].agg(["sum", "count"])
    assert set(per_service.index) == set(policy.services)
    assert (per_service["sum"] >= 30).all() and (per_service["sum"] < per_service["count"]).all()
