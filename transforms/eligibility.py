"""Eligibility for the one-thing services (一件事), starting with the two subsidies (两项补贴).

Rules live in policies/*.yaml as pandas expressions over master-file columns; amounts are
effective-dated parameters of the period in force on the run date (国发〔2015〕52号 and local
extensions), so changing a rule or an amount is a reviewed data change, not code. Evaluation is
vectorised over the whole master with DataFrame.eval: no Python loop over people.

Unknown facts never make anyone eligible: a null criterion counts as failed, a null exclusion as hit,
and a null amount for an otherwise eligible person turns the decision into AMOUNT_UNKNOWN.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

log = logging.getLogger(__name__)

DECISION_COLUMNS = (
    "id_number",
    "service",
    "period",
    "eligible",
    "amount",
    "reasons",
    "policy",
    "policy_version",
)
AMOUNT_UNKNOWN = "AMOUNT_UNKNOWN"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PolicyError(ValueError):
    """A policy file is malformed, has no period in force, or one of its expressions cannot be evaluated."""


@dataclass(frozen=True)
class Service:
    """One service of a policy: named criteria (reason code -> expression), exclusions and the amount."""

    name: str
    title: str
    criteria: dict[str, str]
    exclusions: dict[str, str]
    amount: str


@dataclass(frozen=True)
class Policy:
    """A policy file narrowed to the period in force on one date."""

    name: str
    version: str
    region: str
    path: Path
    effective_from: date
    effective_to: date | None
    parameters: dict[str, Any]
    facts: dict[str, str]
    services: dict[str, Service] = field(default_factory=dict)


# -- loading -------------------------------------------------------------------------------------------


def _line_of(text: str, path: tuple[str | int, ...]) -> int | None:
    """The 1-based line of a key path in the YAML text, for error messages (None if not found)."""
    try:
        node: Any = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in path:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == key), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


class _Reader:
    """Typed access to the parsed YAML that names the file, line and key of anything wrong."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text

    def fail(self, keys: tuple[str | int, ...], expected: str, found: Any = None) -> PolicyError:
        dotted = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")
        line = _line_of(self.text, keys)
        where = f"{self.path}" + (f" line {line}" if line else "")
        shown = "" if found is None else f", found {found!r}"
        return PolicyError(f"{where}: key '{dotted}': expected {expected}{shown}")

    def get(
        self, mapping: Any, keys: tuple[str | int, ...], kind: type | tuple[type, ...], expected: str
    ) -> Any:
        key = keys[-1]
        if not isinstance(mapping, dict) or key not in mapping:
            raise self.fail(keys, expected, "nothing (key missing)")
        value = mapping[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise self.fail(keys, expected, value)
        return value

    def date(self, value: Any, keys: tuple[str | int, ...], nullable: bool) -> date | None:
        if value is None and nullable:
            return None
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        raise self.fail(keys, "a date YYYY-MM-DD" + (" or null" if nullable else ""), value)

    def expressions(self, value: Any, keys: tuple[str | int, ...]) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) and v.strip() for v in value.values()):
            raise self.fail(keys, "a mapping of name -> pandas expression (text)", value)
        return {str(k): str(v) for k, v in value.items()}


def load_policy(path: Path, as_of: date) -> Policy:
    """Read a policy file and keep the period in force on `as_of` (effective_from <= as_of <= effective_to)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PolicyError(f"{path}: policy file not found") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    r = _Reader(path, text)
    if not isinstance(raw, dict):
        raise r.fail((), "a mapping at the top level", type(raw).__name__)
    name = str(r.get(raw, ("policy",), str, "the policy name (text)"))
    version = str(r.get(raw, ("version",), (str, int, float), 'a version (quote it: "2026.1")'))
    region = str(raw.get("region", ""))
    periods = r.get(raw, ("periods",), list, "a non-empty list of periods")
    if not periods:
        raise r.fail(("periods",), "a non-empty list of periods", periods)

    in_force: list[tuple[int, date, date | None, dict[str, Any]]] = []
    for i, period in enumerate(periods):
        keys: tuple[str | int, ...] = ("periods", i)
        if not isinstance(period, dict):
            raise r.fail(keys, "a mapping with effective_from, effective_to, parameters", period)
        start = r.date(period.get("effective_from"), (*keys, "effective_from"), nullable=False)
        end = r.date(period.get("effective_to"), (*keys, "effective_to"), nullable=True)
        if start is None:  # nullable=False has already refused a missing date; this narrows the type
            raise r.fail((*keys, "effective_from"), "a date", "nothing")
        if end is not None and end < start:
            raise r.fail((*keys, "effective_to"), f"a date on or after effective_from {start}", str(end))
        params = r.get(period, (*keys, "parameters"), dict, "a mapping of parameter name -> number")
        for key, value in params.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise r.fail((*keys, "parameters", key), "a number", value)
            if not str(key).isidentifier():
                raise r.fail((*keys, "parameters", key), "a parameter name usable as @name", key)
        if start <= as_of and (end is None or as_of <= end):
            in_force.append((i, start, end, dict(params)))
    if not in_force:
        raise r.fail(
            ("periods",), f"a period in force on {as_of} (effective_from <= {as_of} <= effective_to)"
        )
    if len(in_force) > 1:
        which = ", ".join(f"periods[{i}]" for i, *_ in in_force)
        raise r.fail(("periods",), f"exactly one period in force on {as_of}", f"overlapping {which}")
    _, start, end, parameters = in_force[0]

    facts = r.expressions(raw.get("facts"), ("facts",))
    services_raw = r.get(raw, ("services",), dict, "a mapping of service name -> service")
    if not services_raw:
        raise r.fail(("services",), "at least one service", services_raw)
    services: dict[str, Service] = {}
    for svc, body in services_raw.items():
        keys = ("services", svc)
        if not isinstance(body, dict):
            raise r.fail(keys, "a mapping with title, criteria, exclusions, amount", body)
        criteria = r.expressions(body.get("criteria"), (*keys, "criteria"))
        if not criteria:
            raise r.fail((*keys, "criteria"), "at least one criterion (reason code -> expression)")
        exclusions = r.expressions(body.get("exclusions"), (*keys, "exclusions"))
        clash = sorted(set(criteria) & set(exclusions))
        if clash:
            raise r.fail((*keys, "exclusions"), "reason codes distinct from the criteria", clash)
        amount = r.get(body, (*keys, "amount"), (str, int, float), "an amount expression")
        services[str(svc)] = Service(
            name=str(svc),
            title=str(body.get("title", svc)),
            criteria=criteria,
            exclusions=exclusions,
            amount=str(amount),
        )
    return Policy(
        name=name,
        version=version,
        region=region,
        path=path,
        effective_from=start,
        effective_to=end,
        parameters=parameters,
        facts=facts,
        services=services,
    )


# -- evaluation ----------------------------------------------------------------------------------------


def _eval(frame: pd.DataFrame, expr: str, local: dict[str, Any], policy: Policy, where: str) -> pd.Series:
    """Evaluate one policy expression over the frame; a scalar result is broadcast to every person."""
    try:
        result = frame.eval(expr, engine="python", local_dict=local)
    except Exception as exc:  # the expression is user data: name where it came from
        raise PolicyError(f"{policy.path}: key '{where}': cannot evaluate {expr!r}: {exc}") from exc
    if isinstance(result, pd.DataFrame):
        raise PolicyError(f"{policy.path}: key '{where}': {expr!r} is an assignment, expected a value")
    if not isinstance(result, pd.Series):
        return pd.Series(result, index=frame.index)
    return result


def _truth(values: pd.Series, unknown: bool, policy: Policy, where: str) -> pd.Series:
    """Booleans from an expression result; null (an unknown fact) becomes `unknown`."""
    try:
        flags = values.astype("boolean")
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"{policy.path}: key '{where}': expected a true/false expression ({exc})") from exc
    return flags.fillna(unknown).astype(bool)


def columns_read(policy: Policy, available: Iterable[str]) -> list[str]:
    """The master columns the policy's expressions can name, with id_number, in `available`'s order.

    The eligibility stage reads only these from the store (half the master's columns, and none of
    the long provenance strings); a word that merely looks like a column costs a column, never a
    decision."""
    expressions = [*policy.facts.values()]
    for svc in policy.services.values():
        expressions += [*svc.criteria.values(), *svc.exclusions.values(), svc.amount]
    named = set(_NAME.findall(" ".join(expressions)))
    return [c for c in available if c == "id_number" or c in named]


def evaluate(master: pd.DataFrame, policy: Policy, as_of: date) -> pd.DataFrame:
    """One decision per person x service: eligible, amount (yuan, 2 decimals), failed reason codes."""
    period = f"{as_of:%Y-%m}"
    if master.empty:
        return _typed(pd.DataFrame({c: pd.Series([], dtype=object) for c in DECISION_COLUMNS}))
    local: dict[str, Any] = {**policy.parameters, "as_of": pd.Timestamp(as_of)}
    frame = master.reset_index(drop=True).copy(deep=False)
    for name, expr in policy.facts.items():
        frame[name] = _eval(frame, expr, local, policy, f"facts.{name}")

    # eval refuses arithmetic on nullable booleans; amounts see them as 1.0 / 0.0 / null instead
    numeric = frame.copy(deep=False)
    for col in frame.columns:
        if isinstance(frame[col].dtype, pd.BooleanDtype):
            numeric[col] = frame[col].astype("Float64")

    out: list[pd.DataFrame] = []
    for svc in policy.services.values():
        eligible = pd.Series(True, index=frame.index)
        checks = [(code, expr, "criteria") for code, expr in svc.criteria.items()]
        checks += [(code, expr, "exclusions") for code, expr in svc.exclusions.items()]
        codes = [code for code, _, _ in checks] + [AMOUNT_UNKNOWN]
        failures = np.zeros(len(frame), dtype=np.int64)  # bit i: codes[i] failed
        for bit, (code, expr, kind) in enumerate(checks):
            where = f"services.{svc.name}.{kind}.{code}"
            if kind == "criteria":
                failed = ~_truth(_eval(frame, expr, local, policy, where), False, policy, where)
            else:
                failed = _truth(_eval(frame, expr, local, policy, where), True, policy, where)
            eligible &= ~failed
            failures |= failed.to_numpy(dtype=np.int64) << bit
        where = f"services.{svc.name}.amount"
        try:
            raw = pd.to_numeric(_eval(numeric, svc.amount, local, policy, where), errors="raise").astype(
                "Float64"
            )
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"{policy.path}: key '{where}': expected a number ({exc})") from exc
        unknown = eligible & raw.isna().to_numpy()
        eligible &= ~unknown
        failures |= unknown.to_numpy(dtype=np.int64) << len(checks)
        amount = raw.where(eligible, 0.0).fillna(0.0).astype("float64").round(2)
        out.append(
            pd.DataFrame(
                {
                    "id_number": frame["id_number"].astype("string"),
                    "service": svc.name,
                    "period": period,
                    "eligible": eligible.astype(bool),
                    "amount": amount,
                    "reasons": _reason_text(failures, codes),
                    "policy": policy.name,
                    "policy_version": policy.version,
                }
            )
        )
        if int(unknown.sum()):
            log.warning(
                "%s: %d otherwise eligible persons have no amount (%s)",
                svc.name,
                int(unknown.sum()),
                AMOUNT_UNKNOWN,
            )
        log.info(
            "%s (%s) period %s: %d of %d eligible, %.2f yuan",
            svc.name,
            policy.version,
            period,
            int(eligible.sum()),
            len(frame),
            float(amount.sum()),
        )
    decisions = pd.concat(out, ignore_index=True)
    if frame["id_number"].is_monotonic_increasing and list(policy.services) == sorted(policy.services):
        # the store hands the master over in id order: interleaving the services is that order already
        order = np.arange(len(decisions)).reshape(len(out), len(frame)).T.ravel()
        decisions = decisions.take(order).reset_index(drop=True)
    else:
        decisions = decisions.sort_values(["id_number", "service"], kind="stable").reset_index(drop=True)
    return _typed(decisions[list(DECISION_COLUMNS)])


def _reason_text(failures: np.ndarray, codes: list[str]) -> np.ndarray:
    """'CODE;CODE' per person from a bit mask of failed codes: joined once per distinct mask."""
    masks, inverse = np.unique(failures, return_inverse=True)
    texts = [";".join(c for i, c in enumerate(codes) if int(m) >> i & 1) for m in masks]
    return np.asarray(texts, dtype=object)[inverse.reshape(-1)]


def _typed(decisions: pd.DataFrame) -> pd.DataFrame:
    """The decision dtypes every reader relies on."""
    return decisions.astype(
        {
            "id_number": "string",
            "service": "string",
            "period": "string",
            "eligible": bool,
            "amount": "float64",
            "reasons": "string",
            "policy": "string",
            "policy_version": "string",
        }
    )
