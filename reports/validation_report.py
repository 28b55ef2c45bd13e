"""The validation report of one staged batch: validation.html beside validation.json.

Rendered by us from the validation result rather than by Great Expectations' Data Docs, which pull CSS,
scripts and a logo from public CDNs: an auditor on a government intranet opens this one file with no
network. Inline CSS only, no script, link or URL; every ID-number token is masked (first 6 + last 4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined

from core.storage import publish_bytes
from reports.report import STYLE, defang, scrub

_TEMPLATE = """<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<title>数据校验报告 Validation report {{ source }} {{ batch_id }}</title>
{{ style|safe }}</head>
<body>
<h1>数据校验报告 <span class="en">Validation report</span></h1>
<table>
<tr><th>来源 Source</th><td>{{ source }}</td></tr>
<tr><th>批次 Batch</th><td class="mono">{{ batch_id }}</td></tr>
<tr><th>业务日期 As of</th><td>{{ as_of }}</td></tr>
<tr><th>校验时间 Staged at</th><td>{{ staged_at }}</td></tr>
{% if contract %}<tr><th>数据协议 Contract</th><td class="mono">{{ contract }}</td></tr>{% endif %}
{% if suite %}<tr><th>校验规则集 Suite</th><td class="mono">{{ suite }}</td></tr>{% endif %}
<tr><th>结论 Verdict</th><td class="{{ 'ok' if verdict == 'accepted' else 'held' }}">
{{ '通过 accepted' if verdict == 'accepted' else '暂扣 held' }}</td></tr>
{% if note %}<tr><th>说明 Note</th><td>{{ note }}</td></tr>{% endif %}
<tr><th>行数 Rows</th><td class="num">{{ rows }}</td></tr>
<tr><th>接收 Accepted</th><td class="num">{{ accepted }}</td></tr>
<tr><th>隔离 Quarantined</th><td class="num">{{ quarantined }}</td></tr>
</table>

{% if schema_drift %}
<h2>结构变化 <span class="en">Schema drift (batch held, nothing staged)</span></h2>
<table>
<tr><th>文件 File</th><td class="mono">{{ schema_drift.file }}</td></tr>
<tr><th>缺少的列 Missing</th><td class="mono">{{ schema_drift.missing|join(", ") or "—" }}</td></tr>
<tr><th>多出的列 Unexpected</th><td class="mono">{{ schema_drift.unexpected|join(", ") or "—" }}</td></tr>
<tr><th>协议列 Expected</th><td class="mono">{{ schema_drift.expected|join(", ") }}</td></tr>
<tr><th>实际列 Found</th><td class="mono">{{ schema_drift.found|join(", ") }}</td></tr>
</table>
{% endif %}

{% if gates %}
<h2>批次闸门 <span class="en">Batch gates</span></h2>
<table>
<tr><th>闸门 Gate</th><th>结果 Result</th><th>值 Value</th><th>上限 Limit</th><th>说明 Detail</th></tr>
{% for g in gates %}
<tr><td class="mono">{{ g.gate }}</td><td class="{{ 'ok' if g.passed else 'held' }}">
{{ '通过 passed' if g.passed else '触发 tripped' }}</td>
<td class="num">{{ g.value }}</td><td class="num">{{ g.limit }}</td><td>{{ g.detail }}</td></tr>
{% endfor %}
</table>
{% endif %}

<h2>隔离原因 <span class="en">Quarantine reasons</span></h2>
<table>
<tr><th>代码 Code</th><th>原因 Reason</th><th>行数 Rows</th></tr>
{% for code, n in reason_counts.items() %}
<tr><td class="mono">{{ code }}</td><td>{{ reasons_zh.get(code, "") }}</td><td class="num">{{ n }}</td></tr>
{% else %}<tr><td colspan="3">无 none</td></tr>{% endfor %}
</table>

{% if field_reason_counts %}
<h2>按字段 <span class="en">By field</span></h2>
<table>
<tr><th>字段 Field</th><th>代码 Code</th><th>行数 Rows</th></tr>
{% for f in field_reason_counts %}
<tr><td class="mono">{{ f.field }}</td><td class="mono">{{ f.code }}</td><td class="num">{{ f.rows }}</td></tr>
{% endfor %}
</table>
{% endif %}

{% if expectations %}
<h2>校验规则 <span class="en">Expectations (Great Expectations {{ gx_summary }})</span></h2>
<table>
<tr><th>规则 Expectation</th><th>字段 Column</th><th>级别 Severity</th><th>结果 Result</th>
<th>不符行数 Failing rows</th><th>其中标准化已拒 Refused before the suite</th><th>GX 不符 GX unexpected</th><th>%</th>
<th>本规则隔离 Rows flagged here</th><th>原因代码 Reason</th><th>样例 Sample (masked)</th></tr>
{% for e in expectations %}
<tr><td class="mono">{{ e.type }}</td><td class="mono">{{ e.column }}</td><td>{{ e.severity }}</td>
<td class="{{ 'ok' if e.success else 'held' }}">{{ '通过 pass' if e.success else '不符 fail' }}</td>
<td class="num">{{ e.failing_rows }}</td>
<td class="num">{{ e.refused_before }}{% for c, n in e.refused_before_codes.items() %} <span class="mono">{{ c }}</span>:{{ n }}{% endfor %}\
{% if e.not_checked %}（{{ e.not_checked }} 行因其他原因已拒、未校验 refused for another reason, not checked）{% endif %}\
{% if e.explained_nulls %}（{{ e.explained_nulls }} 个空值系前一步拒收 nulls left by refused values）{% endif %}</td>
<td class="num">{{ e.unexpected_count }}</td><td class="num">{{ e.unexpected_percent }}</td>
<td class="num">{{ e.rows_flagged }}</td>
<td><span class="mono">{{ e.reason_code }}</span> {{ e.reason_zh or "" }}</td>
<td class="mono">{{ e.sample|join(", ") }}</td></tr>
{% endfor %}
</table>
{% endif %}

{% if id_fixes %}
<h2>身份号码修复 <span class="en">ID numbers repaired</span></h2>
<table>
<tr><th>修复 Fix</th><th>行数 Rows</th></tr>
{% for fix, n in id_fixes.items() %}<tr><td class="mono">{{ fix }}</td><td class="num">{{ n }}</td></tr>{% endfor %}
</table>
{% endif %}

<p class="meta">身份号码均已脱敏（前6后4）。ID numbers are masked (first 6 + last 4).
本报告不引用任何外部资源。This file loads nothing from any network.</p>
</body>
</html>
"""


def _view(summary: dict[str, Any]) -> dict[str, Any]:
    """Defaults for every section, so a held batch (no suite run) renders as well as an accepted one."""
    gx = summary.get("gx") or {}
    expectations = []
    for e in gx.get("results") or []:
        e = dict(e)
        e.setdefault("severity", "error")
        e.setdefault("sample", [])
        # validation.json files written before the truthful counts: GX's own figures, nothing refused before
        e.setdefault("failing_rows", e.get("unexpected_count", 0))
        e.setdefault("refused_before", 0)
        e.setdefault("refused_before_codes", {})
        e.setdefault("explained_nulls", 0)
        e.setdefault("not_checked", 0)
        e["sample"] = ["—" if v is None else str(v) for v in e["sample"]]
        expectations.append(e)
    drift = summary.get("schema_drift")
    if drift:
        drift = {
            k: drift.get(k) or ([] if k != "file" else "")
            for k in ("file", "expected", "found", "missing", "unexpected")
        }
    gx_summary = ""
    if gx:
        gx_summary = f"{gx.get('evaluated', 0)} evaluated, {gx.get('failed', 0)} failed"
    return {
        "source": summary.get("source", ""),
        "batch_id": summary.get("batch_id", ""),
        "as_of": summary.get("as_of", ""),
        "staged_at": summary.get("staged_at", ""),
        "contract": summary.get("contract", ""),
        "suite": summary.get("suite", ""),
        "verdict": summary.get("verdict", ""),
        "note": summary.get("note", ""),
        "rows": summary.get("rows", 0),
        "accepted": summary.get("accepted", 0),
        "quarantined": summary.get("quarantined", 0),
        "schema_drift": drift,
        "gates": summary.get("gates") or [],
        "reason_counts": summary.get("reason_counts") or {},
        "reasons_zh": summary.get("reasons_zh") or {},
        "field_reason_counts": summary.get("field_reason_counts") or [],
        "expectations": expectations,
        "gx_summary": gx_summary,
        "id_fixes": summary.get("id_fixes") or {},
    }


def write_validation_report(summary: dict[str, Any], target: Path) -> Path:
    """Render a validation summary (the validation.json content) to a self-contained HTML file."""
    shown = defang(scrub(_view(summary)))
    env = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
    html = env.from_string(_TEMPLATE).render(**shown, style=STYLE)
    publish_bytes(target, html.encode("utf-8"))
    return target
