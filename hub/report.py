"""The auditor's report of one cycle run: reports/<run_id>/report.html and report.json.

The HTML is self-contained (inline CSS, no script, no URL of any kind) so it can be mailed or
archived as one file, with Chinese and English headings. Its only links are relative ones to the
batches' validation.html files beside it under var/ (they open offline too). Every ID number in it is masked (first 6 +
last 4, docs/domain.md, Personal information): the summary is scrubbed before it is rendered or written, whatever the
stages put into it.
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined

from hub.masking import mask_structure
from hub.storage import Storage, publish_bytes, write_json_atomic

# Inline CSS shared by every HTML file the hub writes (no stylesheet, font or image is fetched).
STYLE = """<style>
body { font-family: "PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC", sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; border-bottom: 2px solid #345; padding-bottom: .3em; }
h2 { font-size: 1.15em; margin-top: 1.8em; color: #345; }
h2 .en, h1 .en { color: #678; font-weight: normal; font-size: .85em; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #bbc; padding: .3em .7em; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.held { color: #a00; font-weight: bold; }
.ok { color: #070; }
.warn { background: #fff4e0; border: 1px solid #e0a040; padding: .5em 1em; }
.mono { font-family: Consolas, "DejaVu Sans Mono", monospace; font-size: .9em; }
.meta { color: #555; }
</style>
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<title>联办运行报告 Lianban run report {{ run_id }}</title>
{{ style|safe }}</head>
<body>
<h1>联办数据交换运行报告 <span class="en">Lianban cycle report</span></h1>
<p class="meta">运行 Run: <span class="mono">{{ run_id }}</span> &nbsp; 业务日期 As of: {{ as_of }}
{% if policy %} &nbsp; 政策 Policy: {{ policy }}{% endif %}</p>

{% if warnings %}
<h2>提示 <span class="en">Warnings</span></h2>
<div class="warn"><ul>{% for w in warnings %}<li>{{ w }}</li>{% endfor %}</ul></div>
{% endif %}

<h2>数据批次 <span class="en">Source batches</span></h2>
<table>
<tr><th>来源 Source</th><th>批次 Batch</th><th>结论 Verdict</th><th>行数 Rows</th><th>接收 Accepted</th>
<th>隔离 Quarantined</th><th>隔离原因 Reasons</th><th>主档使用批次 Batch in master</th>
<th>校验报告 Validation report (under var/)</th></tr>
{% for s in sources %}
<tr><td>{{ s.source }}</td><td class="mono">{{ s.batch_id or "—" }}</td>
<td class="{{ 'ok' if s.verdict == 'accepted' else 'held' }}">{{ s.verdict or "无 none" }}</td>
<td class="num">{{ s.rows if s.rows is not none else "" }}</td>
<td class="num">{{ s.accepted if s.accepted is not none else "" }}</td>
<td class="num">{{ s.quarantined if s.quarantined is not none else "" }}</td>
<td>{% for code, n in (s.reasons or {}).items() %}<span class="mono">{{ code }}</span>: {{ n }}<br>{% endfor %}</td>
<td class="mono">{{ s.used_batch_id or "—" }}</td>
<td class="mono">{% if s.validation_href %}<a href="{{ s.validation_href }}">{{ s.validation_report }}</a>\
{% else %}{{ s.validation_report or "—" }}{% endif %}</td></tr>
{% endfor %}
</table>

<h2>主档 <span class="en">Master file (一人一档)</span></h2>
<table>
<tr><th>人数 Persons</th><td class="num">{{ master.persons }}</td></tr>
<tr><th>冲突 Conflicts</th><td class="num">{{ master.conflicts }}</td></tr>
</table>

<h2>多元校核冲突 <span class="en">Conflicts by type</span></h2>
<table>
<tr><th>类型 Type</th><th>条数 Count</th></tr>
{% for t, n in (master.conflicts_by_type or {}).items() %}
<tr><td class="mono">{{ t }}</td><td class="num">{{ n }}</td></tr>
{% else %}<tr><td colspan="2">无 none</td></tr>{% endfor %}
</table>

<h2>资格判定 <span class="en">Decisions</span></h2>
<table>
<tr><th>服务 Service</th><th>判定人数 Evaluated</th><th>符合 Eligible</th><th>金额合计（元）Amount total (yuan)</th>
<th>本次变化 Changed this run</th><th>外发 Outbound files</th></tr>
{% for d in decisions %}
<tr><td>{{ d.title or d.service }} <span class="mono">{{ d.service }}</span></td>
<td class="num">{{ d.evaluated }}</td><td class="num">{{ d.eligible }}</td>
<td class="num">{{ "%.2f"|format(d.amount_total) }}</td>
<td class="num">{% if d.changed is not none %}{{ d.changed }} ({{ "%.1f"|format(100 * d.changed_share) }}%){% endif %}</td>
<td class="{{ 'held' if d.outbound == '暂扣 HELD' else '' }}">{{ d.outbound }}</td></tr>
{% else %}<tr><td colspan="6">无 none</td></tr>{% endfor %}
</table>

<h2>交换文件 <span class="en">Exchange files</span></h2>
<table>
<tr><th>对象 Partner</th><th>协议 Contract</th><th>文件 File</th><th>所属期 Period</th><th>行数 Rows</th>
<th>SHA-256</th></tr>
{% for f in exchange %}
<tr><td>{{ f.partner }}</td><td class="mono">{{ f.contract }}</td><td class="mono">{{ f.file }}</td>
<td>{{ f.period }}</td><td class="num">{{ f.rows }}</td><td class="mono">{{ f.sha256_display }}</td></tr>
{% else %}<tr><td colspan="6">无 none</td></tr>{% endfor %}
</table>

<p class="meta">身份号码均已脱敏（前6后4）。ID numbers are masked (first 6 + last 4).</p>
</body>
</html>
"""


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
        "master": master,
        "decisions": decisions,
        "sources": sources,
        "exchange": exchange,
        "warnings": list(summary.get("warnings") or []),
    }


_SAFE_PATH = re.compile(r"[\w.-]+(?:/[\w.-]+)*\.html")


def _relative_link(storage: Storage, out_dir: Path, under_var: Any) -> str | None:
    """A relative href from the report to a validation.html under var/, only for a file that exists there
    and a plain path (no scheme, no '//', no '..' of its own): the report links nothing outside var/."""
    if not isinstance(under_var, str) or not _SAFE_PATH.fullmatch(under_var) or ".." in under_var:
        return None
    target = storage.var / under_var
    if not target.is_file():
        return None
    return Path(os.path.relpath(target, out_dir)).as_posix()


def write_report(storage: Storage, run_id: str, as_of: date, summary: dict[str, Any]) -> Path:
    """Write report.json and the self-contained report.html for a run; returns the HTML path."""
    data = scrub(_normalise(summary))
    data = {**data, "run_id": run_id, "as_of": as_of.isoformat(), "generated_at": as_of.isoformat()}
    out_dir = storage.report_dir(run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "report.json", data)

    shown = defang(data)
    for s in shown["sources"]:
        s["validation_href"] = _relative_link(storage, out_dir, s.get("validation_report"))
    for f in shown["exchange"]:
        digest = str(f.get("sha256") or "")
        # a fingerprint in groups of 8, as it is usually read aloud and compared
        f["sha256_display"] = " ".join(digest[i : i + 8] for i in range(0, len(digest), 8))
    env = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
    html = env.from_string(_TEMPLATE).render(**{**shown, "policy": shown.get("policy", ""), "style": STYLE})
    target = out_dir / "report.html"
    publish_bytes(target, html.encode("utf-8"))
    return target
