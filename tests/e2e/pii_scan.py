"""Personal-data scan of what a cycle leaves where personal data must not be: logs, reports, XCom, run
records, manifests and partner files not contracted to carry it.

A hit is a valid 18-character ID number (check character computed by transforms.ids.check_char), a
20-character certificate number (残疾人证号: an ID number and two digits) whose first 18 are a valid ID,
or the name of a sandbox person (the names the sandbox departments hold).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from transforms.ids import check_char

# exactly 18 or exactly 20 characters: a longer digit run is something else (and a masked number has '*')
ID_LIKE = re.compile(r"(?<![0-9A-Za-z*])(\d{17}[\dX](?:\d{2})?)(?![0-9A-Za-z*])")
# a name shorter than this is also an everyday word too often (two-character names are kept: most names are)
MIN_NAME_CHARS = 2


@dataclass(frozen=True)
class Hit:
    where: str
    kind: str  # id_number | cert_number | name
    value: str  # masked for the failure message


def valid_ids(text: str) -> Iterator[tuple[str, str]]:
    """(kind, value) for each valid ID or certificate number in the text."""
    found = ID_LIKE.findall(text)
    if not found:
        return
    first17 = pd.Series([v[:17] for v in found], dtype="string")
    checks = check_char(first17)
    for value, check in zip(found, checks, strict=True):
        if check is not pd.NA and value[17] == check:
            yield ("cert_number" if len(value) == 20 else "id_number"), value


def sandbox_names(var: Path) -> set[str]:
    """Every person's name the sandbox departments hold (police 姓名 is the generator's truth)."""
    police = next((var / "sandbox" / "police").glob("*.jsonl"))
    names = pd.read_json(police, lines=True, dtype=str)["xm"].dropna()
    return {n for n in names.str.strip() if len(n) >= MIN_NAME_CHARS and not n.isascii()}


def name_pattern(var: Path) -> re.Pattern[str]:
    """Any sandbox name; the longest first, so 欧阳娜娜 is reported rather than 欧阳娜."""
    names = sandbox_names(var)
    return re.compile("|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)))


def scan_text(where: str, text: str, names: re.Pattern[str]) -> list[Hit]:
    from core.masking import mask_id

    hits = [Hit(where, kind, mask_id(value)) for kind, value in valid_ids(text)]
    hits += [Hit(where, "name", m.group(0)[0] + "*" * (len(m.group(0)) - 1)) for m in names.finditer(text)]
    return hits


def _airflow_texts(db: Path) -> Iterator[tuple[str, str]]:
    """Every table of the Airflow metadata database as text, XCom first (it must exist and hold values)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert "xcom" in tables and con.execute("SELECT count(*) FROM xcom").fetchone()[0] > 0
        for table in sorted(tables, key=lambda t: t != "xcom"):
            for row in con.execute(f'SELECT * FROM "{table}"'):
                values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row]
                yield f"airflow.db {table}", "\t".join(values)
    finally:
        con.close()


def contracted_kinds(root: Path) -> dict[str, set[str]]:
    """Per partner contract (schemas/exchange, schemas/audit, ...): the kinds of personal data it carries.
    ID numbers only with id_mode raw and an id_number field; names only with a name field."""
    kinds: dict[str, set[str]] = {}
    for path in sorted((root / "schemas").glob("*/*.yaml")):
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(spec, dict) or "contract" not in spec or "partner" not in spec:
            continue  # a source contract: what departments send us
        fields = set(spec.get("fields") or {})
        carried = {"id_number"} if spec.get("id_mode") == "raw" and "id_number" in fields else set()
        kinds[str(spec["contract"])] = carried | ({"name"} if "name" in fields else set())
    return kinds


def partner_files(var: Path, root: Path) -> Iterator[tuple[Path, set[str]]]:
    """Every partner file and manifest with the kinds of personal data its contract lets it carry."""
    kinds = contracted_kinds(root)
    for manifest in sorted((var / "outbox").glob("*/*/*.manifest.json")):
        yield manifest, set()
        data = manifest.with_name(manifest.name.removesuffix(".manifest.json"))
        if manifest.parent.name == "rejects":
            continue  # a department's own refused rows go back to it as sent: that is their purpose
        contract = str(json.loads(manifest.read_text(encoding="utf-8")).get("contract"))
        if data.exists():
            yield data, kinds.get(contract, set())


def _decoded(data: bytes) -> str:
    """UTF-8, or GB18030 (some partners' encoding) when the bytes are not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("gb18030", "replace")


def scanned_files(var: Path, root: Path) -> Iterator[Path]:
    """Logs, reports, run records, the ledger notes' exports and uncontracted partner files."""
    yield from sorted((var / "airflow").rglob("*.log"))
    yield from sorted(p for p in (var / "reports").rglob("*") if p.is_file())
    yield from sorted(p for p in (var / "runs").rglob("*.json"))
    yield from sorted((var / "staged").glob("*/*/validation.*"))
    yield from sorted((var / "state").glob("*.jsonl"))  # the audit log of unmasked views
    yield from (path for path, carried in partner_files(var, root) if carried != {"id_number", "name"})


def scan(var: Path, root: Path, extra_texts: Iterable[tuple[str, str]] = ()) -> tuple[list[Hit], int]:
    """Every hit in the places scanned, and how many places (files, XCom values, texts) were scanned."""
    names = name_pattern(var)
    hits: list[Hit] = []
    places = 0
    texts: list[tuple[str, str]] = list(extra_texts)
    texts += [(p.relative_to(var).as_posix(), _decoded(p.read_bytes())) for p in scanned_files(var, root)]
    texts += list(_airflow_texts(var / "airflow" / "airflow.db"))
    carried = {p.relative_to(var).as_posix(): kinds for p, kinds in partner_files(var, root)}
    for where, text in texts:
        places += 1
        # a certificate number is an ID number and two digits: a file carrying IDs may carry it
        allowed = carried.get(where, set())
        allowed = allowed | ({"cert_number"} if "id_number" in allowed else set())
        hits += [h for h in scan_text(where, text, names) if h.kind not in allowed]
    return hits, places
