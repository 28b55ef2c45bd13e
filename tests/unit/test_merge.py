"""Merge into the master file: precedence (一数一源), civil in-force flags, dedupe, conflicts (多元校核)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd
import pytest

from core.master_schema import master_schema
from transforms.merge import (
    CONFLICT_COLUMNS,
    MASTER_COLUMNS,
    MergeInputError,
    PrecedenceError,
    apply_deltas,
    decode_sources,
    merge_plan,
    merge_sources,
    resolve_precedence,
    widen_scope,
)

AS_OF = date(2026, 3, 1)
_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def make_id(county: str = "330106", birth: str = "19800101", seq: str = "001") -> str:
    """A valid GB 11643 number (MOD 11-2 check character); seq odd = male."""
    body = county + birth + seq
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _W, strict=True)) % 11]


MAN = make_id(seq="001")  # born 1980-01-01, male
WOMAN = make_id("330102", "19900515", "002")  # born 1990-05-15, female


# who the four sources describe by default (each source row starts with these columns)
IDENTITY = {"id_number": MAN, "name": "张三", "gender": "male", "birth_date": "1980-01-01"}


def cdpf(**kw: Any) -> dict[str, Any]:
    row = {
        **IDENTITY,
        "cert_number": MAN + "41",
        "category": 4,
        "level": 1,
        "cert_status": "active",
        "cert_issued": "2020-01-01",
        "cert_valid_until": "2030-01-01",
        "hukou_county": "330106",
        "needs_long_term_care": True,
        "institutional_care": False,
        "updated_at": "2026-01-01 08:00:00",
        "_batch_id": "cdpf-b1",
    }
    return row | kw


def police(**kw: Any) -> dict[str, Any]:
    row = {
        **IDENTITY,
        "hukou_county": "330106",
        "hukou_status": "normal",
        "death_date": None,
        "updated_at": "2026-02-01 08:00:00",
        "_batch_id": "police-b1",
    }
    return row | kw


def civil(**kw: Any) -> dict[str, Any]:
    row = {
        "id_number": MAN,
        "name": "张三",
        "assistance_type": "dibao",
        "county": "330106",
        "dibao_standard": 1150.0,
        "start_date": "2020-01-01",
        "end_date": None,
        "active": True,
        "updated_at": "2026-01-15 08:00:00",
        "_batch_id": "civil-b1",
    }
    return row | kw


def hrss(**kw: Any) -> dict[str, Any]:
    row = {
        "id_number": MAN,
        "name": "张三",
        "employment": "not_employed",
        "pension_type": "resident",
        "work_injury_care": False,
        "updated_at": "2026-02-10 08:00:00",
        "_batch_id": "hrss-b1",
    }
    return row | kw


def frames(**sources: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    return {name: pd.DataFrame(rows) for name, rows in sources.items()}


def one(master: pd.DataFrame, id_number: str = MAN) -> pd.Series:
    rows = master[master["id_number"] == id_number]
    assert len(rows) == 1
    return rows.iloc[0]


def test_master_has_the_contracted_columns_and_one_row_per_cdpf_person() -> None:
    result = merge_sources(
        frames(
            cdpf=[cdpf(), cdpf(id_number=WOMAN, gender="female", birth_date="1990-05-15")], police=[police()]
        ),
        AS_OF,
    )
    assert list(result.master.columns) == list(MASTER_COLUMNS)
    assert list(result.conflicts.columns) == list(CONFLICT_COLUMNS)
    assert list(result.master["id_number"]) == sorted([MAN, WOMAN])


def test_police_wins_identity_and_hukou() -> None:
    result = merge_sources(
        frames(
            cdpf=[cdpf(name="张叁", hukou_county="330102")],
            police=[police(name="张三", hukou_county="330106", hukou_status="normal")],
        ),
        AS_OF,
    )
    row = one(result.master)
    assert row["name"] == "张三"
    assert decode_sources(row["sources"])["name"] == "police"
    assert row["hukou_county"] == "330106"
    assert row["hukou_status"] == "normal"
    assert row["police_batch"] == "police-b1"
    assert row["cdpf_batch"] == "cdpf-b1"


def test_cdpf_stands_in_when_police_has_no_record_and_hukou_status_stays_unknown() -> None:
    result = merge_sources(frames(cdpf=[cdpf(name="张叁", hukou_county="330102")], police=[]), AS_OF)
    row = one(result.master)
    assert row["name"] == "张叁"
    assert decode_sources(row["sources"])["name"] == "cdpf"
    assert row["gender"] == "male"
    assert row["birth_date"] == pd.Timestamp("1980-01-01")
    assert row["hukou_county"] == "330102"
    assert pd.isna(row["hukou_status"])
    assert pd.isna(row["police_batch"])


def test_people_without_a_cdpf_row_are_not_in_the_master() -> None:
    other = make_id("330102", "19700101", "003")
    result = merge_sources(
        frames(cdpf=[cdpf()], police=[police(), police(id_number=other)], hrss=[hrss(id_number=other)]), AS_OF
    )
    assert list(result.master["id_number"]) == [MAN]


def test_cdpf_facts_and_hrss_facts_come_from_their_sources() -> None:
    result = merge_sources(
        frames(
            cdpf=[cdpf(level=2, category=5, institutional_care=True)],
            hrss=[hrss(employment="employed", pension_type="employee", work_injury_care=True)],
        ),
        AS_OF,
    )
    row = one(result.master)
    assert (row["level"], row["category"], bool(row["institutional_care"])) == (2, 5, True)
    assert (row["employment"], row["pension_type"], bool(row["work_injury_care"])) == (
        "employed",
        "employee",
        True,
    )
    assert row["hrss_batch"] == "hrss-b1"


def test_missing_facts_default_to_false_flags_and_null_values() -> None:
    result = merge_sources(frames(cdpf=[cdpf()]), AS_OF)
    row = one(result.master)
    for flag in ("dibao", "dibao_edge", "tekun", "orphan_support", "work_injury_care"):
        assert row[flag] is False or row[flag] == False  # noqa: E712 - numpy bool
    assert result.master["work_injury_care"].dtype == bool
    assert pd.isna(row["dibao_standard"]) and pd.isna(row["employment"]) and pd.isna(row["civil_batch"])


@pytest.mark.parametrize(
    ("row", "in_force"),
    [
        (civil(), True),
        (civil(active=False), False),  # ended (ZT = 0)
        (civil(end_date="2026-02-28"), False),  # ended before the run date
        (civil(end_date="2026-03-01"), True),  # ends on the run date: still in force
        (civil(start_date="2026-03-02"), False),  # starts in the future
        (civil(start_date="2026-03-01"), True),
    ],
)
def test_civil_flags_count_only_rows_in_force_on_the_run_date(row: dict[str, Any], in_force: bool) -> None:
    master = merge_sources(frames(cdpf=[cdpf()], civil=[row]), AS_OF).master
    got = one(master)
    assert bool(got["dibao"]) is in_force
    assert (got["dibao_standard"] == 1150.0) if in_force else pd.isna(got["dibao_standard"])
    assert got["civil_batch"] == "civil-b1"


def test_civil_flags_by_type_and_dibao_standard_is_the_max_over_in_force_low_income_rows() -> None:
    rows = [
        civil(assistance_type="dibao", dibao_standard=1100.0),
        civil(assistance_type="dibao_edge", dibao_standard=1150.0),
        civil(assistance_type="dibao", dibao_standard=1300.0, active=False),  # not in force: not counted
        civil(assistance_type="tekun", dibao_standard=9999.0),  # not a low-income row: not counted
        civil(id_number=WOMAN, assistance_type="de_facto_orphan"),
    ]
    master = merge_sources(
        frames(cdpf=[cdpf(), cdpf(id_number=WOMAN, gender="female", birth_date="1990-05-15")], civil=rows),
        AS_OF,
    ).master
    man, woman = one(master), one(master, WOMAN)
    assert (bool(man["dibao"]), bool(man["dibao_edge"]), bool(man["tekun"])) == (True, True, True)
    assert not bool(man["orphan_support"])
    assert man["dibao_standard"] == 1150.0
    assert bool(woman["orphan_support"]) and not bool(woman["dibao"])
    assert pd.isna(woman["dibao_standard"])


def test_latest_updated_at_wins_within_a_source_whatever_the_row_order() -> None:
    result = merge_sources(
        frames(
            cdpf=[
                cdpf(level=1, updated_at="2026-02-01 00:00:00"),
                cdpf(level=3, updated_at="2025-12-01 00:00:00"),
            ],
            police=[
                police(hukou_status="dead", updated_at="2026-02-20 00:00:00"),
                police(hukou_status="normal", updated_at="2026-01-01 00:00:00"),
            ],
            hrss=[
                hrss(employment="unemployed", updated_at="2025-01-01 00:00:00"),
                hrss(employment="employed", updated_at="2026-01-01 00:00:00"),
            ],
        ),
        AS_OF,
    )
    row = one(result.master)
    assert (row["level"], row["hukou_status"], row["employment"]) == (1, "dead", "employed")


def _conflicts(result: Any, kind: str) -> pd.DataFrame:
    c = result.conflicts
    return c[c["conflict_type"] == kind]


def test_clean_person_has_no_conflict() -> None:
    result = merge_sources(frames(cdpf=[cdpf()], police=[police()], civil=[civil()], hrss=[hrss()]), AS_OF)
    assert result.conflicts.empty


def test_name_mismatch_between_police_and_cdpf() -> None:
    result = merge_sources(frames(cdpf=[cdpf(name="张叁")], police=[police(name="张三")]), AS_OF)
    hit = _conflicts(result, "NAME_MISMATCH")
    assert len(hit) == 1
    rec = hit.iloc[0]
    assert (rec["source_a"], rec["value_a"], rec["source_b"], rec["value_b"]) == (
        "police",
        "张三",
        "cdpf",
        "张叁",
    )
    assert (rec["batch_a"], rec["batch_b"], rec["department"]) == ("police-b1", "cdpf-b1", "cdpf")


def test_the_departments_of_a_conflict_come_from_the_master_schema() -> None:
    """A conflict is between the departments the master schema asks first (no department is named in the
    rules): with cdpf first for names, a name mismatch is cdpf's against police's, police to fix it."""
    schema = master_schema()
    attributes = [
        a.model_copy(update={"precedence": ["cdpf", "police"]}) if a.name == "name" else a
        for a in schema.attributes
    ]
    plan = merge_plan(schema.model_copy(update={"attributes": attributes}))
    result = merge_sources(frames(cdpf=[cdpf(name="张叁")], police=[police(name="张三")]), AS_OF, plan=plan)
    rec = _conflicts(result, "NAME_MISMATCH").iloc[0]
    assert (rec["source_a"], rec["value_a"], rec["source_b"], rec["value_b"], rec["department"]) == (
        "cdpf",
        "张叁",
        "police",
        "张三",
        "police",
    )


def test_no_name_conflict_without_a_police_record() -> None:
    assert merge_sources(frames(cdpf=[cdpf(name="张叁")]), AS_OF).conflicts.empty


def test_birth_mismatch_against_the_id_number() -> None:
    result = merge_sources(frames(cdpf=[cdpf()], police=[police(birth_date="1980-01-02")]), AS_OF)
    hit = _conflicts(result, "BIRTH_MISMATCH")
    assert len(hit) == 1
    rec = hit.iloc[0]
    assert (rec["source_a"], rec["value_a"], rec["source_b"], rec["value_b"]) == (
        "id_number",
        "1980-01-01",
        "police",
        "1980-01-02",
    )


def test_gender_mismatch_against_the_sequence_parity() -> None:
    result = merge_sources(frames(cdpf=[cdpf(gender="female")], police=[police()]), AS_OF)
    hit = _conflicts(result, "GENDER_MISMATCH")
    assert len(hit) == 1
    rec = hit.iloc[0]
    assert (rec["value_a"], rec["source_b"], rec["value_b"]) == ("male", "cdpf", "female")


def test_dead_but_employed_or_assisted() -> None:
    dead = police(hukou_status="dead", death_date="2025-11-30")
    result = merge_sources(
        frames(
            cdpf=[cdpf()],
            police=[dead],
            hrss=[hrss(employment="employed")],
            civil=[civil(), civil(assistance_type="tekun")],
        ),
        AS_OF,
    )
    hit = _conflicts(result, "DEAD_BUT_ACTIVE").set_index("source_b")
    assert set(hit.index) == {"hrss", "civil"}
    assert hit.loc["hrss", "value_b"] == "employed"
    assert hit.loc["civil", "value_b"] == "dibao,tekun"
    assert hit.loc["civil", "value_a"] == "dead,2025-11-30"


def test_dead_without_activity_is_no_conflict() -> None:
    dead = police(hukou_status="dead")
    result = merge_sources(
        frames(cdpf=[cdpf()], police=[dead], hrss=[hrss()], civil=[civil(active=False)]), AS_OF
    )
    assert _conflicts(result, "DEAD_BUT_ACTIVE").empty


def test_record_hash_follows_the_attributes_not_the_batches() -> None:
    base = merge_sources(frames(cdpf=[cdpf()], police=[police()]), AS_OF).master
    again = merge_sources(frames(cdpf=[cdpf(_batch_id="cdpf-b2")], police=[police()]), AS_OF).master
    changed = merge_sources(frames(cdpf=[cdpf(level=2)], police=[police()]), AS_OF).master
    assert base["record_hash"].iloc[0] == again["record_hash"].iloc[0]
    assert base["record_hash"].iloc[0] != changed["record_hash"].iloc[0]


def test_a_missing_canonical_column_is_named() -> None:
    bad = pd.DataFrame([cdpf()]).drop(columns=["cert_status"])
    with pytest.raises(MergeInputError, match="cdpf.*cert_status"):
        merge_sources({"cdpf": bad}, AS_OF)


def test_no_cdpf_batch_gives_an_empty_master() -> None:
    result = merge_sources(frames(police=[police()]), AS_OF)
    assert result.master.empty and list(result.master.columns) == list(MASTER_COLUMNS)


def test_every_attribute_records_its_source_and_batch() -> None:
    result = merge_sources(frames(cdpf=[cdpf()], police=[police()], civil=[civil()], hrss=[hrss()]), AS_OF)
    row = one(result.master)
    provenance = decode_sources(row["sources"])
    assert provenance["name"] == "police" and provenance["cert_number"] == "cdpf"
    assert provenance["dibao"] == "civil" and provenance["employment"] == "hrss"
    assert provenance["death_date"] == "police"  # police knows the person: no death date is its fact
    for attribute, source in provenance.items():
        assert row[f"{source}_batch"] == f"{source}-b1", attribute


def test_precedence_comes_from_configuration() -> None:
    both = frames(cdpf=[cdpf(name="张叁")], police=[police(name="张三")])
    default = one(merge_sources(both, AS_OF).master)
    cdpf_first = one(merge_sources(both, AS_OF, precedence={"name": ["cdpf", "police"]}).master)
    assert (default["name"], cdpf_first["name"]) == ("张三", "张叁")
    assert decode_sources(cdpf_first["sources"])["name"] == "cdpf"
    assert default["record_hash"] != cdpf_first["record_hash"]  # a provenance change is a change
    conflict = merge_sources(both, AS_OF, precedence={"name": ["cdpf", "police"]}).conflicts
    assert conflict.loc[conflict["conflict_type"] == "NAME_MISMATCH", "department"].tolist() == ["police"]


@pytest.mark.parametrize(
    ("configured", "message"),
    [
        ({"nickname": ["police"]}, "unknown attribute"),
        ({"employment": ["police"]}, "cannot say employment"),
        ({"name": []}, "distinct sources"),
        ({"name": ["police", "police"]}, "distinct sources"),
    ],
)
def test_bad_precedence_is_a_clear_error(configured: dict, message: str) -> None:
    with pytest.raises(PrecedenceError, match=message):
        resolve_precedence(configured, "config/x.yaml")


def test_active_certificate_with_hukou_outside_the_province_is_a_conflict_for_cdpf() -> None:
    moved = frames(cdpf=[cdpf()], police=[police(hukou_status="moved_out")])
    away = frames(cdpf=[cdpf()], police=[police(hukou_county="110105")])
    for case in (moved, away):
        hit = _conflicts(merge_sources(case, AS_OF, region="330000"), "CERT_ACTIVE_MOVED_OUT")
        assert hit["department"].tolist() == ["cdpf"] and hit["value_b"].tolist() == ["active"]
    assert _conflicts(
        merge_sources(frames(cdpf=[cdpf()], police=[police()]), AS_OF, region="330000"),
        "CERT_ACTIVE_MOVED_OUT",
    ).empty


# -- ID changes (原公民身份号码) --------------------------------------------------------------------------

NEW = make_id(seq="501")  # MAN's number reissued: same county, birth and sex, another sequence


def test_a_reissued_number_moves_the_other_departments_rows_to_the_new_number() -> None:
    result = merge_sources(
        frames(
            cdpf=[cdpf(level=2)],  # still keyed by MAN, the old number
            police=[police(id_number=NEW, former_id_number=MAN, name="张三")],
            civil=[civil()],
            hrss=[hrss(employment="employed")],
        ),
        AS_OF,
    )
    row = one(result.master, NEW)
    assert MAN not in set(result.master["id_number"])
    assert (row["level"], bool(row["dibao"]), row["employment"]) == (2, True, "employed")
    assert row["police_batch"] == "police-b1" and row["hukou_status"] == "normal"
    assert result.id_changes.to_dict("records") == [
        {"old_id": MAN, "new_id": NEW, "source": "police", "batch_id": "police-b1"}
    ]
    superseded = _conflicts(result, "ID_SUPERSEDED").set_index("source_b")
    assert sorted(superseded.index) == ["cdpf", "civil", "hrss"]
    assert (superseded["department"] == superseded.index).all()
    assert (superseded["value_b"] == MAN).all() and (superseded["value_a"] == NEW).all()
    assert (superseded["id_number"] == NEW).all() and (superseded["batch_a"] == "police-b1").all()
    assert superseded.loc["civil", "batch_b"] == "civil-b1"


def test_rows_already_under_the_new_number_raise_no_id_conflict_and_police_stale_rows_go() -> None:
    result = merge_sources(
        frames(
            cdpf=[cdpf(id_number=NEW, cert_number=NEW + "41")],
            police=[
                police(id_number=NEW, former_id_number=MAN),
                police(name="旧名", updated_at="2026-02-20 00:00:00"),  # police's own row under MAN
            ],
        ),
        AS_OF,
    )
    assert list(result.master["id_number"]) == [NEW]
    assert one(result.master, NEW)["name"] == "张三"
    assert _conflicts(result, "ID_SUPERSEDED").empty and len(result.id_changes) == 1


def test_id_change_chains_are_followed_and_bad_former_numbers_ignored() -> None:
    third = make_id(seq="901")
    legacy_man = MAN[:6] + MAN[8:17]  # MAN as a 15-digit number (GB 11643-1989)
    result = merge_sources(
        frames(
            cdpf=[cdpf()],
            police=[
                police(id_number=NEW, former_id_number=legacy_man, updated_at="2025-01-01 00:00:00"),
                police(id_number=third, former_id_number=NEW),
                police(id_number=WOMAN, former_id_number="123", gender="female", birth_date="1990-05-15"),
            ],
        ),
        AS_OF,
    )
    assert list(result.master["id_number"]) == [third]
    changes = result.id_changes.set_index("old_id")["new_id"].to_dict()
    assert changes == {MAN: third, NEW: third}


def test_without_former_numbers_the_merge_has_no_id_changes() -> None:
    result = merge_sources(frames(cdpf=[cdpf()], police=[police()]), AS_OF)
    assert result.id_changes.empty and list(result.id_changes.columns) == [
        "old_id",
        "new_id",
        "source",
        "batch_id",
    ]


def test_widen_scope_takes_both_numbers_of_a_change() -> None:
    changes = pd.DataFrame({"old_id": [MAN], "new_id": [NEW], "source": ["police"], "batch_id": ["p"]})
    assert widen_scope(pd.Series([NEW], dtype="string"), changes).tolist() == sorted([MAN, NEW])
    assert widen_scope(pd.Series([MAN], dtype="string"), changes).tolist() == sorted([MAN, NEW])
    assert widen_scope(pd.Series([WOMAN], dtype="string"), changes).tolist() == [WOMAN]


# -- delta batches -----------------------------------------------------------------------------------------


def test_delta_batches_applied_to_the_full_batch_equal_the_full_snapshot() -> None:
    people = [make_id(birth=f"1970{m:02d}01", seq=f"{100 + m}") for m in range(1, 11)]

    def sources(version: int) -> dict[str, list[dict[str, Any]]]:
        rows: dict[str, list[dict[str, Any]]] = {"cdpf": [], "police": [], "civil": [], "hrss": []}
        for i, who in enumerate(people):
            sex = "male" if int(who[16]) % 2 else "female"
            born = f"{who[6:10]}-{who[10:12]}-{who[12:14]}"
            changed = version == 2 and i in (2, 5)
            rows["cdpf"].append(
                cdpf(id_number=who, gender=sex, birth_date=born, level=3 if changed else 1, _batch_id="c")
            )
            rows["police"].append(
                police(id_number=who, gender=sex, birth_date=born, name="李四" if changed else "张三")
            )
            rows["civil"].append(civil(id_number=who, dibao_standard=1200.0 if changed else 1150.0))
            rows["hrss"].append(hrss(id_number=who, employment="employed" if changed else "not_employed"))
            if i % 2:  # a second assistance period, ended in version 2 for one person
                rows["civil"].append(
                    civil(id_number=who, assistance_type="tekun", active=not (version == 2 and i == 5))
                )
        if version == 2:  # a newcomer in every source
            who = make_id(birth="19991231", seq="201")
            rows["cdpf"].append(cdpf(id_number=who, birth_date="1999-12-31"))
            rows["police"].append(police(id_number=who, birth_date="1999-12-31"))
            rows["civil"].append(civil(id_number=who, assistance_type="dibao_edge"))
            rows["hrss"].append(hrss(id_number=who))
        return rows

    full1, full2 = sources(1), sources(2)
    stitched: dict[str, pd.DataFrame] = {}
    for source in full1:
        before, after = pd.DataFrame(full1[source]), pd.DataFrame(full2[source])
        # the delta: rows of the new snapshot not in the old one, as the 前置库 would send them
        delta = after.merge(before, how="left", indicator=True).query("_merge == 'left_only'")
        delta = delta.drop(columns="_merge").assign(_batch_id=f"{source}-delta")
        assert 0 < len(delta) < len(after)
        stitched[source] = apply_deltas(source, [before, delta])
        assert len(stitched[source]) == len(after)
    expected = merge_sources(frames(**full2), AS_OF)
    got = merge_sources(stitched, AS_OF)
    facts = [c for c in MASTER_COLUMNS if not c.endswith("_batch")]
    pd.testing.assert_frame_equal(got.master[facts], expected.master[facts])
    changed = got.master["cdpf_batch"] == "cdpf-delta"
    assert changed.sum() == 3  # the two changed persons and the newcomer credit the delta batch
    pd.testing.assert_frame_equal(
        got.conflicts.drop(columns=["batch_a", "batch_b"]),
        expected.conflicts.drop(columns=["batch_a", "batch_b"]),
    )


# -- precedence in the config file ---------------------------------------------------------------------


def test_a_bad_precedence_in_the_config_file_names_the_file_and_line(tmp_path: Any) -> None:
    from core.settings import ROOT, load_settings

    text = (ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("  employment: [hrss]", "  employment: [civil, police]"), encoding="utf-8")
    line = next(
        i for i, t in enumerate(bad.read_text(encoding="utf-8").splitlines(), 1) if "employment: [" in t
    )
    with pytest.raises(PrecedenceError, match=rf"{bad}:{line}: precedence.employment: .*cannot say"):
        load_settings(bad, tmp_path / "var")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(text.replace("  dibao: [civil]", "  dibao: [medical]"), encoding="utf-8")
    with pytest.raises(PrecedenceError, match=r"unknown\.yaml:\d+: precedence.dibao: .*unknown source"):
        load_settings(unknown, tmp_path / "var")


def test_every_work_list_labels_the_conflict_types_its_department_receives() -> None:
    import yaml

    from core.settings import ROOT
    from transforms.merge import CONFLICT_TYPES

    receives = {
        "cdpf": set(CONFLICT_TYPES),  # name (as the lower-precedence side), ID fields, moved out, old number
        "police": {"BIRTH_MISMATCH", "GENDER_MISMATCH"},
        "civil": {"DEAD_BUT_ACTIVE", "ID_SUPERSEDED"},
        "hrss": {"DEAD_BUT_ACTIVE", "ID_SUPERSEDED"},
    }
    for department, types in receives.items():
        path = ROOT / "schemas" / "exchange" / f"{department}_conflicts.yaml"
        labels = yaml.safe_load(path.read_text(encoding="utf-8"))["codes"]["conflict_type"]
        assert types <= set(labels), (path, types - set(labels))


def test_numbers_that_are_not_normalised_still_merge_by_their_text() -> None:
    """The integer keys need normalised 18-character numbers; anything else falls back to the text."""
    odd = "33010619800101001"  # 17 characters: staging would refuse it; the merge must not mix it up
    result = merge_sources(
        frames(
            cdpf=[cdpf(), cdpf(id_number=odd, name="王五")],
            police=[police(), police(id_number=odd, name="王伍")],
            hrss=[hrss(id_number=odd, employment="employed")],
        ),
        AS_OF,
    )
    assert list(result.master["id_number"]) == sorted([MAN, odd])
    row = one(result.master, odd)
    assert (row["name"], row["employment"]) == ("王伍", "employed")
    assert _conflicts(result, "NAME_MISMATCH")["id_number"].tolist() == [odd]
    assert pd.isna(one(result.master)["employment"])
