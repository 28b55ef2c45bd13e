"""Eligibility for the one-thing services (一件事) decided from policies/*.yaml.

Rules live in policy files as expressions of the safe grammar of transforms.policy_expr over master
attributes (never pandas or Python code); amounts are effective-dated parameters, with overrides by
address-code prefix and temporary adjustments layered on the period in force, so changing a rule or
an amount is a reviewed data change, not code. Every expression is checked and compiled when the
file is loaded, and evaluated vectorised over the whole master: no Python loop over people.

Unknown facts never make anyone eligible: a null criterion counts as failed, a null exclusion as hit,
and a null amount for an otherwise eligible person turns the decision into AMOUNT_UNKNOWN (a
negative one into AMOUNT_NEGATIVE).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from core.config_errors import line_of
from transforms.ids import arrow_to_series, as_arrow
from transforms.merge import ATTRIBUTE_COLUMNS
from transforms.policy_expr import (
    BOOL,
    DATE,
    KIND_TYPES,
    NUM,
    TEXT,
    Compiled,
    Env,
    ExprError,
    Names,
    Vec,
    compile_expression,
)

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
AMOUNT_NEGATIVE = "AMOUNT_NEGATIVE"
UNITS = ("month", "year", "once", "none")
TOP_KEYS = (
    "policy",
    "version",
    "region",
    "region_fact",
    "periods",
    "adjustments",
    "facts",
    "reasons",
    "services",
)
PERIOD_KEYS = ("effective_from", "effective_to", "parameters", "regions", "note")
ADJUSTMENT_KEYS = ("name", "effective_from", "effective_to", "add", "region", "note")
SERVICE_KEYS = ("title", "unit", "start", "criteria", "exclusions", "amount", "note")
START_KEYS = ("from", "month")
START_MONTHS = ("same", "next")
REGION_PREFIX_LENGTHS = (2, 4, 6)  # province, prefecture, county
MASTER_TYPES = {name: KIND_TYPES[kind] for name, kind in ATTRIBUTE_COLUMNS.items()}


class PolicyError(ValueError):
    """A policy file is malformed, has no period in force, or one of its expressions is outside the grammar."""


@dataclass(frozen=True)
class Start:
    """When a gained service takes effect (docs/domain.md, The 一件事 bundle: starts per policy).

    `date_from`: `as_of` (the run that finds the person eligible: 免申即享 has no application date) or a
    master date attribute such as cert_issued; `next_month`: from the month after that date rather than
    its own month. Never before the run's month: the hub does not back-date a start."""

    date_from: str = "as_of"
    next_month: bool = False


@dataclass(frozen=True)
class Service:
    """One service: named criteria and exclusions (reason code -> compiled expression) and the amount."""

    name: str
    title: str
    unit: str
    criteria: dict[str, Compiled]
    exclusions: dict[str, Compiled]
    amount: Compiled
    start: Start = field(default_factory=Start)


@dataclass(frozen=True)
class Adjustment:
    """A temporary addition to parameters (e.g. +50 yuan March-June 2020), optionally for one region prefix."""

    name: str
    effective_from: date
    effective_to: date
    add: dict[str, float]
    region: str | None


@dataclass(frozen=True)
class Policy:
    """A policy file narrowed to the period (and adjustments) in force on one date.

    `parameters` are the period's base values; `regional` maps an address-code prefix to the values it
    overrides (the longest matching prefix of the person's `region_fact` wins); `adjustments` in force
    are added on top."""

    name: str
    version: str
    region: str
    path: Path
    effective_from: date
    effective_to: date | None
    parameters: dict[str, float]
    facts: dict[str, Compiled]
    services: dict[str, Service] = field(default_factory=dict)
    regional: dict[str, dict[str, float]] = field(default_factory=dict)
    adjustments: tuple[Adjustment, ...] = ()
    region_fact: str = "hukou_county"
    period_index: int = 0
    reason_texts: dict[str, str] = field(default_factory=dict)  # reason code -> text for people

    def parameter_sources(self, name: str, region: str | None) -> tuple[float, list[str]]:
        """The value of a parameter for one region code and where each part came from (for explanations)."""
        period = f"periods[{self.period_index}] {self.effective_from}..{self.effective_to or 'open'}"
        value, parts = self.parameters[name], [f"{name}={self.parameters[name]:g} ({period})"]
        code = region or ""
        for prefix in sorted(self.regional, key=len):
            if code.startswith(prefix) and name in self.regional[prefix]:
                value = self.regional[prefix][name]
                parts.append(f"{name}={value:g} (region {prefix}, {period})")
        for adj in self.adjustments:
            if name in adj.add and (adj.region is None or code.startswith(adj.region)):
                value += adj.add[name]
                parts.append(f"{adj.add[name]:+g} ({adj.name} {adj.effective_from}..{adj.effective_to})")
        return value, parts


# -- loading -------------------------------------------------------------------------------------------


class _Reader:
    """Typed access to the parsed YAML that names the file, line and key of anything wrong."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text

    def fail(self, keys: tuple[str | int, ...], expected: str, found: Any = None) -> PolicyError:
        dotted = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")
        try:
            line = line_of(yaml.compose(self.text), keys)
        except yaml.YAMLError:
            line = None
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

    def known_keys(
        self, mapping: dict[Any, Any], keys: tuple[str | int, ...], allowed: tuple[str, ...]
    ) -> None:
        for key in mapping:
            if key not in allowed:
                raise self.fail((*keys, str(key)), f"one of the fields {', '.join(allowed)}", str(key))

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

    def numbers(self, value: Any, keys: tuple[str | int, ...], allowed: set[str] | None) -> dict[str, float]:
        if not isinstance(value, dict):
            raise self.fail(keys, "a mapping of parameter name -> number", value)
        out: dict[str, float] = {}
        for key, number in value.items():
            name = str(key)
            if allowed is not None and name not in allowed:
                raise self.fail(
                    (*keys, name), f"a parameter of the period ({', '.join(sorted(allowed))})", name
                )
            if not name.isidentifier() or name.startswith("_"):
                raise self.fail(
                    (*keys, name), "a parameter name (letters, digits, _; not starting with _)", name
                )
            if not isinstance(number, int | float) or isinstance(number, bool):
                raise self.fail((*keys, name), "a number", number)
            out[name] = float(number)
        return out

    def expression(self, value: Any, keys: tuple[str | int, ...], names: Names, want: str) -> Compiled:
        if isinstance(value, bool) or not isinstance(value, str | int | float) or not str(value).strip():
            raise self.fail(keys, "an expression (text)", value)
        try:
            compiled = compile_expression(str(value), names)
        except ExprError as exc:
            at = "" if exc.column is None else f" at column {exc.column + 1}"
            raise self.fail(keys, f"an expression of the policy grammar ({exc}){at}", str(value)) from None
        if want != "any" and compiled.type != want and not (want == NUM and compiled.type == BOOL):
            what = "true/false" if want == BOOL else "number"
            raise self.fail(keys, f"a {what} expression, this one gives a {compiled.type}", str(value))
        return compiled


def _periods(
    r: _Reader, raw: dict[str, Any]
) -> list[tuple[date, date | None, dict[str, float], dict[str, dict[str, float]]]]:
    """Every period, checked: same parameters in each, contiguous (no gap, no overlap), only the last open."""
    periods = r.get(raw, ("periods",), list, "a non-empty list of periods")
    if not periods:
        raise r.fail(("periods",), "a non-empty list of periods", periods)
    out: list[tuple[date, date | None, dict[str, float], dict[str, dict[str, float]]]] = []
    names: set[str] | None = None
    for i, period in enumerate(periods):
        keys: tuple[str | int, ...] = ("periods", i)
        if not isinstance(period, dict):
            raise r.fail(keys, "a mapping with effective_from, effective_to, parameters", period)
        r.known_keys(period, keys, PERIOD_KEYS)
        start = r.date(period.get("effective_from"), (*keys, "effective_from"), nullable=False)
        end = r.date(period.get("effective_to"), (*keys, "effective_to"), nullable=True)
        if start is None:  # nullable=False has already refused a missing date; this narrows the type
            raise r.fail((*keys, "effective_from"), "a date", "nothing")
        if end is not None and end < start:
            raise r.fail((*keys, "effective_to"), f"a date on or after effective_from {start}", str(end))
        params = r.numbers(
            r.get(period, (*keys, "parameters"), dict, "a mapping of parameter name -> number"),
            (*keys, "parameters"),
            None,
        )
        if names is None:
            names = set(params)
        elif set(params) != names:
            missing, extra = sorted(names - set(params)), sorted(set(params) - names)
            raise r.fail(
                (*keys, "parameters"), f"the parameters of periods[0] (missing {missing}, extra {extra})"
            )
        regions: dict[str, dict[str, float]] = {}
        for prefix, overrides in (period.get("regions") or {}).items():
            code = str(prefix)
            if not code.isdigit() or len(code) not in REGION_PREFIX_LENGTHS:
                raise r.fail(
                    (*keys, "regions", code), "an address-code prefix of 2, 4 or 6 digits (quote it)", code
                )
            regions[code] = r.numbers(overrides, (*keys, "regions", code), names)
        out.append((start, end, params, regions))
    for i in range(1, len(out)):
        previous_end, start = out[i - 1][1], out[i][0]
        if previous_end is None or start <= previous_end:
            raise r.fail(
                ("periods", i, "effective_from"),
                f"a start after periods[{i - 1}] ends: periods in date order that do not overlap",
                f"overlapping periods[{i - 1}], periods[{i}]",
            )
        if start != previous_end + timedelta(days=1):
            raise r.fail(
                ("periods", i, "effective_from"),
                f"{previous_end + timedelta(days=1)} (the day after periods[{i - 1}] ends): periods leave no gap",
                str(start),
            )
    return out


def _adjustments(r: _Reader, raw: dict[str, Any], names: set[str]) -> list[Adjustment]:
    out: list[Adjustment] = []
    for i, adj in enumerate(raw.get("adjustments") or []):
        keys: tuple[str | int, ...] = ("adjustments", i)
        if not isinstance(adj, dict):
            raise r.fail(keys, "a mapping with name, effective_from, effective_to, add", adj)
        r.known_keys(adj, keys, ADJUSTMENT_KEYS)
        start = r.date(adj.get("effective_from"), (*keys, "effective_from"), nullable=False)
        end = r.date(adj.get("effective_to"), (*keys, "effective_to"), nullable=False)
        if start is None or end is None:  # nullable=False has already refused a missing date
            raise r.fail(keys, "effective_from and effective_to dates", "nothing")
        if end < start:
            raise r.fail((*keys, "effective_to"), f"a date on or after effective_from {start}", str(end))
        region = adj.get("region")
        if region is not None and (
            not str(region).isdigit() or len(str(region)) not in REGION_PREFIX_LENGTHS
        ):
            raise r.fail((*keys, "region"), "an address-code prefix of 2, 4 or 6 digits (quote it)", region)
        add = r.numbers(
            r.get(adj, (*keys, "add"), dict, "a mapping of parameter name -> amount added"),
            (*keys, "add"),
            names,
        )
        out.append(
            Adjustment(
                str(adj.get("name", f"adjustments[{i}]")),
                start,
                end,
                add,
                None if region is None else str(region),
            )
        )
    return out


def _start(r: _Reader, body: dict[str, Any], keys: tuple[str | int, ...]) -> Start:
    """A service's `start: {from: as_of | <master date attribute>, month: same | next}` (default: as_of, same)."""
    raw = body.get("start")
    if raw is None:
        return Start()
    keys = (*keys, "start")
    if not isinstance(raw, dict):
        raise r.fail(keys, "a mapping with from and month", raw)
    r.known_keys(raw, keys, START_KEYS)
    source = str(raw.get("from", "as_of"))
    if source != "as_of" and MASTER_TYPES.get(source) != DATE:
        raise r.fail((*keys, "from"), "as_of or a master date attribute (cert_issued, ...)", source)
    month = str(raw.get("month", "same"))
    if month not in START_MONTHS:
        raise r.fail((*keys, "month"), f"one of {', '.join(START_MONTHS)}", month)
    return Start(source, month == "next")


def load_policy(path: Path, as_of: date) -> Policy:
    """Read and check a whole policy file, compile its expressions, and keep what is in force on `as_of`."""
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
    r.known_keys(raw, (), TOP_KEYS)
    name = str(r.get(raw, ("policy",), str, "the policy name (text)"))
    version = str(r.get(raw, ("version",), (str, int, float), 'a version (quote it: "2026.1")'))
    region = str(raw.get("region", ""))
    region_fact = str(raw.get("region_fact", "hukou_county"))
    if MASTER_TYPES.get(region_fact) != TEXT:
        raise r.fail(("region_fact",), "a text master attribute holding an address code", region_fact)

    periods = _periods(r, raw)
    parameter_names = set(periods[0][2])
    adjustments = _adjustments(r, raw, parameter_names)
    in_force = [
        i for i, (start, end, _, _) in enumerate(periods) if start <= as_of and (end is None or as_of <= end)
    ]
    if not in_force:
        raise r.fail(
            ("periods",), f"a period in force on {as_of} (effective_from <= {as_of} <= effective_to)"
        )
    index = in_force[0]
    start, end, parameters, regional = periods[index]

    facts_raw = raw.get("facts") or {}
    if not isinstance(facts_raw, dict):
        raise r.fail(("facts",), "a mapping of fact name -> expression", facts_raw)
    fact_types: dict[str, str] = {}
    facts: dict[str, Compiled] = {}
    for fact, expr in facts_raw.items():
        fact = str(fact)
        if fact in MASTER_TYPES or fact in parameter_names or not fact.isidentifier() or fact.startswith("_"):
            raise r.fail(
                ("facts", fact), "a new name (not a master attribute or parameter, not starting with _)", fact
            )
        compiled = r.expression(
            expr, ("facts", fact), Names(MASTER_TYPES, fact_types, frozenset(parameter_names)), "any"
        )
        facts[fact] = compiled
        fact_types[fact] = compiled.type
    names = Names(MASTER_TYPES, fact_types, frozenset(parameter_names))

    services_raw = r.get(raw, ("services",), dict, "a mapping of service name -> service")
    if not services_raw:
        raise r.fail(("services",), "at least one service", services_raw)
    services: dict[str, Service] = {}
    for svc, body in services_raw.items():
        keys: tuple[str | int, ...] = ("services", str(svc))
        if not isinstance(body, dict):
            raise r.fail(keys, "a mapping with title, criteria, exclusions, amount", body)
        r.known_keys(body, keys, SERVICE_KEYS)
        compiled_sets: list[dict[str, Compiled]] = []
        for kind in ("criteria", "exclusions"):
            entries = body.get(kind) or {}
            if not isinstance(entries, dict):
                raise r.fail((*keys, kind), "a mapping of reason code -> true/false expression", entries)
            compiled_sets.append(
                {
                    str(code): r.expression(expr, (*keys, kind, str(code)), names, BOOL)
                    for code, expr in entries.items()
                }
            )
        criteria, exclusions = compiled_sets
        if not criteria:
            raise r.fail((*keys, "criteria"), "at least one criterion (reason code -> expression)")
        clash = sorted(set(criteria) & set(exclusions))
        if clash:
            raise r.fail((*keys, "exclusions"), "reason codes distinct from the criteria", clash)
        unit = str(body.get("unit", "month"))
        if unit not in UNITS:
            raise r.fail((*keys, "unit"), f"one of {', '.join(UNITS)}", unit)
        amount = r.expression(
            r.get(body, (*keys, "amount"), (str, int, float), "an amount expression"),
            (*keys, "amount"),
            names,
            NUM,
        )
        services[str(svc)] = Service(
            str(svc), str(body.get("title", svc)), unit, criteria, exclusions, amount, _start(r, body, keys)
        )
    reason_texts = raw.get("reasons") or {}
    if not isinstance(reason_texts, dict) or not all(isinstance(v, str) and v for v in reason_texts.values()):
        raise r.fail(("reasons",), "a mapping of reason code -> text", reason_texts)
    if reason_texts:
        for svc in services.values():
            for code in (*svc.criteria, *svc.exclusions):
                if code not in reason_texts:
                    raise r.fail(
                        ("services", svc.name), f"a text for reason code {code} under 'reasons'", code
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
        regional=regional,
        adjustments=tuple(a for a in adjustments if a.effective_from <= as_of <= a.effective_to),
        region_fact=region_fact,
        period_index=index,
        reason_texts={str(k): str(v) for k, v in reason_texts.items()},
    )


# -- evaluation ----------------------------------------------------------------------------------------


def _parameter(policy: Policy) -> Any:
    """The parameter resolver of an evaluation: a scalar, or one value per person when regions or
    region-bound adjustments apply (the longest matching address-code prefix wins; adjustments add)."""

    def resolve(name: str, env: Env) -> Any:
        overrides = [
            (p, v[name]) for p, v in sorted(policy.regional.items(), key=lambda kv: len(kv[0])) if name in v
        ]
        adjustments = [a for a in policy.adjustments if name in a.add]
        flat = policy.parameters[name] + sum(a.add[name] for a in adjustments if a.region is None)
        regional = [a for a in adjustments if a.region is not None]
        if not overrides and not regional:
            return flat
        code = env.name(policy.region_fact).data  # text: an Arrow array

        def starts(prefix: str) -> np.ndarray:
            return np.asarray(pc.starts_with(code, prefix).fill_null(False).to_numpy(zero_copy_only=False))

        values = np.full(len(env.index), policy.parameters[name], dtype=np.float64)
        for prefix, value in overrides:
            values[starts(prefix)] = value
        for adj in adjustments:
            hit = np.ones(len(env.index), dtype=bool) if adj.region is None else starts(adj.region)
            values[hit] += adj.add[name]
        return Vec(values, np.isnan(values))

    return resolve


def environment(master: pd.DataFrame, policy: Policy, as_of: date) -> Env:
    """The evaluation context of a policy over a master frame (facts computed once, on demand)."""
    env = Env(master, as_of, MASTER_TYPES, _parameter(policy))
    for name, compiled in policy.facts.items():
        env.facts[name] = compiled.run
    return env


def run_expression(env: Env, compiled: Compiled, policy: Policy, where: str) -> pd.Series:
    """One expression's values per person; a column the frame lacks names the key that needed it."""
    return _vector(env, compiled, policy, where).series(env.index)


def _vector(env: Env, compiled: Compiled, policy: Policy, where: str) -> Vec:
    try:
        return compiled.vector(env)
    except KeyError as exc:
        raise PolicyError(
            f"{policy.path}: key '{where}': the master frame has no column {exc.args[0]!r} ({compiled.text!r})"
        ) from None


def columns_read(policy: Policy, available: Iterable[str]) -> list[str]:
    """The master columns the policy's expressions name, with id_number, in `available`'s order.

    The eligibility stage reads only these from the store (half the master's columns, and none of
    the long provenance strings)."""
    named: set[str] = {policy.region_fact} if policy.regional or policy.adjustments else set()
    compiled = [*policy.facts.values()]
    for svc in policy.services.values():
        compiled += [*svc.criteria.values(), *svc.exclusions.values(), svc.amount]
        named.add(svc.start.date_from)  # a start dated by a master attribute (transitions read it)
    for c in compiled:
        named |= c.names
    return [c for c in available if c == "id_number" or c in named]


def start_rules(policy: Policy) -> dict[str, tuple[str, bool]]:
    """service -> (the date its start counts from: a master column or "as_of", from the next month)."""
    return {name: (s.start.date_from, s.start.next_month) for name, s in policy.services.items()}


def evaluate(master: pd.DataFrame, policy: Policy, as_of: date) -> pd.DataFrame:
    """One decision per person x service: eligible, amount (yuan, 2 decimals), failed reason codes."""
    period = f"{as_of:%Y-%m}"
    if master.empty:
        return _typed(pd.DataFrame({c: pd.Series([], dtype=object) for c in DECISION_COLUMNS}))
    frame = master.reset_index(drop=True)
    env = environment(frame, policy, as_of)

    eligibles: list[np.ndarray] = []
    amounts: list[np.ndarray] = []
    reasons: list[np.ndarray] = []  # each person's position among all services' reason texts
    texts: list[list[str]] = []
    for svc in policy.services.values():
        eligible = np.ones(len(frame), dtype=bool)
        checks = [(code, expr, "criteria") for code, expr in svc.criteria.items()]
        checks += [(code, expr, "exclusions") for code, expr in svc.exclusions.items()]
        codes = [code for code, _, _ in checks] + [AMOUNT_UNKNOWN, AMOUNT_NEGATIVE]
        failures = np.zeros(len(frame), dtype=np.int64)  # bit i: codes[i] failed
        for bit, (code, expr, kind) in enumerate(checks):
            values = _vector(env, expr, policy, f"services.{svc.name}.{kind}.{code}")
            # an unknown criterion counts as failed, an unknown exclusion as hit
            failed = values.null | (~values.data if kind == "criteria" else values.data)
            eligible &= ~failed
            failures |= failed.astype(np.int64) << bit
        raw = _vector(env, svc.amount, policy, f"services.{svc.name}.amount")
        known = ~raw.null
        unknown = eligible & raw.null
        negative = eligible & known & (raw.data < 0)
        eligible &= ~(unknown | negative)
        failures |= unknown.astype(np.int64) << len(checks)
        failures |= negative.astype(np.int64) << (len(checks) + 1)
        amount = np.round(np.where(eligible, raw.data.astype(np.float64), 0.0), 2)
        masks, inverse = _reason_codes(failures, codes)
        eligibles.append(eligible)
        amounts.append(amount)
        reasons.append(inverse + sum(len(part) for part in texts))
        texts.append(masks)
        for flag, label in ((unknown, AMOUNT_UNKNOWN), (negative, AMOUNT_NEGATIVE)):
            if int(flag.sum()):
                log.warning(
                    "%s: %d otherwise eligible persons have no valid amount (%s)",
                    svc.name,
                    int(flag.sum()),
                    label,
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
    # One row per person x service, in (id_number, service) order; each column is built once, already
    # in that order (a take per column of a 7-million-row frame was half of the evaluation's time).
    n, names = len(frame), list(policy.services)
    ids = as_arrow(frame["id_number"])
    rows = n * len(names)
    index = pd.RangeIndex(rows)

    def strings(values: list[str], at: np.ndarray) -> pd.Series:
        return arrow_to_series(pa.array(values, type=pa.large_string()).take(at), index)

    arrange: Callable[[list[np.ndarray]], np.ndarray]
    if _ascending(ids) and names == sorted(names):
        # the store hands the master over in id order: interleaving the services (a transposition of
        # the service-major results, no gather) is that order already
        def arrange(blocks: list[np.ndarray]) -> np.ndarray:
            return np.stack(blocks, axis=1).ravel()

        service = _repeated(names, n, index)
    else:
        person, of_service = np.tile(np.arange(n), len(names)), np.repeat(np.arange(len(names)), n)
        keys = pd.DataFrame({"id_number": arrow_to_series(ids.take(person), pd.RangeIndex(len(person)))})
        keys["service"] = np.asarray(names, dtype=object)[of_service]
        order = keys.sort_values(["id_number", "service"], kind="stable").index.to_numpy()

        def arrange(blocks: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(blocks)[order]

        service = strings(names, arrange([np.full(n, i) for i in range(len(names))]))

    decisions = pd.DataFrame(
        {
            "id_number": arrow_to_series(ids.take(arrange([np.arange(n)] * len(names))), index),
            "service": service,
            "period": _repeated([period], rows, index),
            "eligible": arrange(eligibles),
            "amount": arrange(amounts),
            "reasons": strings([t for part in texts for t in part], arrange(reasons)),
            "policy": _repeated([policy.name], rows, index),
            "policy_version": _repeated([policy.version], rows, index),
        },
        index=index,
    )
    return _typed(decisions[list(DECISION_COLUMNS)])


def _ascending(ids: pa.Array) -> bool:
    """Whether the ids are known and in ascending order (compared in Arrow: no index built)."""
    if ids.null_count or len(ids) < 2:
        return ids.null_count == 0
    return bool(pc.all(pc.less_equal(ids[:-1], ids[1:])).as_py())


def _repeated(texts: list[str], count: int, index: pd.Index) -> pd.Series:
    """The texts in turn, `count` times over, built from their bytes (twice as fast as a take)."""
    encoded = [t.encode("utf-8") for t in texts]
    block = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    starts = np.cumsum([0] + [len(e) for e in encoded[:-1]], dtype=np.int64)
    offsets = np.empty(len(texts) * count + 1, dtype=np.int64)
    offsets[:-1].reshape(count, len(texts))[:] = (
        np.arange(count, dtype=np.int64)[:, None] * len(block) + starts
    )
    offsets[-1] = count * len(block)
    data = np.tile(block, count)
    arr = pa.LargeStringArray.from_buffers(len(texts) * count, pa.py_buffer(offsets), pa.py_buffer(data))
    return arrow_to_series(arr, index)


# services with at most this many reason codes count their failure masks in a table of 2**codes
# entries (one pass); more codes fall back to sorting the masks
COUNTED_CODES = 16


def _reason_codes(failures: np.ndarray, codes: list[str]) -> tuple[list[str], np.ndarray]:
    """'CODE;CODE' per distinct mask of failed codes (ascending), and each person's position among them."""
    if len(codes) <= COUNTED_CODES:
        masks = np.flatnonzero(np.bincount(failures, minlength=1))
        position = np.zeros(1 << len(codes), dtype=np.int64)
        position[masks] = np.arange(len(masks))
        inverse = position[failures]
    else:
        masks, inverse = np.unique(failures, return_inverse=True)
    texts = [";".join(c for i, c in enumerate(codes) if int(m) >> i & 1) for m in masks]
    return texts, inverse.reshape(-1)


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
