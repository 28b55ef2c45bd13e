"""The validation report of one staged batch (validation.html beside validation.json), rendered from
its summary by templates/validation.html.j2.

Rendered by us from the validation result rather than by Great Expectations' Data Docs, which pull CSS,
scripts and a logo from public CDNs: an auditor on a government intranet opens this one file with no
network. Inline CSS only, no script, link or URL; every ID-number token is masked (first 6 + last 4).
"""

from __future__ import annotations

from typing import Any

from reports.report import css, defang, env, scrub


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


def render_validation_report(summary: dict[str, Any]) -> str:
    """A validation summary (the validation.json content) as a self-contained HTML page; the ingest
    stage publishes it beside validation.json."""
    shown = defang(scrub(_view(summary)))
    return env().get_template("validation.html.j2").render(**shown, css=css("base.css"))
