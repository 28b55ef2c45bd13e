"""Decisions as changes: compare a run's decisions with the versions in force, find the transitions.

The eligibility stage evaluates every person x service each run (cheap and vectorised), but the store
keeps a decision version only while the decision (eligible, amount, reasons) stays the same. This
module holds the pure, vectorised parts: the canonical form and SHA-256 of a run's decisions (the
reproducibility check), the comparison with the open versions, the transitions (gained, lost,
amount changed) with their effective month, the new / continuing / stop lists the paying
departments receive, and the share of persons changed per service (the mass-change guard).
Nothing here knows how many services a policy has: every function works per (person, service) row.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

KEY = ["id_number", "service"]
VALUE = ["eligible", "amount", "reasons"]
# the decision columns the hash covers, in this order (transforms.eligibility.DECISION_COLUMNS)
HASHED = ["id_number", "service", "period", "eligible", "amount", "reasons", "policy", "policy_version"]
# master facts a stop's effective month depends on (read beside the policy's own columns)
STOP_FACTS = ["death_date", "hukou_status", "cert_status", "cert_valid_until"]
TRANSITION_COLUMNS = [
    "id_number",
    "service",
    "transition",
    "effective_month",
    "eligible_before",
    "amount_before",
    "eligible",
    "amount",
    "reasons",
    "stop_reason",
]
GAINED, LOST, AMOUNT_CHANGED = "gained", "lost", "amount_changed"
NOT_IN_MASTER = "NOT_IN_MASTER"


def _arrow_text(values: pd.Series) -> pa.Array:
    """A text column as one Arrow string array (zero-copy for Arrow-backed pandas strings)."""
    arrow = pa.array(values.astype("string"))
    if isinstance(arrow, pa.ChunkedArray):
        arrow = arrow.combine_chunks()
    return arrow.cast(pa.string())


def canonical(decisions: pd.DataFrame) -> pd.DataFrame:
    """The decisions sorted by (id_number, service) with a fresh index: one order for hashing and files."""
    ids = decisions["id_number"].astype("string")
    services = decisions["service"].astype("string")
    ordered = bool(ids.is_monotonic_increasing) and not bool(
        ((ids.shift(1) == ids).fillna(False) & (services.shift(1) >= services).fillna(False)).any()
    )
    if ordered:
        return decisions.reset_index(drop=True)
    return decisions.sort_values(KEY, kind="stable").reset_index(drop=True)


def decisions_sha256(decisions: pd.DataFrame) -> str:
    """SHA-256 of the decisions in canonical order, serialised as CSV with amounts in integer fen.

    Integer fen, not float text, so the same decision always gives the same bytes whatever printed
    the float; the columns are HASHED, in that order, so an added column never changes the hash.
    """
    rows = canonical(decisions)
    fen = np.round(rows["amount"].astype("float64").to_numpy() * 100).astype(np.int64)
    table = pa.table(
        {
            **{c: _arrow_text(rows[c]) for c in HASHED},
            "eligible": pa.array(rows["eligible"].to_numpy(dtype=bool)),
            "amount": pa.array(fen),
        }
    ).select(HASHED)
    buffer = io.BytesIO()
    pacsv.write_csv(table.combine_chunks(), buffer, pacsv.WriteOptions(include_header=True))
    return hashlib.sha256(buffer.getvalue()).hexdigest()


@dataclass(frozen=True)
class DecisionDiff:
    """A run's decisions against the versions open before it.

    `rows`: one row per (person, service) whose decision is new, changed or gone (the key, the state,
    the values before and after); `unchanged`: how many stayed the same.
    """

    rows: pd.DataFrame
    unchanged: int
    open_before: pd.Series  # open versions per service before the run (none: the store's first run)

    def state(self, *states: str) -> pd.DataFrame:
        return self.rows[self.rows["state"].isin(states)]


def _same_keys(new: pd.DataFrame, old: pd.DataFrame) -> bool:
    if len(new) != len(old):
        return False
    return all(
        bool(pc.all(pc.equal(_arrow_text(new[c]), _arrow_text(old[c]))).as_py() or len(new) == 0) for c in KEY
    )


def diff(new: pd.DataFrame, open_versions: pd.DataFrame) -> DecisionDiff:
    """Compare decisions (canonical order) with the open versions (id_number, service and VALUE).

    Row by row when both hold the same keys in the same order (every run without new or gone
    persons), else through one outer join. A decision is changed when eligible, amount (to the fen)
    or reasons differ.
    """
    old = open_versions.reset_index(drop=True)
    if _same_keys(new, old):
        joined = new[KEY + VALUE].reset_index(drop=True).copy()
        for c in VALUE:
            joined[f"{c}_before"] = old[c].to_numpy()
        state = np.full(len(joined), "both", dtype=object)
    else:
        joined = new[KEY + VALUE].merge(
            old[[*KEY, *VALUE]].rename(columns={c: f"{c}_before" for c in VALUE}),
            on=KEY,
            how="outer",
            indicator=True,
        )
        state = joined.pop("_merge").map({"left_only": "new", "right_only": "gone", "both": "both"})
        state = state.astype(object).to_numpy()
    both = state == "both"
    eligible_now = joined["eligible"].astype("boolean")
    eligible_was = joined["eligible_before"].astype("boolean")
    fen_now = (joined["amount"].astype("Float64") * 100).round()
    fen_was = (joined["amount_before"].astype("Float64") * 100).round()
    reasons_now = joined["reasons"].astype("string")
    reasons_was = joined["reasons_before"].astype("string")
    changed = (
        (eligible_now != eligible_was).fillna(True)
        | (fen_now != fen_was).fillna(True)
        | (reasons_now != reasons_was).fillna(True)
    ).to_numpy(dtype=bool)
    state = np.where(both & changed, "changed", state)
    keep = state != "both"
    rows = joined.assign(state=state)[keep].reset_index(drop=True)
    rows["eligible"] = rows["eligible"].astype("boolean")
    rows["eligible_before"] = rows["eligible_before"].astype("boolean")
    rows["amount"] = rows["amount"].astype("Float64")
    rows["amount_before"] = rows["amount_before"].astype("Float64")
    for c in ("id_number", "service", "reasons", "reasons_before", "state"):
        rows[c] = rows[c].astype("string")
    counted = pc.value_counts(_arrow_text(old["service"])) if len(old) else None
    open_before = (
        pd.Series(dtype="int64")
        if counted is None
        else pd.Series(
            counted.field("counts").to_numpy(), index=counted.field("values").to_pylist(), dtype="int64"
        )
    )
    return DecisionDiff(rows=rows, unchanged=int((~keep).sum()), open_before=open_before)


def _next_month(days: pd.Series) -> pd.Series:
    """'YYYY-MM' of the month after each day."""
    stamps = pd.to_datetime(days, errors="coerce")
    return (stamps.dt.to_period("M") + 1).astype("string")


def transitions(
    changes: DecisionDiff,
    facts: pd.DataFrame,
    as_of: date,
    starts: Mapping[str, tuple[str, bool]] | None = None,
) -> pd.DataFrame:
    """Gained, lost (with the reason) and amount changed, each with its effective month (YYYY-MM).

    Amount changes take effect in the month of the run's date; so do starts, unless `starts` gives the
    service's rule (service -> (date column of `facts` or "as_of", from the next month)): the month of
    that date or the one after, never before the run's month. A stop takes effect from the
    month after its event: the death date (or the run date when police reports a death without one),
    declared death or missing person, 户籍 moved out of the province, certificate cancelled (the run
    date: the master carries no event date for these), or the certificate's valid-until date when it
    expired. Any other stop (no longer low income, say) takes effect from the month after the run
    date, with the failed reason codes as its reason; a person who left the master: NOT_IN_MASTER.
    `facts`: the master's id_number and STOP_FACTS for the persons evaluated.
    """
    rows = changes.rows
    now = rows["eligible"].fillna(False).to_numpy(dtype=bool)
    was = rows["eligible_before"].fillna(False).to_numpy(dtype=bool)
    fen_now = (rows["amount"] * 100).round()
    fen_was = (rows["amount_before"] * 100).round()
    moved = (fen_now != fen_was).fillna(True).to_numpy(dtype=bool)
    kind = np.select([now & ~was, was & ~now, now & was & moved], [GAINED, LOST, AMOUNT_CHANGED], "")
    out = rows[kind != ""].reset_index(drop=True)
    kind = kind[kind != ""]
    out["transition"] = pd.array(kind, dtype="string")
    month = f"{as_of:%Y-%m}"
    run_day = pd.Timestamp(as_of)
    dated = sorted({c for c, _ in (starts or {}).values() if c != "as_of"} - set(STOP_FACTS))
    f = facts[["id_number", *STOP_FACTS, *dated]].drop_duplicates("id_number")
    f = out[["id_number"]].merge(f, on="id_number", how="left")
    status = f["hukou_status"].astype("string")
    cert = f["cert_status"].astype("string")
    death = pd.to_datetime(f["death_date"], errors="coerce")
    until = pd.to_datetime(f["cert_valid_until"], errors="coerce")
    gone = (out["state"] == "gone").to_numpy(dtype=bool)
    events = [
        (gone, NOT_IN_MASTER, run_day),
        (death.notna().to_numpy(), "DEATH", death),
        ((status == "dead").fillna(False).to_numpy(dtype=bool), "DEATH", run_day),
        ((status == "missing").fillna(False).to_numpy(dtype=bool), "DECLARED_DEATH", run_day),
        ((status == "moved_out").fillna(False).to_numpy(dtype=bool), "MOVED_OUT", run_day),
        ((cert == "cancelled").fillna(False).to_numpy(dtype=bool), "CERT_CANCELLED", run_day),
        ((until < run_day).fillna(False).to_numpy(dtype=bool), "CERT_EXPIRED", until),
    ]
    failed = out["reasons"].fillna("").astype(str).to_numpy(dtype=object)
    conditions = [c for c, _, _ in events]
    reason = np.select(conditions, [np.full(len(out), r, dtype=object) for _, r, _ in events], failed)
    on_run_day = np.full(len(out), run_day.to_datetime64(), dtype="datetime64[ns]")
    days = [
        w.to_numpy(dtype="datetime64[ns]") if isinstance(w, pd.Series) else on_run_day for *_, w in events
    ]
    day = pd.Series(np.select(conditions, days, on_run_day), index=out.index)
    lost = kind == LOST
    out["stop_reason"] = pd.Series(reason, index=out.index, dtype="string").where(lost)
    begin = _start_months(out, f, starts or {}, as_of)
    effective = np.where(lost, _next_month(day).to_numpy(dtype=object), month)
    out["effective_month"] = pd.array(np.where(kind == GAINED, begin, effective), dtype="string")
    return out[TRANSITION_COLUMNS]


def _start_months(
    out: pd.DataFrame, facts: pd.DataFrame, starts: Mapping[str, tuple[str, bool]], as_of: date
) -> np.ndarray:
    """'YYYY-MM' a gained service starts in, per row of `out` (facts aligned with it), by its service's rule."""
    run_month = pd.Period(as_of, freq="M")
    begin = np.full(len(out), str(run_month), dtype=object)
    service = out["service"].astype("string")
    for name, (column, next_month) in starts.items():
        rows = (service == name).fillna(False).to_numpy(dtype=bool)
        if not rows.any():
            continue
        if column == "as_of":
            day = pd.Series(pd.Timestamp(as_of), index=out.index[rows])
        else:
            day = pd.to_datetime(facts[column][rows], errors="coerce")
        months = day.dt.to_period("M") + int(next_month)
        # an unknown date starts in the run's month, and no start is back-dated before it
        later = months.notna().to_numpy(dtype=bool) & (months > run_month).fillna(False).to_numpy(dtype=bool)
        begin[rows] = np.where(later, months.astype("string").to_numpy(dtype=object), str(run_month))
    return begin


def delivery_lists(decisions: pd.DataFrame, moves: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The paying departments' lists: new (gained), continuing (eligible, not new) and stop (lost).

    Continuing rows carry amount_changed and amount_before so a department sees a changed amount in
    the same list; every list has the effective month.
    """
    eligible = decisions[decisions["eligible"].astype(bool)]
    keyed = moves.set_index(KEY)
    gained = keyed[keyed["transition"] == GAINED]
    changed = keyed[keyed["transition"] == AMOUNT_CHANGED]
    key = pd.MultiIndex.from_frame(eligible[KEY].astype("string"))
    is_new = key.isin(gained.index)
    new = eligible[is_new].merge(gained[["effective_month"]].reset_index(), on=KEY, how="left")
    continuing = eligible[~is_new].merge(
        changed[["effective_month", "amount_before"]].reset_index(), on=KEY, how="left"
    )
    continuing["amount_changed"] = continuing["effective_month"].notna()
    period = decisions["period"].iloc[0] if len(decisions) else ""
    continuing["effective_month"] = continuing["effective_month"].fillna(period)
    stop = moves[moves["transition"] == LOST].drop(columns=["eligible", "amount"])
    lists = {"decisions_new": new, "decisions_continuing": continuing, "decisions_stop": stop}
    return {k: v.sort_values(KEY, kind="stable").reset_index(drop=True) for k, v in lists.items()}


def changed_share(decisions: pd.DataFrame, moves: pd.DataFrame, open_before: pd.Series) -> pd.DataFrame:
    """Per service: persons evaluated, persons whose eligibility or amount changed, their share.

    The guard counts transitions (what the outbound lists change), not reason-only changes of
    ineligible persons, which move no money. `open_before`: open versions per service before the run;
    a service with none (the first run on an empty store) is `exempt`.
    """
    evaluated = decisions.groupby("service", sort=True).size()
    changed = moves.groupby("service").size().reindex(evaluated.index, fill_value=0)
    before = open_before.reindex(evaluated.index, fill_value=0)
    base = np.maximum(evaluated.to_numpy(), before.to_numpy())
    return pd.DataFrame(
        {
            "service": evaluated.index.astype(str),
            "persons": evaluated.to_numpy(),
            "changed": changed.to_numpy(),
            "share": np.where(base > 0, changed.to_numpy() / np.maximum(base, 1), 0.0),
            "exempt": before.to_numpy() == 0,
        }
    )
