"""`hub explain`: why one person gets (or does not get) each service, from the same compiled policy the cycle uses.

For every service: each criterion and exclusion with its result, the facts it read (value, department and
batch from the master record's provenance), the parameters with the period, region override and
adjustments they came from, and the amount formula with the numbers filled in. Values are masked as in
`hub master show` unless the caller asks otherwise (and audits it).
"""

from __future__ import annotations

import ast
from datetime import date, timedelta
from typing import Any

import pandas as pd

from hub.master_view import RecordView, attribute_rows, shown_value
from transforms.eligibility import MASTER_TYPES, Policy, environment, evaluate, run_expression
from transforms.merge import ATTRIBUTE_COLUMNS, coerce
from transforms.policy_expr import AS_OF, DATE, EPOCH, Compiled

LABELS = {
    "zh": {
        "service": "服务",
        "eligible": "符合",
        "not_eligible": "不符合",
        "criterion": "条件",
        "exclusion": "排除",
        "amount": "金额",
        "facts": "事实",
        "parameters": "参数",
        "pass": "通过",
        "fail": "未通过",
        "unknown": "未知",
    },
    "en": {
        "service": "service",
        "eligible": "eligible",
        "not_eligible": "not eligible",
        "criterion": "criterion",
        "exclusion": "exclusion",
        "amount": "amount",
        "facts": "facts",
        "parameters": "parameters",
        "pass": "pass",
        "fail": "fail",
        "unknown": "unknown",
    },
}


def _attributes(policy: Policy, compiled: Compiled) -> list[str]:
    """The master attributes an expression reads, through the facts it names."""
    seen: list[str] = []
    todo = sorted(compiled.names)
    while todo:
        name = todo.pop(0)
        if name in policy.facts:
            todo += sorted(policy.facts[name].names)
        elif name in MASTER_TYPES and name not in seen:
            seen.append(name)
    return seen


def _parameters(policy: Policy, compiled: Compiled) -> list[str]:
    names: list[str] = []
    todo = sorted(compiled.names)
    while todo:
        name = todo.pop(0)
        if name in policy.facts:
            todo += sorted(policy.facts[name].names)
        elif name in policy.parameters and name not in names:
            names.append(name)
    return names


def _scalar(value: Any) -> Any:
    return None if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)) else value


def explain(view: RecordView, policy: Policy, as_of: date, unmasked: bool) -> dict[str, Any]:
    """Every service for the person of `view`, as a JSON-ready mapping."""
    row = {c: [view.row.get(c)] for c in ATTRIBUTE_COLUMNS}
    frame = pd.DataFrame(
        {
            c: coerce(pd.Series(v, dtype=object), k)
            for (c, k), v in zip(ATTRIBUTE_COLUMNS.items(), row.values(), strict=True)
        }
    )
    env = environment(frame, policy, as_of)
    decisions = evaluate(frame, policy, as_of).set_index("service")
    provenance = {a: (value, source, batch) for a, value, source, batch in attribute_rows(view, unmasked)}
    region = view.row.get(policy.region_fact)
    region_code = None if region is None or pd.isna(region) else str(region)

    def facts_of(compiled: Compiled) -> list[dict[str, str]]:
        return [
            {"attribute": a, "value": provenance[a][0], "source": provenance[a][1], "batch": provenance[a][2]}
            for a in _attributes(policy, compiled)
        ]

    def parameters_of(compiled: Compiled) -> list[dict[str, Any]]:
        out = []
        for name in _parameters(policy, compiled):
            value, parts = policy.parameter_sources(name, region_code)
            out.append({"parameter": name, "value": value, "from": parts})
        return out

    services = []
    for svc in policy.services.values():
        checks = []
        for kind, entries in (("criterion", svc.criteria), ("exclusion", svc.exclusions)):
            for code, compiled in entries.items():
                where = f"services.{svc.name}.{'criteria' if kind == 'criterion' else 'exclusions'}.{code}"
                value = _scalar(run_expression(env, compiled, policy, where).iloc[0])
                passed = bool(value) if kind == "criterion" else value is not None and not value
                checks.append(
                    {
                        "kind": kind,
                        "code": code,
                        "text": policy.reason_texts.get(code, ""),
                        "expression": compiled.text,
                        "value": None if value is None else bool(value),
                        "passed": bool(passed),
                        "facts": facts_of(compiled),
                        "parameters": parameters_of(compiled),
                    }
                )
        decision = decisions.loc[svc.name]
        raw_amount = _scalar(run_expression(env, svc.amount, policy, f"services.{svc.name}.amount").iloc[0])
        services.append(
            {
                "service": svc.name,
                "title": svc.title,
                "unit": svc.unit,
                "eligible": bool(decision["eligible"]),
                "amount": float(decision["amount"]),
                "reasons": [r for r in str(decision["reasons"]).split(";") if r],
                "checks": checks,
                "amount_formula": svc.amount.text,
                "amount_filled": _filled(svc.amount, env, policy, region_code),
                "amount_computed": None if raw_amount is None else round(float(raw_amount), 2),
                "amount_facts": facts_of(svc.amount),
                "amount_parameters": parameters_of(svc.amount),
            }
        )
    return {
        "id_number": shown_value("id_number", view.id_number, unmasked),
        "as_of": as_of.isoformat(),
        "policy": policy.name,
        "policy_version": policy.version,
        "period": [str(policy.effective_from), str(policy.effective_to or "")],
        "adjustments": [a.name for a in policy.adjustments],
        "services": services,
    }


def _filled(compiled: Compiled, env: Any, policy: Policy, region: str | None) -> str:
    """The expression with every name replaced by its value for this person (dates as ISO text)."""

    class Fill(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:
            name = node.id
            kind = policy.facts[name].type if name in policy.facts else MASTER_TYPES.get(name, DATE)
            if name in policy.parameters:
                value: Any = policy.parameter_sources(name, region)[0]
            elif name == AS_OF:
                value = env.as_of
            else:
                value = _scalar(env.vector(env.name(name), kind).series(env.index).iloc[0])
            if value is None:
                return ast.Name(id="null", ctx=ast.Load())
            if kind == DATE and name not in policy.parameters:
                day = EPOCH + timedelta(days=int(value))
                return ast.Call(ast.Name(id="date", ctx=ast.Load()), [ast.Constant(day.isoformat())], [])
            if isinstance(value, bool):
                return ast.Constant(value)
            return ast.Constant(round(float(value), 4) if isinstance(value, float) else value)

    tree = Fill().visit(ast.parse(compiled.text.strip(), mode="eval"))
    return ast.unparse(tree)


def render(result: dict[str, Any], lang: str) -> list[str]:
    """Plain lines for the terminal, in Chinese or English."""
    t = LABELS[lang]
    lines = [
        f"{result['id_number']} — {result['policy']} {result['policy_version']} — {result['as_of']} "
        f"(period {result['period'][0]}..{result['period'][1] or 'open'})"
    ]
    for s in result["services"]:
        verdict = t["eligible"] if s["eligible"] else t["not_eligible"]
        name = s["title"] if lang == "zh" else s["service"]
        lines.append(f"\n{t['service']} {name}: {verdict}, {t['amount']} {s['amount']:.2f} ({s['unit']})")
        for c in s["checks"]:
            result_text = t["pass"] if c["passed"] else t["fail"]
            value = t["unknown"] if c["value"] is None else str(c["value"]).lower()
            label = c["text"] if lang == "zh" and c["text"] else c["code"]
            lines.append(f"  {t[c['kind']]} {c['code']} [{result_text}] {label}: {c['expression']} = {value}")
            for f in c["facts"]:
                lines.append(f"      {f['attribute']} = {f['value']} ({f['source']}, {f['batch']})")
            for p in c["parameters"]:
                lines.append(f"      {p['parameter']} = {p['value']:g}: {'; '.join(p['from'])}")
        lines.append(
            f"  {t['amount']}: {s['amount_formula']} = {s['amount_filled']} = {s['amount_computed']}"
        )
        for p in s["amount_parameters"]:
            lines.append(f"      {p['parameter']} = {p['value']:g}: {'; '.join(p['from'])}")
        for f in s["amount_facts"]:
            lines.append(f"      {f['attribute']} = {f['value']} ({f['source']}, {f['batch']})")
    return lines
