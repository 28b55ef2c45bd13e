"""`hub master show`: one person's master record as it stood on a day, with the source and batch of each attribute.

Masked by default (docs/domain.md, Personal information: ID and certificate number first 6 + last 4, name first
character); `unmasked` shows raw values, and the caller writes an audit line (who, when, never the ID).
ID-number changes are followed: asking for a former number shows the person's record under the new one.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from core.masking import mask_id
from store.master_store import ATTRIBUTES, SOURCE_CODES, MasterStore

audit_log = logging.getLogger("hub.audit")


class RecordNotFound(LookupError):
    """The ID is well formed but the master file has no record of it (on that day)."""


class MalformedId(ValueError):
    """The ID is not a valid 18-character 公民身份号码."""


@dataclass
class RecordView:
    asked: str
    id_number: str
    row: dict[str, Any]
    changes: list[tuple[str, str]]  # (old, new) links from the asked number to the shown one


def normalise(raw: str, today: date) -> str:
    """The asked ID in normal form (the same repairs the pipeline applies), or MalformedId naming the reason."""
    from transforms.ids import normalise_ids

    checked = normalise_ids(pd.Series([raw], dtype="string"), today).iloc[0]
    if pd.notna(checked["id_reason"]):
        raise MalformedId(
            f"ID {mask_id(raw.strip())!s} is not a valid 18-character ID number ({checked['id_reason']}); "
            "expected 17 digits and a check character (0-9 or X), e.g. 330106199001011234"
        )
    return str(checked["id_number"])


def lookup(store: MasterStore, raw: str, day: date | None, today: date) -> RecordView:
    """The version of the person's record valid on `day` (the latest one when no day is given)."""
    asked = normalise(raw, today)
    history = store.history(asked)
    if history.empty:
        raise RecordNotFound(f"ID {mask_id(asked)} is not in the master file")
    current = store.current_id(asked)
    rows = history
    if day is not None:
        stamp = pd.Timestamp(day)
        valid = (history["valid_from"] <= stamp) & (
            history["valid_to"].isna() | (history["valid_to"] > stamp)
        )
        rows = history[valid.fillna(False).astype(bool)]
        if rows.empty:
            first = history["valid_from"].min().date()
            raise RecordNotFound(
                f"ID {mask_id(asked)} was not in the master file on {day} (its first version is from {first})"
            )
    # the number the person holds now wins; otherwise the newest version
    preferred = rows[rows["id_number"] == current]
    chosen = (preferred if not preferred.empty else rows).sort_values(["valid_from", "version"]).iloc[-1]
    shown = str(chosen["id_number"])
    chain = store.id_chain(asked)
    step = dict(zip(chain["old_id"], chain["new_id"], strict=True))
    changes: list[tuple[str, str]] = []
    now = asked
    while now != shown and now in step and len(changes) < len(step):
        changes.append((now, step[now]))
        now = step[now]
    return RecordView(asked=asked, id_number=shown, row=chosen.to_dict(), changes=changes)


def _text(value: Any) -> str:
    if value is None or (not isinstance(value, list | tuple) and pd.isna(value)):
        return "—"
    if isinstance(value, pd.Timestamp | datetime):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def mask_name(name: str) -> str:
    return name[:1] + "*" * (len(name) - 1) if name else name


def shown_value(attribute: str, value: Any, unmasked: bool) -> str:
    text = _text(value)
    if unmasked or text == "—":
        return text
    if attribute in ("id_number", "cert_number"):
        return mask_id(text)
    if attribute == "name":
        return mask_name(text)
    return text


def attribute_rows(view: RecordView, unmasked: bool) -> list[tuple[str, str, str, str]]:
    """(attribute, value, source, batch) for every master attribute, provenance decoded from `sources`."""
    codes = view.row.get("sources")
    codes = "" if codes is None or pd.isna(codes) else str(codes)
    out = []
    for j, attribute in enumerate(ATTRIBUTES):
        if attribute == "id_number":
            source, batch = "key", "—"
        else:
            code = codes[j - 1 : j] if len(codes) >= j else ""
            source_name = SOURCE_CODES.get(code)
            source = source_name or ("no source" if code == "-" else "unknown")
            batch = _text(view.row.get(f"{source_name}_batch")) if source_name else "—"
        out.append((attribute, shown_value(attribute, view.row.get(attribute), unmasked), source, batch))
    return out


def header_lines(view: RecordView, unmasked: bool) -> list[str]:
    def ident(value: str) -> str:
        return value if unmasked else mask_id(value)

    row = view.row
    lines = []
    for old, new in view.changes:
        lines.append(f"身份证号变更 ID changed from {ident(old)} to {ident(new)}")
    until = "now (current)" if pd.isna(row["valid_to"]) else _text(row["valid_to"])
    state = (
        "REMOVED from the master file (left every source)" if bool(row["removed"]) else "in the master file"
    )
    lines.append(f"主档记录 master record {ident(view.id_number)}, version {row['version']}: {state}")
    lines.append(
        f"valid {_text(row['valid_from'])} → {until}; caused by {_text(row['caused_by'])}; run {row['run_id']}"
    )
    return lines


def audit_unmasked(var_dir: Path, command: str) -> None:
    """An audit line for an unmasked display: who and when, never which ID."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = os.environ.get("USER", "unknown")
    when = datetime.now(UTC).isoformat(timespec="seconds")
    audit_log.warning("unmasked personal data shown: user=%s at=%s command=%r", who, when, command)
    path = var_dir / "state" / "audit.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"event": "unmasked_display", "user": who, "at": when, "command": command}) + "\n")
