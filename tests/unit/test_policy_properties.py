"""Property tests (hypothesis) of the bundle policy over random masters: the engine agrees with the oracle
person by person, and the rules every policy must keep hold whatever the facts."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from test_eligibility import master, person

from sandbox.oracle import (
    Assistance,
    PersonFacts,
    decide_bundle,
    load_bundle_parameters,
    load_parameters,
)
from transforms.eligibility import evaluate, load_policy

ROOT = Path(__file__).resolve().parents[2]
ZHEJIANG = ROOT / "policies" / "zhejiang.yaml"
HUBEI = ROOT / "policies" / "hubei.yaml"
PAID = ["living_subsidy", "nursing_subsidy", "medical_insurance_subsidy", "pension_contribution"]
RUNS = settings(max_examples=25, deadline=None)  # about 10 s in all on the shared machine

days = st.dates(min_value=date(1930, 1, 1), max_value=date(2040, 12, 31))
facts = st.fixed_dictionaries(
    {
        "birth_date": st.one_of(
            st.none(), st.dates(min_value=date(1930, 1, 1), max_value=date(2024, 12, 31))
        ),
        "death_date": st.one_of(st.none(), st.none(), days),
        "hukou_status": st.sampled_from([None, "normal", "normal", "dead", "moved_out", "missing"]),
        "hukou_county": st.sampled_from([None, "330106", "330106", "331081", "420102", "110105"]),
        "category": st.integers(1, 7),
        "level": st.integers(1, 4),
        "cert_status": st.sampled_from(["active", "active", "cancelled", "suspended"]),
        "cert_valid_until": days,
        "needs_long_term_care": st.booleans(),
        "institutional_care": st.booleans(),
        "dibao": st.booleans(),
        "dibao_edge": st.booleans(),
        "tekun": st.booleans(),
        "orphan_support": st.booleans(),
        "dibao_standard": st.sampled_from([1000.0, 1085.0, 1157.0, 1001.11]),
        "pension_type": st.sampled_from([None, "resident", "employee", "none"]),
        "work_injury_care": st.booleans(),
    }
)
as_of_dates = st.dates(min_value=date(2016, 1, 1), max_value=date(2035, 12, 31))


def frame_of(rows: list[dict[str, Any]]) -> pd.DataFrame:
    people = [person(id_number=f"{i:018d}", **r) for i, r in enumerate(rows)]
    return master(*[{k: (v.isoformat() if isinstance(v, date) else v) for k, v in p.items()} for p in people])


def oracle_facts(i: int, r: dict[str, Any]) -> PersonFacts:
    kinds = [k for k in ("dibao", "dibao_edge", "tekun") if r[k]] + (
        ["orphan"] if r["orphan_support"] else []
    )
    standard = Decimal(str(r["dibao_standard"]))
    return PersonFacts(
        id_number=f"{i:018d}",
        category=r["category"],
        level=r["level"],
        cert_status=r["cert_status"],
        cert_valid_until=r["cert_valid_until"],
        needs_long_term_care=r["needs_long_term_care"],
        institutional_care=r["institutional_care"],
        hukou_status=r["hukou_status"],
        hukou_county=r["hukou_county"],
        assistance=tuple(Assistance(k, standard, date(2000, 1, 1), None, True) for k in kinds),
        work_injury_care=r["work_injury_care"],
        birth_date=r["birth_date"],
        death_date=r["death_date"],
        pension_type=r["pension_type"],
    )


@RUNS
@given(rows=st.lists(facts, min_size=1, max_size=25), as_of=as_of_dates)
def test_engine_agrees_with_the_oracle_on_every_service(rows: list[dict[str, Any]], as_of: date) -> None:
    got = evaluate(frame_of(rows), load_policy(ZHEJIANG, as_of), as_of)
    params, bundle = load_parameters(ZHEJIANG, as_of), load_bundle_parameters(ZHEJIANG, as_of)
    expected = {
        (d.id_number, d.service): (d.eligible, float(d.amount))
        for i, r in enumerate(rows)
        for d in decide_bundle(oracle_facts(i, r), as_of, params, bundle)
    }
    found = {
        (i, s): (bool(e), float(a))
        for i, s, e, a in zip(got["id_number"], got["service"], got["eligible"], got["amount"], strict=True)
    }
    assert found == expected


@RUNS
@given(rows=st.lists(facts, min_size=1, max_size=25), as_of=as_of_dates)
def test_invariants_of_the_bundle(rows: list[dict[str, Any]], as_of: date) -> None:
    data = frame_of(rows)
    policy = load_policy(ZHEJIANG, as_of)
    d = evaluate(data, policy, as_of).merge(data[["id_number", "death_date", "tekun"]], on="id_number")
    # amounts never negative; no amount without eligibility
    assert (d["amount"] >= 0).all()
    assert (d.loc[~d["eligible"], "amount"] == 0).all()
    # never eligible for a paid service after the month of death
    month = pd.Timestamp(as_of).to_period("M")
    after_death = d["death_date"].notna() & (d["death_date"].dt.to_period("M") < month)
    assert not d.loc[after_death & d["service"].isin(PAID), "eligible"].any()
    # 特困供养 excludes both subsidies
    both = d["service"].isin(["living_subsidy", "nursing_subsidy"])
    assert not d.loc[d["tekun"] & both, "eligible"].any()


@RUNS
@given(rows=st.lists(facts, min_size=1, max_size=25), as_of=as_of_dates)
def test_orphan_support_keeps_the_nursing_subsidy_only(rows: list[dict[str, Any]], as_of: date) -> None:
    policy = load_policy(ZHEJIANG, as_of)
    without = evaluate(frame_of([{**r, "orphan_support": False} for r in rows]), policy, as_of)
    with_support = evaluate(frame_of([{**r, "orphan_support": True} for r in rows]), policy, as_of)
    living = with_support["service"] == "living_subsidy"
    assert not with_support.loc[living, "eligible"].any()
    pd.testing.assert_frame_equal(
        with_support[~living].reset_index(drop=True), without[~living].reset_index(drop=True)
    )


@RUNS
@given(as_of=st.dates(min_value=date(2019, 12, 1), max_value=date(2020, 9, 30)))
def test_period_boundaries_adjustment_inclusive_on_both_ends(as_of: date) -> None:
    row = person(id_number="420102198001010014", hukou_county="420102", cert_valid_until="2099-01-01")
    d = evaluate(master(row), load_policy(HUBEI, as_of), as_of).set_index("service")["amount"]
    raised = date(2020, 3, 1) <= as_of <= date(2020, 6, 30)
    assert d["living_subsidy"] == 50 + 50 * raised and d["nursing_subsidy"] == 100 + 50 * raised


@RUNS
@given(as_of=as_of_dates, offset=st.integers(-3, 120))
def test_certificate_boundaries(as_of: date, offset: int) -> None:
    """Valid through valid_until inclusive; the reminder from 90 days before it; expired the day after."""
    row = person(cert_valid_until=(as_of + timedelta(days=offset)).isoformat())
    d = evaluate(master(row), load_policy(ZHEJIANG, as_of), as_of).set_index("service")["eligible"]
    assert bool(d["living_subsidy"]) is (offset >= 0)
    assert bool(d["cert_renewal_reminder"]) is (0 <= offset <= 90)
    assert bool(d["cert_expired"]) is (offset < 0)
