"""Decisions as changes on tiny frames: hash, comparison with the open versions, transitions, lists, guard."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from transforms.decisions import (
    canonical,
    changed_share,
    decisions_sha256,
    delivery_lists,
    diff,
    transitions,
)

AS_OF = date(2026, 3, 15)


def decisions(rows: list[tuple[str, str, bool, float, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["id_number", "service", "eligible", "amount", "reasons"])
    return frame.assign(period="2026-03", policy="p", policy_version="v").astype(
        {c: "string" for c in ("id_number", "service", "reasons", "period", "policy", "policy_version")}
    )


def open_versions(rows: list[tuple[str, str, bool, float, str]]) -> pd.DataFrame:
    frame = decisions(rows)[["id_number", "service", "eligible", "amount", "reasons"]]
    return frame.assign(version=pd.array([2] * len(frame), dtype="Int64"))


def facts(rows: list[tuple[str, str | None, str, str, str | None]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        rows, columns=["id_number", "death_date", "hukou_status", "cert_status", "cert_valid_until"]
    )
    for c in ("death_date", "cert_valid_until"):
        frame[c] = pd.to_datetime(frame[c])
    return frame


BEFORE = [
    ("A", "living", True, 100.0, ""),
    ("A", "nursing", False, 0.0, "NOT_SEVERE"),
    ("B", "living", True, 100.0, ""),
    ("C", "living", True, 100.0, ""),
    ("D", "living", True, 100.0, ""),
    ("E", "living", False, 0.0, "NOT_LOW_INCOME"),
    ("G", "living", True, 80.0, ""),
]
AFTER = [
    ("A", "living", True, 100.0, ""),  # unchanged
    ("A", "nursing", False, 0.0, "NOT_SEVERE;CERT_INVALID"),  # reasons only: a version, no transition
    ("B", "living", False, 0.0, "NOT_LOCAL_HUKOU"),  # lost: moved out
    ("C", "living", False, 0.0, "CERT_INVALID"),  # lost: died in January
    ("D", "living", True, 120.0, ""),  # amount changed
    ("E", "living", True, 100.0, ""),  # gained
    ("F", "living", True, 50.0, ""),  # new person, eligible
    # G left the master
]
FACTS = facts(
    [
        ("A", None, "normal", "active", "2030-01-01"),
        ("B", None, "moved_out", "active", "2030-01-01"),
        ("C", "2026-01-20", "dead", "active", "2030-01-01"),
        ("D", None, "normal", "active", "2030-01-01"),
        ("E", None, "normal", "active", "2030-01-01"),
        ("F", None, "normal", "active", "2030-01-01"),
    ]
)


def test_the_hash_ignores_row_order_and_sees_every_cent() -> None:
    base = decisions(AFTER)
    shuffled = base.sample(frac=1.0, random_state=3)
    assert decisions_sha256(shuffled) == decisions_sha256(base)
    assert canonical(shuffled)["id_number"].tolist() == base["id_number"].tolist()
    cent = base.copy()
    cent.loc[3, "amount"] += 0.01
    assert decisions_sha256(cent) != decisions_sha256(base)
    noise = base.copy()
    noise.loc[3, "amount"] += 1e-9  # float noise below a fen is the same decision
    assert decisions_sha256(noise) == decisions_sha256(base)


def test_diff_keeps_only_new_changed_and_gone() -> None:
    found = diff(canonical(decisions(AFTER)), open_versions(BEFORE))
    states = dict(
        zip(found.rows["id_number"] + "/" + found.rows["service"], found.rows["state"], strict=True)
    )
    assert states == {
        "A/nursing": "changed",
        "B/living": "changed",
        "C/living": "changed",
        "D/living": "changed",
        "E/living": "changed",
        "F/living": "new",
        "G/living": "gone",
    }
    assert found.unchanged == 1
    same = diff(canonical(decisions(BEFORE)), open_versions(BEFORE))  # the aligned fast path
    assert same.rows.empty and same.unchanged == len(BEFORE)


def test_transitions_carry_reasons_and_effective_months() -> None:
    found = diff(canonical(decisions(AFTER)), open_versions(BEFORE))
    moves = transitions(found, FACTS, AS_OF).set_index("id_number")
    assert set(moves.index) == {"B", "C", "D", "E", "F", "G"}  # A's reason-only change moves no money
    assert moves.loc["B", ["transition", "stop_reason", "effective_month"]].tolist() == [
        "lost",
        "MOVED_OUT",
        "2026-04",
    ]
    # a death stops from the month after the death, even when the master learns of it later
    assert moves.loc["C", ["stop_reason", "effective_month"]].tolist() == ["DEATH", "2026-02"]
    assert moves.loc["D", ["transition", "effective_month"]].tolist() == ["amount_changed", "2026-03"]
    assert moves.loc["D", "amount_before"] == 100.0 and moves.loc["D", "amount"] == 120.0
    assert moves.loc["E", ["transition", "effective_month"]].tolist() == ["gained", "2026-03"]
    assert moves.loc["F", "transition"] == "gained"
    assert moves.loc["G", ["transition", "stop_reason"]].tolist() == ["lost", "NOT_IN_MASTER"]


@pytest.mark.parametrize(
    ("fact", "reason", "month"),
    [
        (("X", None, "missing", "active", "2030-01-01"), "DECLARED_DEATH", "2026-04"),
        (("X", None, "normal", "cancelled", "2030-01-01"), "CERT_CANCELLED", "2026-04"),
        (("X", None, "normal", "active", "2025-11-30"), "CERT_EXPIRED", "2025-12"),
        (("X", None, "normal", "active", "2030-01-01"), "NOT_LOW_INCOME", "2026-04"),
    ],
)
def test_each_stop_event_sets_its_month(fact: tuple, reason: str, month: str) -> None:
    found = diff(
        canonical(decisions([("X", "living", False, 0.0, "NOT_LOW_INCOME")])),
        open_versions([("X", "living", True, 100.0, "")]),
    )
    moves = transitions(found, facts([fact]), AS_OF)
    assert moves[["stop_reason", "effective_month"]].values.tolist() == [[reason, month]]


def test_delivery_lists_are_new_continuing_and_stop() -> None:
    now = canonical(decisions(AFTER))
    moves = transitions(diff(now, open_versions(BEFORE)), FACTS, AS_OF)
    lists = delivery_lists(now, moves)
    assert lists["decisions_new"]["id_number"].tolist() == ["E", "F"]
    continuing = lists["decisions_continuing"].set_index("id_number")
    assert continuing.index.tolist() == ["A", "D"]
    assert continuing["amount_changed"].tolist() == [False, True]
    assert continuing.loc["D", "amount_before"] == 100.0
    stop = lists["decisions_stop"]
    assert stop["id_number"].tolist() == ["B", "C", "G"]
    assert stop["stop_reason"].tolist() == ["MOVED_OUT", "DEATH", "NOT_IN_MASTER"]


def test_changed_share_per_service_and_first_run_exempt() -> None:
    now = canonical(decisions(AFTER))
    moves = transitions(diff(now, open_versions(BEFORE)), FACTS, AS_OF)
    shares = changed_share(now, moves, pd.Series({"living": 6}, dtype="int64")).set_index("service")
    assert shares.loc["living", "changed"] == 6  # B C D E F G
    assert shares.loc["living", "share"] == pytest.approx(6 / 6)
    assert not shares.loc["living", "exempt"]
    assert shares.loc["nursing", "changed"] == 0 and shares.loc["nursing", "exempt"]


@pytest.mark.parametrize(
    ("rule", "issued", "month"),
    [
        (None, "2026-01-10", "2026-03"),  # no rule: the run's month
        (("as_of", False), "2026-01-10", "2026-03"),
        (("as_of", True), "2026-01-10", "2026-04"),  # 自认定次月起
        (("cert_issued", True), "2026-03-10", "2026-04"),  # the month after the certificate
        (("cert_issued", True), "2026-05-20", "2026-06"),  # a certificate dated ahead: after it
        (("cert_issued", False), "2026-05-20", "2026-05"),
        (("cert_issued", True), "2019-06-01", "2026-03"),  # never back-dated before the run's month
        (("cert_issued", True), None, "2026-03"),  # an unknown date: the run's month
    ],
)
def test_a_start_takes_effect_by_its_service_rule(rule: tuple | None, issued: str | None, month: str) -> None:
    found = diff(
        canonical(decisions([("X", "living", True, 100.0, ""), ("X", "nursing", True, 50.0, "")])),
        open_versions(
            [("X", "living", False, 0.0, "NOT_LOW_INCOME"), ("X", "nursing", False, 0.0, "NOT_SEVERE")]
        ),
    )
    known = facts([("X", None, "normal", "active", "2030-01-01")]).assign(
        cert_issued=pd.to_datetime([issued])
    )
    moves = transitions(found, known, AS_OF, {"living": rule} if rule else None).set_index("service")
    assert moves.loc["living", ["transition", "effective_month"]].tolist() == ["gained", month]
    assert moves.loc["nursing", "effective_month"] == "2026-03"  # a service without a rule: the run's month
