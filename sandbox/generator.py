"""`hub sandbox init`: a seeded synthetic province in each department's native shape, with a ground truth.

What it writes under var/sandbox/ (Storage.sandbox), all of it reproducible from the seed except the token:

- frontdb_cdpf.sqlite (CJR_CJRZ) and frontdb_civil.sqlite (MZ_JZDX): the 前置库 tables, all TEXT, no key;
- drops/hrss/hrss_persons_<YYYYMMDD>.csv (GB18030, CRLF, Chinese headers) and its `.ok` marker;
- police/persons.jsonl: what the police REST simulator (sandbox.simulator) serves, page by page;
- secrets.env (LIANBAN_POLICE_TOKEN), sandbox.json (seed, size, as_of, counts, defect rates);
- truth/: quarantine.csv, decisions.csv, conflicts.csv, defects.csv, formula_names.csv.

People are generated as numpy arrays (one entry per person, vectorised); defects are injected into
disjoint sets of people at configurable rates (a share of the certificate holders each), so every
expected quarantine, conflict and decision can be derived from the generator's own facts. Decisions
come from sandbox.oracle, never from transforms/.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from core.settings import Settings
from core.storage import Storage, write_json_atomic
from hub.progress import step
from sandbox import names as namegen
from sandbox.oracle import (
    Assistance,
    PersonFacts,
    decide_bundle,
    load_bundle_parameters,
    load_parameters,
)
from sandbox.regions import OUTSIDE, ZHEJIANG

log = logging.getLogger(__name__)

SOURCES = ("cdpf", "civil", "hrss", "police")
CHUNK = 100_000  # rows formatted and written at a time (keeps memory flat at provincial scale)

# -- ID numbers (GB 11643-1999), written here independently of transforms/ ------------------------------

ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
CHECK_CHARS = "10X98765432"
_POWERS = 10 ** np.arange(16, -1, -1, dtype=np.int64)
_FULLWIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")


def check_char(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character over the first 17 digits of an ID number."""
    if len(first17) != 17 or not (first17.isascii() and first17.isdigit()):
        raise ValueError(f"expected 17 ASCII digits, got {len(first17)} characters")
    return CHECK_CHARS[sum(int(c) * w for c, w in zip(first17, ID_WEIGHTS.tolist(), strict=True)) % 11]


def check_chars(first17: np.ndarray) -> np.ndarray:
    """check_char for many 17-digit numbers held as int64 (vectorised)."""
    digits = (first17.astype(np.int64)[:, None] // _POWERS) % 10
    return np.array(list(CHECK_CHARS))[(digits * ID_WEIGHTS).sum(axis=1) % 11]


# -- defects ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DefectKind:
    """One kind of injected defect: where it may occur and what the hub must do with it."""

    name: str
    rate: float  # default share of certificate holders affected (one defective row each)
    sources: Mapping[str, float]  # sources it may hit, with relative weights
    reason: str | None  # quarantine reason code; None: the hub must accept (fix) the row
    about: str


_ANY = {"cdpf": 1.0, "civil": 1.0, "hrss": 1.0, "police": 1.0}

DEFECT_KINDS: tuple[DefectKind, ...] = (
    DefectKind("formula_name", 0.003, {"all": 1.0}, None, "name starts with '=' or '+' in every source"),
    DefectKind("name_conflict", 0.005, {"police": 1.0}, None, "police writes a variant of the cdpf name"),
    DefectKind("bad_check_char", 0.005, _ANY, "ID_CHECKSUM", "wrong check character"),
    DefectKind(
        "future_birth", 0.003, _ANY, "ID_BIRTH_FUTURE", "birth date after the run date (check char ok)"
    ),
    DefectKind(
        "excel_scientific",
        0.001,
        {"hrss": 1.0},
        "ID_SPREADSHEET_DAMAGED",
        "Excel scientific notation 3.30106E+17",
    ),
    DefectKind("missing_id", 0.001, {"hrss": 1.0, "civil": 1.0}, "ID_MISSING", "empty ID cell"),
    DefectKind("unknown_code", 0.001, {"civil": 1.0}, "CODE_UNKNOWN", "JZLX outside the code list"),
    DefectKind("duplicate_row", 0.005, _ANY, "DUPLICATE_ROW", "exact copy of an earlier row"),
    DefectKind("legacy_15", 0.005, _ANY, None, "15-digit ID of GB 11643-1989 (born 1900-1999)"),
    DefectKind("lowercase_x", 0.004, _ANY, None, "lowercase x check character"),
    DefectKind("fullwidth", 0.003, _ANY, None, "full-width digits and Ｘ"),
    DefectKind(
        "apostrophe",
        0.005,
        {"hrss": 8.0, "cdpf": 1.0, "civil": 1.0, "police": 1.0},
        None,
        "leading ' (Excel)",
    ),
    DefectKind("spaces", 0.003, _ANY, None, "spaces around the ID"),
    DefectKind(
        "older_version", 0.004, {"police": 1.0, "hrss": 1.0}, None, "an older row with an earlier time"
    ),
    DefectKind(
        "id_reissued",
        0.002,
        {"police": 1.0},
        None,
        "police reissued the number (原公民身份号码 on its row); cdpf, civil and hrss still use the old one",
    ),
)
DEFAULT_RATES: dict[str, float] = {k.name: k.rate for k in DEFECT_KINDS}
UNKNOWN_JZLX = "09"

# -- native codes -------------------------------------------------------------------------------------

CERT_STATUS = {1: "active", 2: "cancelled", 3: "suspended"}
HUKOU_STATUS = {0: "normal", 1: "dead", 2: "moved_out", 3: "missing"}
ASSISTANCE = {1: "dibao", 2: "dibao_edge", 3: "tekun", 4: "orphan", 5: "de_facto_orphan"}
EMPLOYMENT = np.array(["就业", "失业", "未就业"])
PENSION = np.array(["城乡居民", "职工", "未参保"])

CDPF_COLUMNS = (
    "CJRZH", "SFZH", "XM", "XB", "CSRQ", "CJLB", "CJDJ", "ZZZT", "FZRQ", "YXQZ", "HJXZQH", "CQHL", "JGYH",
    "XZCJ", "LYCSL", "LDNL", "GXSJ",
)  # fmt: skip
CIVIL_COLUMNS = ("SFZH", "XM", "JZLX", "XZQH", "DBBZ", "KSRQ", "JSRQ", "ZT", "GXSJ")
HRSS_COLUMNS = ("公民身份号码", "姓名", "就业状态", "养老保险类型", "工伤保险生活护理费", "更新时间")
POLICE_KEYS = ("gmsfhm", "xm", "xbdm", "csrq", "hjdz_xzqhdm", "hkztdm", "hkxzdm", "swrq", "gxsj")
FORMER_ID_KEY = "ygmsfhm"  # 原公民身份号码: on a reissued person's record only


@dataclass
class SandboxInfo:
    """Where the sandbox was written and what it holds."""

    root: Path
    as_of: date
    seed: int
    persons: int
    others: int
    cdpf_db: Path
    civil_db: Path
    hrss_csv: Path
    hrss_marker: Path
    police_jsonl: Path
    secrets_env: Path
    meta: Path
    truth_dir: Path
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


# -- dates --------------------------------------------------------------------------------------------


def _ymd(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    months = d.astype("datetime64[M]")
    year = d.astype("datetime64[Y]").astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (d - months.astype("datetime64[D]")).astype(np.int64) + 1
    return year, month, day


def _add_years(d: np.ndarray, years: np.ndarray | int) -> np.ndarray:
    """Same month and day `years` later (29 February becomes 28 February in common years)."""
    y, m, day = _ymd(d)
    months = ((y + years - 1970) * 12 + (m - 1)).astype("datetime64[M]")
    first = months.astype("datetime64[D]")
    length = ((months + 1).astype("datetime64[D]") - first).astype(np.int64)
    return first + (np.minimum(day, length) - 1).astype("timedelta64[D]")


def _days(n: np.ndarray | int) -> np.ndarray:
    return np.asarray(n, dtype=np.int64).astype("timedelta64[D]")


def _timestamps(rng: np.random.Generator, start: np.ndarray, end: np.ndarray | np.datetime64) -> np.ndarray:
    """Uniform timestamps in [start, end) to the second (start/end are days)."""
    lo = start.astype("datetime64[s]")
    span = np.maximum((np.asarray(end).astype("datetime64[s]") - lo).astype(np.int64), 1)
    return lo + (rng.random(len(lo)) * span).astype(np.int64).astype("timedelta64[s]")


def _iso(d: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(d.astype("datetime64[D]"), unit="D")


def _compact(d: np.ndarray) -> np.ndarray:
    text = np.char.replace(_iso(d), "-", "")
    return np.where(np.isnat(d), "", text)


def _stamp(t: np.ndarray) -> np.ndarray:
    return np.char.replace(np.datetime_as_string(t.astype("datetime64[s]"), unit="s"), "T", " ")


# -- the people ---------------------------------------------------------------------------------------


@dataclass
class _People:
    """Every person's true facts, one array entry per person; holders are 0..n-1, others after them."""

    n: int
    holder: np.ndarray
    female: np.ndarray
    birth: np.ndarray
    age: np.ndarray
    county: np.ndarray  # index into ZHEJIANG (hukou county)
    id_code: np.ndarray
    seq: np.ndarray
    id_number: np.ndarray  # object: 18-character str
    name: np.ndarray  # object
    category: np.ndarray
    level: np.ndarray
    cert_status: np.ndarray
    issued: np.ndarray
    valid_until: np.ndarray
    ltc: np.ndarray
    inst: np.ndarray
    cdpf_gx: np.ndarray
    police: np.ndarray
    status: np.ndarray
    police_county: np.ndarray
    death: np.ndarray
    police_gx: np.ndarray
    civil_member: np.ndarray
    hrss: np.ndarray
    employment: np.ndarray
    pension: np.ndarray
    wic: np.ndarray
    hrss_gx: np.ndarray
    # the facts of 就业帮扶, 机动轮椅车燃油补贴 and 临时救助 (_bundle_facts, a stream of their own)
    rural: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    lower_limb: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    vehicles: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    able: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def size(self) -> int:
        return len(self.holder)


COUNTY_CODES = np.array([c.code for c in ZHEJIANG])
COUNTY_WEIGHTS = np.array([c.weight for c in ZHEJIANG]) / sum(c.weight for c in ZHEJIANG)
DIBAO = np.array([c.dibao_standard for c in ZHEJIANG])
OUTSIDE_CODES = np.array([code for code, _ in OUTSIDE])
AGE_BANDS = np.array([[2, 18], [18, 30], [30, 45], [45, 60], [60, 75], [75, 97]], dtype=float)
AGE_HOLDERS = [0.045, 0.06, 0.12, 0.25, 0.32, 0.205]  # the disabled population is older
AGE_OTHERS = [0.2, 0.12, 0.18, 0.2, 0.18, 0.12]
CATEGORY_ADULT = [0.10, 0.12, 0.01, 0.50, 0.10, 0.12, 0.05]  # 视力 听力 言语 肢体 智力 精神 多重
CATEGORY_CHILD = [0.04, 0.10, 0.06, 0.20, 0.40, 0.05, 0.15]
LEVELS = [0.15, 0.25, 0.30, 0.30]


def _people(rng: np.random.Generator, n: int, m: int, as_of: np.datetime64) -> _People:
    """Holders and other people known to civil affairs or hrss, with their true facts."""
    size = n + m
    holder = np.arange(size) < n
    female = rng.random(size) < np.where(holder, 0.44, 0.5)
    band = np.where(holder, rng.choice(6, size, p=AGE_HOLDERS), rng.choice(6, size, p=AGE_OTHERS))
    years = AGE_BANDS[band, 0] + rng.random(size) * (AGE_BANDS[band, 1] - AGE_BANDS[band, 0])
    birth = as_of - _days(np.round(years * 365.2425))
    latest = min(np.datetime64("2024-12-31"), as_of - 400)
    birth = np.minimum(np.maximum(birth, np.datetime64("1930-01-01")), latest)
    by, bm, bd = _ymd(birth)
    ay, am, ad = _ymd(np.array([as_of]))
    age = ay[0] - by - ((am[0] * 100 + ad[0]) < (bm * 100 + bd)).astype(np.int64)

    county = rng.choice(len(ZHEJIANG), size, p=COUNTY_WEIGHTS)
    id_code = COUNTY_CODES[county].copy()
    moved = rng.random(size) < 0.08  # number issued in another county of the province
    id_code[moved] = COUNTY_CODES[rng.choice(len(ZHEJIANG), int(moved.sum()), p=COUNTY_WEIGHTS)]
    for k, c in enumerate(ZHEJIANG):
        if c.created is None:
            continue
        # numbers issued before a redistricting keep the old code; reissued ones carry the new one
        old = (county == k) & (by < c.created) & (rng.random(size) < 0.7)
        id_code[old] = np.array(c.predecessors)[rng.integers(0, len(c.predecessors), int(old.sum()))]
    migrant = rng.random(size) < 0.05  # born elsewhere, 户籍 now in Zhejiang
    id_code[migrant] = OUTSIDE_CODES[rng.integers(0, len(OUTSIDE_CODES), int(migrant.sum()))]

    # police facts first: outside-province registrations often carry an outside ID code
    police = holder & (rng.random(size) >= 0.003)
    r = rng.random(size)
    status = np.where(holder, np.select([r < 0.02, r < 0.03, r < 0.033], [1, 2, 3], 0), 0)
    outside = holder & (status == 0) & (rng.random(size) < 0.0102)
    outside_code = OUTSIDE_CODES[rng.integers(0, len(OUTSIDE_CODES), size)]
    police_county = np.where(outside, outside_code, COUNTY_CODES[county])
    id_code = np.where(outside & (rng.random(size) < 0.7), outside_code, id_code)
    death = np.maximum(as_of - _days(rng.integers(1, 1500, size)), birth + 1)
    death = np.where(status == 1, death, np.datetime64("NaT"))
    died = np.where(status == 1, death, as_of - 1)
    police_gx = np.where(
        status == 1,
        _timestamps(rng, died, np.minimum(died + 30, as_of)),
        _timestamps(rng, np.full(size, as_of - 730), as_of),
    )

    seq = np.where(female, 2 * rng.integers(1, 500, size), 2 * rng.integers(0, 500, size) + 1)
    ymd = by * 10_000 + bm * 100 + bd
    code_int = id_code.astype(np.int64)
    for _ in range(
        1000
    ):  # the same county, birthday and sequence twice, or a number ending in 000: draw again
        key = code_int * 10**11 + ymd * 1000 + seq
        order = np.argsort(key, kind="stable")
        again = order[1:][key[order][1:] == key[order][:-1]]
        # a genuine number ending in 000 reads as a spreadsheet's lost digits (hrss quarantines it)
        zeros = np.flatnonzero((seq % 100 == 0) & (check_chars(key) == "0"))
        again = np.union1d(again, zeros)
        if again.size == 0:
            break
        seq[again] = np.where(
            female[again], 2 * rng.integers(1, 500, again.size), 2 * rng.integers(0, 500, again.size) + 1
        )
    first17 = code_int * 10**11 + ymd * 1000 + seq
    id_number = np.char.add(first17.astype(str), check_chars(first17)).astype(object)
    name, _, _ = namegen.generate_names(rng, female)

    child = age < 18
    category = 1 + np.where(
        child, rng.choice(7, size, p=CATEGORY_CHILD), rng.choice(7, size, p=CATEGORY_ADULT)
    )
    level = 1 + rng.choice(4, size, p=LEVELS)
    ltc = rng.random(size) < np.where(level <= 2, 0.7, 0.4)
    inst = rng.random(size) < np.where(ltc, 0.09, 0.01)
    r = rng.random(size)
    cert_status = np.select([r < 0.03, r < 0.04], [2, 3], 1)
    cert_status = np.where((status == 1) & (rng.random(size) < 0.5), 2, cert_status)  # death often cancels
    validity = np.where(rng.random(size) < 0.05, 5, 10)
    expired = rng.random(size) < 0.04
    valid_until = np.where(
        expired,
        as_of - _days(rng.integers(1, 1100, size)),
        as_of + _days((rng.random(size) * validity * 365).astype(np.int64)),
    )
    issued = _add_years(valid_until, -validity)
    late = issued < birth + 30  # certificate issued to a young child: after birth, valid from then
    issued = np.where(late, np.minimum(birth + _days(rng.integers(30, 400, size)), as_of - 1), issued)
    valid_until = np.where(late, _add_years(issued, validity), valid_until)
    cdpf_gx = _timestamps(rng, np.maximum(issued, as_of - 730), as_of)

    civil_member = ~holder & (rng.random(size) < 0.7)
    hrss = np.where(holder, rng.random(size) < 0.6, ~civil_member | (rng.random(size) < 0.6))
    working = (age >= 16) & (age < 60)
    r = rng.random(size)
    employment = np.where(working, np.select([r < 0.2, r < 0.28], [0, 1], 2), 2)
    r = rng.random(size)
    pension = np.select(
        [age < 16, employment == 0],
        [2, np.select([r < 0.8, r < 0.95], [1, 0], 2)],
        np.select([r < 0.72, r < 0.84], [0, 1], 2),
    )
    adult_known = hrss & (age >= 18)
    share = max(float((adult_known & holder).sum()) / max(n, 1), 1e-9)
    wic = adult_known & (rng.random(size) < min(0.005 / share, 1.0))
    hrss_gx = _timestamps(rng, np.full(size, as_of - 365), as_of)

    return _People(
        n, holder, female, birth, age, county, id_code, seq, id_number, name, category, level, cert_status,
        issued, valid_until, ltc, inst, cdpf_gx, police, status, police_county, death, police_gx,
        civil_member, hrss, employment, pension, wic, hrss_gx,
    )  # fmt: skip


def _bundle_facts(rng: np.random.Generator, p: _People) -> None:
    """户口性质 (police), lower-limb disability, 机动轮椅车 and able-to-work (cdpf) for every person.

    Drawn from a stream of their own, so the other facts stay what the seed made them before these.
    About half the 户口 are rural; most physical disabilities and some multiple ones are of the lower
    limbs; a few of those holders have a motorised wheelchair (rarely two), and a handful of others have
    one registered too (the policy's category check must refuse them); the needs survey finds more of
    the working-age mild than the severe able to work."""
    size = p.size
    p.rural = rng.random(size) < 0.55
    p.lower_limb = rng.random(size) < np.select([p.category == 4, p.category == 7], [0.6, 0.2], 0.0)
    r = rng.random(size)
    p.vehicles = np.where(p.lower_limb, np.select([r < 0.005, r < 0.08], [2, 1], 0), (r < 0.002).astype(int))
    working = (p.age >= 16) & (p.age < 60)
    p.able = rng.random(size) < np.where(working, np.where(p.level <= 2, 0.2, 0.6), 0.1)


# -- civil-affairs roll -------------------------------------------------------------------------------


def _civil_rows(rng: np.random.Generator, p: _People, as_of: np.datetime64) -> dict[str, np.ndarray]:
    """The 民政 roll: in-force entries, ended and stale ones, and boundary dates around the run date."""
    size = p.size
    known = p.holder | p.civil_member
    r = rng.random(size)
    program = np.where(
        p.holder,
        np.select([r < 0.015, r < 0.135, r < 0.175], [3, 1, 2], 0),
        np.where(p.civil_member, np.select([r < 0.15, r < 0.75], [3, 1], 2), 0),
    )
    orphan = known & (p.age < 18) & (rng.random(size) < 0.11)
    blocks: list[tuple[np.ndarray, np.ndarray, str]] = []

    def add(mask: np.ndarray, kinds: np.ndarray | int, mode: str) -> None:
        people = np.flatnonzero(mask)
        blocks.append((people, np.broadcast_to(np.asarray(kinds), (size,))[people], mode))

    low = np.where(rng.random(size) < 0.7, 1, 2)
    add(program > 0, program, "in_force")
    add((program == 3) & (rng.random(size) < 0.2), 1, "in_force")  # 特困 with a 低保 entry not closed
    add(orphan, np.where(rng.random(size) < 0.6, 4, 5), "in_force")
    add(orphan & (program == 0) & (rng.random(size) < 0.4), 1, "in_force")
    add(known & (rng.random(size) < 0.04), low, "ended")
    add(known & (rng.random(size) < 0.005), low, "stale")  # ZT still '1' but JSRQ passed
    add(known & (rng.random(size) < 0.003), low, "future")  # starts after the run date
    add(known & (rng.random(size) < 0.002), low, "ends_today")
    add(known & (rng.random(size) < 0.002), low, "starts_today")

    person = np.concatenate([b[0] for b in blocks])
    kind = np.concatenate([b[1] for b in blocks]).astype(np.int64)
    mode = np.concatenate([np.full(len(b[0]), b[2]) for b in blocks])
    rows = len(person)
    birth = p.birth[person]
    start = np.maximum(birth, as_of - _days(rng.integers(1, 3000, rows)))
    past = np.maximum(birth, as_of - _days(rng.integers(400, 4000, rows)))
    closed = np.minimum(past + _days(rng.integers(30, 3 * 365, rows)), as_of - 1)
    nat = np.datetime64("NaT", "D")
    start = np.select(
        [np.isin(mode, ["ended", "stale"]), mode == "future", mode == "starts_today"],
        [past, as_of + _days(rng.integers(1, 61, rows)), np.full(rows, as_of)],
        start,
    )
    end = np.select(
        [np.isin(mode, ["ended", "stale"]), mode == "ends_today"], [closed, np.full(rows, as_of)], nat
    )
    active = mode != "ended"
    # deaths: half the entries are closed a month after, the rest still run (不应享而享 cases)
    dead = (p.status[person] == 1) & active & np.isnat(end) & (start <= as_of) & (rng.random(rows) < 0.5)
    death = p.death[person]
    end = np.where(dead, np.maximum(start, np.minimum(death + 30, as_of - 1)), end)
    active = active & ~dead
    dbbz = DIBAO[p.county[person]] - np.where(np.isin(mode, ["ended", "stale"]) | dead, 60, 0)
    lo = np.maximum(start, as_of - 730)
    lo = np.where(np.isnat(end), lo, np.maximum(lo, end))
    gx = _timestamps(rng, np.minimum(lo, as_of - 1), as_of)
    order = np.argsort(gx, kind="stable")  # the 前置库 table in the order entries were last written
    return {
        "person": person[order],
        "kind": kind[order],
        "county": COUNTY_CODES[p.county[person[order]]],
        "dbbz": dbbz[order],
        "start": start[order],
        "end": end[order],
        "active": active[order],
        "gx": gx[order],
    }


# -- source tables before writing ---------------------------------------------------------------------


@dataclass
class _Table:
    """One source's rows: facts per base row, cell overrides from defects, and the final row order."""

    source: str
    fields: dict[str, np.ndarray]  # includes "person"
    ids: dict[int, str] = field(default_factory=dict)  # base row -> ID cell as written
    names: dict[int, str] = field(default_factory=dict)
    codes: dict[int, str] = field(default_factory=dict)
    bad: set[int] = field(default_factory=set)  # base rows the hub must quarantine
    duplicates: list[int] = field(default_factory=list)
    older: list[int] = field(default_factory=list)  # base rows that get an older version
    # base row -> the person's former number: police reports it (原公民身份号码), a cdpf certificate still
    # carries it (the certificate number is the number it was issued to)
    former: dict[int, str] = field(default_factory=dict)
    order: np.ndarray | None = None

    @property
    def person(self) -> np.ndarray:
        return self.fields["person"]

    def __len__(self) -> int:
        return len(self.person)


def _overrides(values: np.ndarray, idx: np.ndarray, changes: dict[int, str]) -> np.ndarray:
    if changes:
        keys = np.fromiter(changes, dtype=np.int64, count=len(changes))
        for at in np.flatnonzero(np.isin(idx, keys)):
            values[at] = changes[int(idx[at])]
    return values


@dataclass
class _Truth:
    quarantine: list[tuple[str, str, str]] = field(default_factory=list)
    defects: list[tuple[str, str, str, str]] = field(default_factory=list)
    formula: list[str] = field(default_factory=list)
    conflicts: list[tuple[str, str]] = field(default_factory=list)


def _dirty_id(kind: str, id18: str, rng: np.random.Generator, as_of: np.datetime64) -> str:
    """The ID cell as a department writes it, for one ID defect."""
    if kind == "legacy_15":
        return id18[:6] + id18[8:17]
    if kind == "lowercase_x":
        return id18[:17] + "x"
    if kind == "fullwidth":
        return id18.translate(_FULLWIDTH)
    if kind == "apostrophe":
        return "'" + id18
    if kind == "spaces":
        return ("  " + id18, id18 + " ", " " + id18 + "  ")[int(rng.integers(0, 3))]
    if kind == "bad_check_char":
        wrong = [c for c in CHECK_CHARS if c != id18[17]]
        return id18[:17] + wrong[int(rng.integers(0, len(wrong)))]
    if kind == "future_birth":
        born = str(as_of + int(rng.integers(1, 2000))).replace("-", "")
        first17 = id18[:6] + born + id18[14:17]
        return first17 + check_char(first17)
    if kind == "excel_scientific":
        return f"{int(id18):.5E}"
    if kind == "missing_id":
        return ""
    raise ValueError(f"{kind} is not an ID defect")


ID_DEFECTS = {
    "legacy_15",
    "lowercase_x",
    "fullwidth",
    "apostrophe",
    "spaces",
    "bad_check_char",
    "future_birth",
    "excel_scientific",
    "missing_id",
}


def _former_number(id18: str, taken: set[str], rng: np.random.Generator, elsewhere: int | None = None) -> str:
    """The number a person held before police reissued theirs: same county, birth date and sex, another
    sequence (GB 11643 numbers were issued twice and one holder got a new number). With `elsewhere`, the
    former number is of a county in another prefecture (a number reissued after a move, which a
    per-prefecture run must follow across partitions): the elsewhere-th such county, cyclically."""
    sequence = int(id18[14:17])
    county = id18[:6]
    if elsewhere is not None:
        others = [c.code for c in ZHEJIANG if c.created is None and c.code[:4] != id18[:4]]
        county = others[elsewhere % len(others)]
    while True:
        other = int(rng.integers(0, 500)) * 2 + sequence % 2
        first17 = f"{county}{id18[6:14]}{other:03d}"
        candidate = first17 + check_char(first17)
        if other != sequence and candidate not in taken:
            taken.add(candidate)
            return candidate


def disjoint_draws(rng: np.random.Generator, size: int) -> Callable[[np.ndarray, int], np.ndarray]:
    """draw(pool, k): up to k of the `pool` people no earlier draw took, at random, in order; each
    injected defect goes to people of its own, so its ground truth is exact."""
    used = np.zeros(size, dtype=bool)

    def draw(pool: np.ndarray, k: int) -> np.ndarray:
        candidates = np.flatnonzero(pool & ~used)
        chosen = np.sort(rng.choice(candidates, min(len(candidates), k), replace=False))
        used[chosen] = True
        return chosen

    return draw


def _inject(
    rng: np.random.Generator,
    p: _People,
    tables: dict[str, _Table],
    rates: Mapping[str, float],
    likely_eligible: np.ndarray,
    as_of: np.datetime64,
) -> _Truth:
    """Pick disjoint people per defect kind, damage one of their rows, and record what the hub must do."""
    size = p.size
    lookup: dict[str, np.ndarray] = {}
    for source in ("police", "hrss", "cdpf"):
        at = np.full(size, -1, dtype=np.int64)
        at[tables[source].person] = np.arange(len(tables[source]))
        lookup[source] = at
    civil_person = tables["civil"].person
    civil_order = np.argsort(civil_person, kind="stable")
    civil_first = np.searchsorted(civil_person[civil_order], np.arange(size))
    civil_count = np.searchsorted(civil_person[civil_order], np.arange(size), side="right") - civil_first
    has = {
        "cdpf": lookup["cdpf"] >= 0,
        "police": lookup["police"] >= 0,
        "hrss": lookup["hrss"] >= 0,
        "civil": civil_count > 0,
    }
    ids = p.id_number
    born = p.birth.astype("datetime64[Y]").astype(np.int64) + 1970
    last = np.array([s[17] for s in ids])
    constraint = {
        "formula_name": p.holder,
        "name_conflict": p.holder & has["police"],
        "legacy_15": (born >= 1900) & (born <= 1999) & (p.seq < 996),  # 996-999 were kept for centenarians
        "lowercase_x": last == "X",
        "excel_scientific": last != "X",
        "id_reissued": p.holder & has["police"],
    }
    draw = disjoint_draws(rng, size)
    truth = _Truth()

    def row_of(source: str, person: int) -> int:
        if source == "civil":
            return int(civil_order[civil_first[person] + int(rng.integers(0, civil_count[person]))])
        return int(lookup[source][person])

    everyone = np.ones(size, dtype=bool)
    for kind in DEFECT_KINDS:
        count = round(float(rates.get(kind.name, 0.0)) * p.n)
        if count <= 0:
            continue
        eligible = constraint.get(kind.name, everyone)
        if kind.name == "id_reissued":
            chosen = draw(eligible, count)
            taken = set(ids.tolist())
            for i, person in enumerate(chosen.tolist()):
                # every second one was reissued in another prefecture than the first number's
                old = _former_number(ids[person], taken, rng, i // 2 if i % 2 else None)
                tables["police"].former[row_of("police", person)] = old
                tables["cdpf"].former[row_of("cdpf", person)] = old
                for source in ("cdpf", "hrss"):
                    if has[source][person]:
                        tables[source].ids[row_of(source, person)] = old
                first = civil_first[person]
                for row in civil_order[first : first + civil_count[person]].tolist():
                    tables["civil"].ids[int(row)] = old
                truth.conflicts.append((ids[person], "ID_SUPERSEDED"))
                truth.defects.append(("police", ids[person], kind.name, ids[person]))
            continue
        if kind.name == "formula_name":  # half among people the civil exchange file will carry
            first = draw(eligible & likely_eligible, (count + 1) // 2)
            chosen = np.sort(np.concatenate([first, draw(eligible, count - len(first))]))
            prefixes = np.array(["=", "+"])[rng.integers(0, 2, len(chosen))]
            for person, prefix in zip(chosen.tolist(), prefixes.tolist(), strict=True):
                p.name[person] = prefix + p.name[person]
                truth.formula.append(ids[person])
                truth.defects.append(("all", ids[person], kind.name, ids[person]))
            continue
        sources = [s for s in SOURCES if s in kind.sources]
        weights = np.array([kind.sources[s] for s in sources])
        placed = 0
        for source, k in zip(sources, rng.multinomial(count, weights / weights.sum()).tolist(), strict=True):
            table = tables[source]
            chosen = draw(eligible & has[source], k)
            placed += len(chosen)
            for person in chosen.tolist():
                row = row_of(source, person)
                written = table.ids.get(row, ids[person])
                if kind.name in ID_DEFECTS:
                    written = _dirty_id(kind.name, ids[person], rng, as_of)
                    table.ids[row] = written
                elif kind.name == "name_conflict":
                    table.names[row] = namegen.variant_name(p.name[person])
                    truth.conflicts.append((ids[person], "NAME_MISMATCH"))
                elif kind.name == "unknown_code":
                    table.codes[row] = UNKNOWN_JZLX
                elif kind.name == "duplicate_row":
                    table.duplicates.append(row)
                elif kind.name == "older_version":
                    table.older.append(row)
                if kind.reason is not None:
                    truth.quarantine.append((source, written, kind.reason))
                    if kind.name != "duplicate_row":  # the first copy of a duplicate is kept
                        table.bad.add(row)
                truth.defects.append((source, ids[person], kind.name, written))
        if placed < count:
            log.warning("sandbox: only %d of %d people could take defect %s", placed, count, kind.name)
    return truth


def _add_older_versions(rng: np.random.Generator, table: _Table) -> None:
    """Older rows for the same person (earlier update time, one fact different): the newest must win."""
    if not table.older:
        return
    rows = np.array(table.older, dtype=np.int64)
    old = {k: v[rows].copy() for k, v in table.fields.items()}
    old["gx"] = old["gx"] - rng.integers(30 * 86400, 700 * 86400, len(rows)).astype("timedelta64[s]")
    if table.source == "police":
        was_dead = old["status"] != 0
        other = COUNTY_CODES[rng.integers(0, len(COUNTY_CODES), len(rows))]
        old["county"] = np.where(was_dead, old["county"], other)  # moved within the province since
        old["status"] = np.zeros(len(rows), dtype=old["status"].dtype)
        old["death"] = np.full(len(rows), np.datetime64("NaT", "D"))
    else:
        old["employment"] = (old["employment"] + rng.integers(1, 3, len(rows))) % 3
    table.fields = {k: np.concatenate([v, old[k]]) for k, v in table.fields.items()}


def _finalise_order(rng: np.random.Generator, table: _Table, base_rows: int) -> None:
    """Row order as written: base rows in order, older versions anywhere, duplicates after their original."""
    total = len(table)
    keys = np.arange(total, dtype=float)
    keys[base_rows:] = rng.random(total - base_rows) * base_rows
    dups = np.array(sorted(table.duplicates), dtype=np.int64)
    dup_keys = keys[dups] + (total - keys[dups]) * (1.0 - rng.random(len(dups)))
    rows = np.concatenate([np.arange(total), dups])
    table.order = rows[np.argsort(np.concatenate([keys, dup_keys]), kind="stable")]


# -- writing ------------------------------------------------------------------------------------------


def _chunks(order: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(order), CHUNK):
        yield order[start : start + CHUNK]


def _cdpf_chunk(p: _People, t: _Table, idx: np.ndarray) -> list[list[Any]]:
    who = t.person[idx]
    id18 = _overrides(p.id_number[who].astype(str), idx, t.former)
    cert = np.char.add(np.char.add(id18, p.category[who].astype(str)), p.level[who].astype(str))
    return [
        cert.tolist(),
        _overrides(p.id_number[who].copy(), idx, t.ids).tolist(),
        _overrides(p.name[who].copy(), idx, t.names).tolist(),
        np.where(p.female[who], "2", "1").tolist(),
        _iso(p.birth[who]).tolist(),
        p.category[who].astype(str).tolist(),
        p.level[who].astype(str).tolist(),
        p.cert_status[who].astype(str).tolist(),
        _iso(p.issued[who]).tolist(),
        _iso(p.valid_until[who]).tolist(),
        COUNTY_CODES[p.county[who]].tolist(),
        np.where(p.ltc[who], "1", "0").tolist(),
        np.where(p.inst[who], "1", "0").tolist(),
        np.where(p.lower_limb[who], "1", "0").tolist(),
        p.vehicles[who].astype(str).tolist(),
        np.where(p.able[who], "1", "0").tolist(),
        _stamp(p.cdpf_gx[who]).tolist(),
    ]


def _civil_chunk(p: _People, t: _Table, idx: np.ndarray) -> list[list[Any]]:
    f = t.fields
    who = f["person"][idx]
    kinds = np.char.zfill(f["kind"][idx].astype(str), 2).astype(object)
    return [
        _overrides(p.id_number[who].copy(), idx, t.ids).tolist(),
        p.name[who].tolist(),
        _overrides(kinds, idx, t.codes).tolist(),
        f["county"][idx].tolist(),
        f["dbbz"][idx].astype(str).tolist(),
        _compact(f["start"][idx]).tolist(),
        _compact(f["end"][idx]).tolist(),
        np.where(f["active"][idx], "1", "0").tolist(),
        _stamp(f["gx"][idx]).tolist(),
    ]


def _hrss_chunk(p: _People, t: _Table, idx: np.ndarray) -> list[list[Any]]:
    f = t.fields
    who = f["person"][idx]
    return [
        _overrides(p.id_number[who].copy(), idx, t.ids).tolist(),
        p.name[who].tolist(),
        EMPLOYMENT[f["employment"][idx]].tolist(),
        PENSION[f["pension"][idx]].tolist(),
        np.where(f["wic"][idx], "是", "否").tolist(),
        _stamp(f["gx"][idx]).tolist(),
    ]


def _police_chunk(p: _People, t: _Table, idx: np.ndarray) -> list[list[Any]]:
    f = t.fields
    who = f["person"][idx]
    death = _compact(f["death"][idx]).astype(object)
    death[death == ""] = None
    return [
        _overrides(p.id_number[who].copy(), idx, t.ids).tolist(),
        _overrides(p.name[who].copy(), idx, t.names).tolist(),
        np.where(p.female[who], "2", "1").tolist(),
        _compact(p.birth[who]).tolist(),
        f["county"][idx].tolist(),
        f["status"][idx].astype(str).tolist(),
        np.where(p.rural[who], "1", "2").tolist(),
        death.tolist(),
        _stamp(f["gx"][idx]).tolist(),
        _overrides(np.full(len(idx), None, dtype=object), idx, t.former).tolist(),
    ]


Chunker = Callable[[_People, _Table, np.ndarray], list[list[Any]]]


def _write_sqlite(
    path: Path, table_name: str, columns: tuple[str, ...], rows: Iterator[list[list[Any]]]
) -> int:
    """A 前置库 table: all TEXT, no primary key, rows inserted in the given order."""
    count = 0
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute(f"CREATE TABLE {table_name} ({', '.join(f'{c} TEXT' for c in columns)})")
        marks = ", ".join("?" * len(columns))
        for chunk in rows:
            # the table name is one of the generator's constants; values are bound parameters
            insert = f"INSERT INTO {table_name} VALUES ({marks})"  # noqa: S608
            con.executemany(insert, zip(*chunk, strict=True))
            count += len(chunk[0])
        con.commit()
    finally:
        con.close()
    return count


def _write_hrss(path: Path, rows: Iterator[list[list[Any]]]) -> int:
    """The hrss drop: GB18030 (strict), CRLF, Chinese header; the .ok marker is written after it."""
    count = 0
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w", encoding="gb18030", errors="strict", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(HRSS_COLUMNS)
        for chunk in rows:
            writer.writerows(zip(*chunk, strict=True))
            count += len(chunk[0])
    os.replace(tmp, path)
    path.with_name(path.name + ".ok").write_bytes(b"")
    return count


def _police_record(values: tuple[Any, ...]) -> dict[str, Any]:
    """One API record; 原公民身份号码 only where there is one, as the real API leaves empty fields out."""
    record = dict(zip(POLICE_KEYS, values[:-1], strict=True))
    if values[-1] is not None:
        record[FORMER_ID_KEY] = values[-1]
    return record


def _write_police(path: Path, rows: Iterator[list[list[Any]]]) -> int:
    count = 0
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for chunk in rows:
            out.writelines(
                json.dumps(_police_record(values), ensure_ascii=False) + "\n"
                for values in zip(*chunk, strict=True)
            )
            count += len(chunk[0])
    return count


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


# -- ground truth -------------------------------------------------------------------------------------


def _visible_facts(p: _People, tables: dict[str, _Table]) -> Iterator[PersonFacts]:
    """Each holder whose cdpf row the hub accepts, with the facts the hub can see (quarantined rows gone)."""
    police, hrss, civil = tables["police"], tables["hrss"], tables["civil"]
    police_row = np.full(p.size, -1, dtype=np.int64)
    hrss_row = np.full(p.size, -1, dtype=np.int64)
    base_police = len(p.police.nonzero()[0])
    base_hrss = len(p.hrss.nonzero()[0])
    police_row[police.person[:base_police]] = np.arange(base_police)  # the newest row of each person
    hrss_row[hrss.person[:base_hrss]] = np.arange(base_hrss)
    police_row[np.isin(police_row, list(police.bad))] = -1
    hrss_row[np.isin(hrss_row, list(hrss.bad))] = -1

    assistance: dict[int, list[Assistance]] = {}
    f = civil.fields
    ok = ~np.isin(np.arange(len(civil)), list(civil.bad))
    for person, kind, dbbz, start, end, active in zip(
        f["person"][ok].tolist(),
        f["kind"][ok].tolist(),
        f["dbbz"][ok].tolist(),
        f["start"][ok].astype(object).tolist(),
        f["end"][ok].astype(object).tolist(),
        f["active"][ok].tolist(),
        strict=True,
    ):
        assistance.setdefault(person, []).append(
            Assistance(ASSISTANCE[kind], Decimal(dbbz), start, end, active)
        )

    holders = np.flatnonzero(p.holder & ~np.isin(np.arange(p.size), list(tables["cdpf"].bad)))
    prow = police_row[holders]
    hrow = hrss_row[holders]
    status = np.full(len(holders), -1)
    county = np.full(len(holders), "", dtype="<U6")
    wic = np.zeros(len(holders), dtype=bool)
    known = prow >= 0
    status[known] = police.fields["status"][prow[known]]
    county[known] = police.fields["county"][prow[known]]
    wic[hrow >= 0] = hrss.fields["wic"][hrow[hrow >= 0]]
    death = np.full(len(holders), np.datetime64("NaT"), dtype="datetime64[D]")
    death[known] = police.fields["death"][prow[known]]
    pension = np.full(len(holders), None, dtype=object)
    pension[hrow >= 0] = np.array(["resident", "employee", "none"], dtype=object)[
        hrss.fields["pension"][hrow[hrow >= 0]]
    ]
    employment = np.full(len(holders), None, dtype=object)
    employment[hrow >= 0] = np.array(["employed", "unemployed", "not_employed"], dtype=object)[
        hrss.fields["employment"][hrow[hrow >= 0]]
    ]
    nature = np.full(len(holders), None, dtype=object)  # None: no usable police record
    nature[known] = np.where(p.rural[holders[known]], "rural", "urban")
    columns = zip(
        holders.tolist(),
        p.id_number[holders].tolist(),
        p.category[holders].tolist(),
        p.level[holders].tolist(),
        p.cert_status[holders].tolist(),
        p.valid_until[holders].astype(object).tolist(),
        p.ltc[holders].tolist(),
        p.inst[holders].tolist(),
        status.tolist(),
        county.tolist(),
        wic.tolist(),
        p.birth[holders].astype("datetime64[D]").astype(object).tolist(),
        death.astype(object).tolist(),
        pension.tolist(),
        employment.tolist(),
        p.able[holders].tolist(),
        p.lower_limb[holders].tolist(),
        p.vehicles[holders].tolist(),
        nature.tolist(),
        strict=True,
    )
    for (
        person, id_number, cat, lvl, cert, until, ltc, inst, st, cty, injury, born, died, scheme, work, able,
        lower, vehicles, residence,
    ) in columns:  # fmt: skip
        yield PersonFacts(
            id_number=id_number,
            category=cat,
            level=lvl,
            cert_status=CERT_STATUS[cert],
            cert_valid_until=until,
            needs_long_term_care=ltc,
            institutional_care=inst,
            hukou_status=HUKOU_STATUS.get(st),
            hukou_county=cty or None,
            assistance=tuple(assistance.get(person, ())),
            work_injury_care=injury,
            birth_date=born,
            death_date=died,
            pension_type=scheme,
            employment=work,
            able_to_work=able,
            lower_limb=lower,
            wheelchair_vehicles=vehicles,
            hukou_nature=residence,
        )


def _employed_seen(p: _People, tables: dict[str, _Table]) -> set[str]:
    """ID numbers hrss reports as employed in a row the hub accepts (its newest row)."""
    hrss = tables["hrss"]
    base = len(p.hrss.nonzero()[0])
    seen = ~np.isin(np.arange(base), list(hrss.bad)) & (hrss.fields["employment"][:base] == 0)
    return set(p.id_number[hrss.person[:base][seen]].tolist())


def _write_decisions(
    path: Path, people: Iterator[PersonFacts], as_of: date, settings: Settings, employed: set[str]
) -> tuple[int, dict[str, int], list[tuple[str, str]]]:
    """Stream the oracle's decisions to decisions.csv; also find the conflicts the hub must see in them.

    DEAD_BUT_ACTIVE: dead per police, employed per hrss or assisted per civil. CERT_ACTIVE_MOVED_OUT: an
    active certificate whose holder police registers as moved out, or in a county outside the province.
    """
    params = load_parameters(settings.path(settings.policy), as_of)
    bundle = load_bundle_parameters(settings.path(settings.policy), as_of)
    province = settings.region[:2]
    eligible = {"living_subsidy": 0, "nursing_subsidy": 0}
    found: list[tuple[str, str]] = []
    master = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("id_number", "service", "eligible", "amount"))
        for person in people:
            master += 1
            for d in decide_bundle(person, as_of, params, bundle):
                writer.writerow((d.id_number, d.service, int(d.eligible), f"{d.amount:.2f}"))
                eligible[d.service] = eligible.get(d.service, 0) + int(d.eligible)
            if person.hukou_status == "dead" and (
                person.id_number in employed or any(a.in_force(as_of) for a in person.assistance)
            ):
                found.append((person.id_number, "DEAD_BUT_ACTIVE"))
            away = person.hukou_county is not None and not person.hukou_county.startswith(province)
            if person.cert_status == "active" and (person.hukou_status == "moved_out" or away):
                found.append((person.id_number, "CERT_ACTIVE_MOVED_OUT"))
    return master, eligible, found


def _write_audit_inputs(
    seed: int,
    p: _People,
    tables: dict[str, _Table],
    truth: _Truth,
    as_of: date,
    settings: Settings,
    root: Path,
    cdpf_db: Path,
) -> dict[str, Any]:
    """The payment roll and the needs survey (sandbox.payments), from streams of their own so the
    four departments' data stay what the seed made them before these existed."""
    from sandbox import payments

    police = tables["police"]
    base = int(p.police.sum())
    row = np.full(p.size, -1, dtype=np.int64)
    row[police.person[:base]] = np.arange(base)
    row[np.isin(row, list(police.bad))] = -1
    known = row >= 0
    status = np.where(known, police.fields["status"][np.maximum(row, 0)], -1)
    county = np.where(known, police.fields["county"][np.maximum(row, 0)], "")
    # as fixed-width text: np.isin on object arrays compares every pair (hours at provincial size)
    damaged = np.isin(p.id_number.astype(str), np.array([d[1] for d in truth.defects], dtype=str))
    people = payments.Holder(
        id_number=p.id_number,
        name=p.name,
        county=COUNTY_CODES[p.county],
        holder=p.holder,
        clean=p.holder & known & ~damaged,
        status=status,
        in_province=np.char.startswith(county.astype(str), settings.region[:2]),
        death=p.death,
        cert_status=p.cert_status,
        level=p.level,
        institutional=p.inst,
    )
    pay_rng, village_rng, survey_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, 16]).spawn(3)
    )
    params = load_parameters(settings.path(settings.policy), as_of)
    roll = payments.write_payments(
        pay_rng, people, root / "truth" / "decisions.csv", as_of, params, root / "drops" / "civil_payments",
        root / "truth",
    )  # fmt: skip
    village = payments.village_codes(village_rng, COUNTY_CODES[p.county], p.holder)
    survey = payments.write_survey(survey_rng, people, village, as_of, cdpf_db, root / "truth")
    return {"payments": roll, "survey": survey}


# -- entry point --------------------------------------------------------------------------------------


def generator_fingerprint() -> str:
    """SHA-256 of this module's source: a sandbox made by other code is not the one a benchmark wants."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def init_sandbox(
    settings: Settings,
    persons: int = 20_000,
    seed: int = 20261101,
    as_of: date = date(2026, 11, 1),
    rates: Mapping[str, float] | None = None,
) -> SandboxInfo:
    """Wipe var/sandbox and generate a province of `persons` certificate holders as of `as_of`."""
    started = time.perf_counter()
    unknown = set(rates or {}) - set(DEFAULT_RATES)
    if unknown:
        raise ValueError(f"unknown defect kinds {sorted(unknown)}; expected some of {sorted(DEFAULT_RATES)}")
    rates = {**DEFAULT_RATES, **(rates or {})}
    if persons < 1:
        raise ValueError(f"persons must be at least 1, got {persons}")
    root = Storage(settings).sandbox
    if root.exists():
        shutil.rmtree(root)
    truth_dir = root / "truth"
    hrss_dir = root / "drops" / "hrss"
    for d in (truth_dir, hrss_dir, root / "police"):
        d.mkdir(parents=True, exist_ok=True)
    day = np.datetime64(as_of, "D")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    others = max(1, persons // 10)

    with step("sandbox people", persons + others):
        p = _people(streams[0], persons, others, day)
        _bundle_facts(np.random.default_rng(np.random.SeedSequence([seed, 17])), p)
        civil = _civil_rows(streams[1], p, day)
    police_people = np.flatnonzero(p.police)
    hrss_people = np.flatnonzero(p.hrss)
    tables = {
        "cdpf": _Table("cdpf", {"person": np.arange(persons)}),
        "civil": _Table("civil", civil),
        "hrss": _Table(
            "hrss",
            {
                "person": hrss_people,
                "employment": p.employment[hrss_people],
                "pension": p.pension[hrss_people],
                "wic": p.wic[hrss_people],
                "gx": p.hrss_gx[hrss_people],
            },
        ),
        "police": _Table(
            "police",
            {
                "person": police_people,
                "status": p.status[police_people],
                "county": p.police_county[police_people],
                "death": p.death[police_people],
                "gx": p.police_gx[police_people],
            },
        ),
    }
    tekun = np.zeros(p.size, dtype=bool)
    tekun[civil["person"][civil["kind"] == 3]] = True
    likely_eligible = (
        p.holder
        & (p.cert_status == 1)
        & (p.valid_until >= day)
        & p.police
        & (p.status == 0)
        & np.char.startswith(p.police_county.astype(str), "33")
        & p.ltc
        & (p.level <= 2)
        & ~tekun
        & ~p.wic
    )
    with step("sandbox defects") as progress:
        truth = _inject(streams[2], p, tables, rates, likely_eligible, day)
        progress["rows"] = len(truth.defects)
        for table in tables.values():
            base = len(table)
            _add_older_versions(streams[3], table)
            _finalise_order(streams[4], table, base)

    paths = {
        "cdpf": root / "frontdb_cdpf.sqlite",
        "civil": root / "frontdb_civil.sqlite",
        "hrss": hrss_dir / f"hrss_persons_{as_of:%Y%m%d}.csv",
        "police": root / "police" / "persons.jsonl",
    }
    writers: dict[str, tuple[Chunker, Callable[[Iterator[list[list[Any]]]], int]]] = {
        "cdpf": (_cdpf_chunk, lambda rows: _write_sqlite(paths["cdpf"], "CJR_CJRZ", CDPF_COLUMNS, rows)),
        "civil": (_civil_chunk, lambda rows: _write_sqlite(paths["civil"], "MZ_JZDX", CIVIL_COLUMNS, rows)),
        "hrss": (_hrss_chunk, lambda rows: _write_hrss(paths["hrss"], rows)),
        "police": (_police_chunk, lambda rows: _write_police(paths["police"], rows)),
    }
    row_counts: dict[str, int] = {}
    for source, (chunker, write) in writers.items():
        table = tables[source]
        if table.order is None:
            raise RuntimeError(f"sandbox: the {source} table was never ordered")
        with step(f"sandbox {source}") as progress:
            row_counts[source] = write(chunker(p, table, idx) for idx in _chunks(table.order))
            progress["rows"] = row_counts[source]

    with step("sandbox ground truth", persons):
        master, eligible, seen_conflicts = _write_decisions(
            truth_dir / "decisions.csv", _visible_facts(p, tables), as_of, settings, _employed_seen(p, tables)
        )
    conflicts = truth.conflicts + seen_conflicts
    with step("sandbox audit inputs"):
        audit_inputs = _write_audit_inputs(seed, p, tables, truth, as_of, settings, root, paths["cdpf"])

    _write_csv(truth_dir / "quarantine.csv", ("source", "id_raw", "reason_code"), truth.quarantine)
    _write_csv(truth_dir / "conflicts.csv", ("id_number", "conflict_type"), conflicts)
    _write_csv(truth_dir / "defects.csv", ("source", "id_number", "defect", "id_raw"), truth.defects)
    _write_csv(truth_dir / "formula_names.csv", ("id_number",), [(i,) for i in truth.formula])

    defect_counts = {k.name: 0 for k in DEFECT_KINDS}
    for _, _, kind, _ in truth.defects:
        defect_counts[kind] += 1
    quarantine_counts = {s: 0 for s in SOURCES}
    for source, _, _ in truth.quarantine:
        quarantine_counts[source] += 1
    conflict_counts: dict[str, int] = {}
    for _, kind in conflicts:
        conflict_counts[kind] = conflict_counts.get(kind, 0) + 1
    counts: dict[str, Any] = {
        "holders": persons,
        "others": others,
        "rows": row_counts,
        "defects": defect_counts,
        "quarantine": quarantine_counts,
        "master_persons": master,
        "eligible": eligible,
        "conflicts": conflict_counts,
        "formula_names": len(truth.formula),
        **audit_inputs,
    }
    meta = root / "sandbox.json"
    write_json_atomic(
        meta,
        {
            "seed": seed,
            "persons": persons,
            "as_of": as_of.isoformat(),
            "policy": settings.policy,
            "counts": counts,
            "defect_rates": rates,
            "defect_reasons": {k.name: k.reason for k in DEFECT_KINDS},
            "generator": generator_fingerprint(),
            "files": {s: str(paths[s].relative_to(root)) for s in SOURCES},
        },
    )
    secrets_env = root / "secrets.env"
    secrets_env.write_text(f"LIANBAN_POLICE_TOKEN={secrets.token_hex(16)}\n", encoding="utf-8")
    secrets_env.chmod(0o600)
    seconds = time.perf_counter() - started
    log.info(
        "sandbox: %d holders (+%d others) as of %s, rows %s, %d quarantines expected, in %.1f s",
        persons,
        others,
        as_of,
        row_counts,
        len(truth.quarantine),
        seconds,
    )
    return SandboxInfo(
        root=root,
        as_of=as_of,
        seed=seed,
        persons=persons,
        others=others,
        cdpf_db=paths["cdpf"],
        civil_db=paths["civil"],
        hrss_csv=paths["hrss"],
        hrss_marker=paths["hrss"].with_name(paths["hrss"].name + ".ok"),
        police_jsonl=paths["police"],
        secrets_env=secrets_env,
        meta=meta,
        truth_dir=truth_dir,
        counts=counts,
        seconds=seconds,
    )
