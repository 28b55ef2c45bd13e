"""`hub explain` on one person: every check, value and filled-in amount agrees with the decisions."""

from __future__ import annotations

from test_eligibility import AS_OF, ZHEJIANG, decide, get, person

from hub.explain import explain
from hub.master_view import RecordView
from transforms.eligibility import load_policy


def test_explain_agrees_with_the_decisions_and_fills_in_the_amount() -> None:
    row = person(dibao_standard=1157.0, death_date=None, hukou_nature=None)
    policy = load_policy(ZHEJIANG, AS_OF)
    shown = explain(RecordView(row["id_number"], row["id_number"], row, []), policy, AS_OF, unmasked=True)
    decided = decide(row)
    assert [s["service"] for s in shown["services"]] == list(policy.services)
    for service in shown["services"]:
        decision = get(decided, service["service"])
        assert service["eligible"] == bool(decision["eligible"])
        assert service["amount"] == float(decision["amount"])
        failed = [c["code"] for c in service["checks"] if not c["passed"]]
        assert ";".join(failed) == decision["reasons"]  # no amount code here: every amount is known
    living = next(s for s in shown["services"] if s["service"] == "living_subsidy")
    assert living["amount_filled"] == "0.3 * 1157.0" and living["amount_computed"] == 347.1
    unknown = next(c for s in shown["services"] for c in s["checks"] if c["code"] == "RESIDENCE_UNKNOWN")
    assert unknown["value"] is None and not unknown["passed"]
    dead = next(
        c for s in shown["services"] if s["service"] == "cert_cancellation_on_death" for c in s["checks"]
    )
    assert dead["code"] == "CERT_NOT_ACTIVE" and dead["value"] is True
