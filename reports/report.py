"""The auditor's report of one cycle run rendered: the content of reports/<run_id>/report.json, report.html,
and reports/index.html across runs with trends. Rendering only: data in, text out; the report stage
(stages/report.py) reads what it shows and publishes the files.

The HTML is self-contained (inline CSS and SVG charts drawn by reports.charts, no script, no URL of any
kind) so it can be mailed or archived as one file; Chinese by default, English by a switch that is two
radio buttons and CSS. Templates and CSS are files under reports/templates/. Its only links are in-page
anchors and relative ones to the batches' validation.html files beside it under var/ (they open
offline too). Every ID number in it is masked (first 6 +
last 4, docs/domain.md, Personal information): the summary is scrubbed before it is rendered or written, whatever the
stages put into it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from core.contracts import REASONS
from core.masking import mask_structure
from reports import charts

TEMPLATES = Path(__file__).resolve().parent / "templates"


def scrub(value: Any) -> Any:
    """Mask every ID-shaped token in a JSON-like structure (keys and values, recursively)."""
    return mask_structure(value)


def defang(value: Any) -> Any:
    """Break any '//' in text shown in the HTML, so no URL of any kind can appear in the report."""
    if isinstance(value, str):
        return value.replace("//", "/\u200b/")
    if isinstance(value, dict):
        return {k: defang(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [defang(v) for v in value]
    return value


def _normalise(summary: dict[str, Any]) -> dict[str, Any]:
    """Fill the sections the template expects, so a partial summary still renders."""
    master = dict(summary.get("master") or {})
    master.setdefault("persons", 0)
    master.setdefault("conflicts", sum((master.get("conflicts_by_type") or {}).values()))
    master.setdefault("conflicts_by_type", {})
    decisions = []
    for d in summary.get("decisions") or []:
        d = dict(d)
        d.setdefault("title", "")
        d.setdefault("evaluated", 0)
        d.setdefault("eligible", 0)
        d.setdefault("changed", None)
        d.setdefault("changed_share", None)
        d.setdefault("outbound", "")
        d["amount_total"] = round(float(d.get("amount_total") or 0.0), 2)
        decisions.append(d)
    sources = []
    for s in summary.get("sources") or []:
        s = dict(s)
        for key in (
            "batch_id",
            "verdict",
            "rows",
            "accepted",
            "quarantined",
            "reasons",
            "used_batch_id",
            "validation_report",
        ):
            s.setdefault(key, None)
        sources.append(s)
    exchange = []
    for f in summary.get("exchange") or []:
        f = dict(f)
        for key in ("partner", "contract", "file", "period", "rows", "sha256"):
            f.setdefault(key, "")
        exchange.append(f)
    return {
        **summary,
        "validation": list(summary.get("validation") or []),
        "rejects": list(summary.get("rejects") or []),
        "conflicts_by_county": list(summary.get("conflicts_by_county") or []),
        "audit": dict(summary.get("audit") or {}),
        "other_stages": list(summary.get("other_stages") or []),
        "transitions": dict(summary.get("transitions") or {}),
        "guard": list(summary.get("guard") or []),
        "master": master,
        "decisions": decisions,
        "sources": sources,
        "exchange": exchange,
        "warnings": list(summary.get("warnings") or []),
        "stale": list(summary.get("stale") or []),
    }


_SAFE_PATH = re.compile(r"[\w.-]+(?:/[\w.-]+)*\.html")


def linkable(under_var: Any) -> bool:
    """Whether the report may link a path under var/: a plain relative one (no scheme, no '//', no '..'),
    so that the report links nothing outside var/."""
    return isinstance(under_var, str) and bool(_SAFE_PATH.fullmatch(under_var)) and ".." not in under_var


AUDIT_KEYS = (
    "months", "missing_inputs", "payments", "fund", "needs", "villages", "not_delivered", "payment_persons",
    "payment_persons_total", "payment_counties", "fund_findings", "fund_total", "needs_by_county",
    "not_delivered_sample", "village_list", "village_total", "village_counties", "county_holders",
    "county_services", "work_lists", "rules", "no_receipt", "no_receipt_sample",
)  # fmt: skip
TOC = (
    ("summary", "运行概况", "Summary"),
    ("sources", "数据批次", "Batches"),
    ("validation", "逐源校验", "Validation"),
    ("quarantine", "隔离", "Quarantine"),
    ("conflicts", "冲突", "Conflicts"),
    ("decisions", "资格判定", "Decisions"),
    ("audits", "三查", "Audits"),
    ("deliveries", "送达与回执", "Deliveries"),
    ("guard", "变动闸门", "Guard"),
    ("exchange", "交换文件", "Exchange"),
)


def env() -> Environment:
    """The templates under templates/, escaped, strict about missing values."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def css(*names: str) -> str:
    """Inline CSS from templates/ (base.css is shared by every page: no stylesheet, font or image is
    fetched)."""
    return "\n".join((TEMPLATES / name).read_text(encoding="utf-8") for name in names)


def _audit_defaults(audit: dict[str, Any]) -> dict[str, Any]:
    from transforms.audit import FINDING_ZH

    out: dict[str, Any] = {key: None for key in AUDIT_KEYS}
    out.update(audit or {})
    out["finding_zh"] = FINDING_ZH
    out["present"] = bool(audit)
    return out


def _tiers(rules: dict[str, Any]) -> list[dict[str, Any]]:
    """The configured village tiers as ranges ('< 30', '30-50', '>= 51')."""
    out, low = [], 0
    for tier in rules.get("village_tiers") or []:
        below = tier.get("below")
        text = f"{low}-{below - 1}" if below is not None else f">= {low}"
        out.append({"range": text if low else f"< {below}", "amount": float(tier.get("amount") or 0)})
        low = below if below is not None else low
    return out


def _charts(data: dict[str, Any]) -> dict[str, Markup]:
    """The report's SVG charts from its own figures (so chart and tables never disagree)."""
    quarantine = sorted(
        (
            (f"{s['source']} {code}", float(n))
            for s in data["sources"]
            for code, n in (s.get("reasons") or {}).items()
        ),
        key=lambda r: -r[1],
    )
    conflicts = sorted(
        ((k, float(v)) for k, v in data["master"]["conflicts_by_type"].items()), key=lambda r: -r[1]
    )
    audit = data["audit"]
    eligible: dict[str, float] = {}
    for r in audit.get("county_services") or []:
        eligible[str(r["hukou_county"])] = eligible.get(str(r["hukou_county"]), 0.0) + float(r["eligible"])
    top = sorted(eligible.items(), key=lambda r: -r[1])[:15]
    amounts: dict[str, float] = {}
    for r in audit.get("payment_counties") or []:
        amounts[str(r["hukou_county"])] = amounts.get(str(r["hukou_county"]), 0.0) + abs(float(r["amount"]))
    needs: dict[str, float] = {}
    for r in audit.get("needs_by_county") or []:
        needs[str(r["county"])] = needs.get(str(r["county"]), 0.0) + float(r["persons"])
    return {
        "quarantine": charts.hbar(quarantine, "隔离行数 Rows quarantined by source and reason"),
        "conflicts": charts.hbar(conflicts, "冲突 Conflicts by type"),
        "decisions_by_county": charts.hbar(
            top, "符合条件人次（前15县区）Eligible decisions, top 15 counties"
        ),
        "payment_counties": charts.hbar(
            sorted(amounts.items(), key=lambda r: -r[1])[:15],
            "发放差异金额（元，前15县区）Amount paid wrongly or not paid (yuan), top 15 counties",
        ),
        "needs": charts.hbar(
            sorted(needs.items(), key=lambda r: -r[1])[:15],
            "需求未知人数（前15县区）Needs not known, top 15 counties",
        ),
    }


def report_json(run_id: str, as_of: date, summary: dict[str, Any]) -> dict[str, Any]:
    """report.json: the summary with every section filled and every ID-shaped token masked."""
    data = scrub(_normalise(summary))
    return {**data, "run_id": run_id, "as_of": as_of.isoformat(), "generated_at": as_of.isoformat()}


def render_report(data: dict[str, Any], links: Mapping[str, str]) -> str:
    """report.html from report.json's content; `links` maps a batch's validation_report (under var/) to
    its href relative to the report, for the files that exist (the others are named, not linked)."""
    shown = defang(data)
    for s in shown["sources"]:
        under_var = s.get("validation_report")
        s["validation_href"] = links.get(under_var) if linkable(under_var) else None
    for f in shown["exchange"]:
        digest = str(f.get("sha256") or "")
        # a fingerprint in groups of 8, as it is usually read aloud and compared
        f["sha256_display"] = " ".join(digest[i : i + 8] for i in range(0, len(digest), 8))
    shown["audit"] = _audit_defaults(shown["audit"])
    others = shown.pop("other_stages")
    deliveries = [o for o in others if re.search(r"deliver|receipt", o["name"])]
    guards = shown.pop("guard") + [o for o in others if re.search(r"guard|mass", o["name"])]
    quarantine = [
        {"source": s["source"], "code": code, "rows": n, "zh": REASONS.get(code, "")}
        for s in shown["sources"]
        for code, n in (s.get("reasons") or {}).items()
    ]
    return (
        env()
        .get_template("report.html.j2")
        .render(
            **{**shown, "policy": shown.get("policy", "")},
            css=css("base.css", "report.css"),
            toc=TOC,
            charts=_charts(shown),
            quarantine=quarantine,
            quarantined_total=sum(int(s.get("quarantined") or 0) for s in shown["sources"]),
            fund_total=sum((shown["audit"].get("fund") or {}).values()),
            village_tiers=_tiers(shown["audit"].get("rules") or {}),
            deliveries=deliveries,
            guards=guards,
            other_stages=[o for o in others if o not in deliveries and o not in guards],
        )
    )


def render_index(runs: list[dict[str, Any]]) -> str:
    """reports/index.html: every run's headline figures (the report stage's run_rows, oldest first) and
    their trends, offline like the reports."""
    services = sorted({s for r in runs for s in r["eligible"] if s})
    labels = [str(r["as_of"]) for r in runs]
    eligible = charts.trend(
        labels,
        {s: [r["eligible"].get(s) for r in runs] for s in services},
        "符合条件人数 Eligible persons per run",
    )
    findings = charts.trend(
        labels,
        {
            "应享未享 eligible not paid": [r["not_paid"] for r in runs],
            "不应享而享 paid not eligible": [r["not_eligible"] for r in runs],
            "资金线索 fund findings": [r["fund"] for r in runs],
            "隔离 quarantined": [r["quarantined"] for r in runs],
        },
        "审计线索 Audit findings per run",
    )
    return (
        env()
        .get_template("index.html.j2")
        .render(
            runs=defang(scrub(list(reversed(runs)))),
            services=services,
            css=css("base.css", "report.css"),
            charts={"eligible": eligible, "findings": findings},
        )
    )
