"""The policy expression grammar: every feature evaluated vectorised, and hostile text refused at load."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from transforms.eligibility import MASTER_TYPES, PolicyError, load_policy
from transforms.policy_expr import Env, ExprError, Names, compile_expression, day_numbers

AS_OF = date(2026, 3, 15)
NAMES = Names(MASTER_TYPES, {"severe": "bool"}, frozenset({"tier", "share"}))
PARAMS = {"tier": 300.0, "share": 0.3}


def frame() -> pd.DataFrame:
    """Three persons; the third has every fact unknown."""
    return pd.DataFrame(
        {
            "id_number": ["A", "B", "C"],
            "level": pd.array([1, 3, None], dtype="Int64"),
            "category": pd.array([4, 5, None], dtype="Int64"),
            "cert_status": pd.array(["active", "cancelled", None], dtype="string"),
            "hukou_county": pd.array(["330106", "420102", None], dtype="string"),
            "birth_date": pd.to_datetime(["1980-03-15", "2010-03-16", None]),
            "death_date": pd.to_datetime(["2026-02-10", None, None]),
            "cert_valid_until": pd.to_datetime(["2026-06-13", "2025-01-01", None]),
            "dibao": pd.array([True, False, None], dtype="boolean"),
            "dibao_standard": pd.array([1000.0, 1200.5, None], dtype="Float64"),
        }
    )


def run(text: str, data: pd.DataFrame | None = None) -> list[Any]:
    compiled = compile_expression(text, NAMES)
    env = Env(frame() if data is None else data, AS_OF, MASTER_TYPES, lambda name, env: PARAMS[name])
    env.facts["severe"] = compile_expression("level <= 2", NAMES).run
    return [
        None if v is pd.NA or (isinstance(v, float) and np.isnan(v)) else v for v in compiled.evaluate(env)
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("level == 1", [True, False, None]),
        ("level != 1", [False, True, None]),
        ("level < 3", [True, False, None]),
        ("level >= 3", [False, True, None]),
        ("1 <= level <= 2", [True, False, None]),
        ("cert_status == 'active'", [True, False, None]),
        ("level <= 2 and dibao", [True, False, None]),
        ("level >= 3 or dibao", [True, True, None]),
        ("not dibao", [False, True, None]),
        ("dibao and False", [False, False, False]),  # Kleene: unknown and false is false
        ("dibao and level == 9", [False, False, None]),  # unknown and unknown stays unknown
        ("dibao or True", [True, True, True]),
        ("category in [5, 6]", [False, True, None]),
        ("category not in [5, 6]", [True, False, None]),
        ("cert_status in ('active', 'suspended')", [True, False, None]),
        ("is_null(level)", [False, False, True]),
        ("not_null(death_date)", [True, False, False]),
        ("severe", [True, False, None]),
        ("starts_with(hukou_county, '33')", [True, False, None]),
        ("cert_valid_until >= as_of", [True, False, None]),
        ("cert_valid_until - as_of <= 90", [True, True, None]),
        ("cert_valid_until - 90 <= as_of", [True, True, None]),
        ("date('2026-03-01') <= as_of", [True, True, True]),
    ],
)
def test_logic_comparisons_membership_and_null_tests(text: str, expected: list[Any]) -> None:
    assert run(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("share * dibao_standard", [300.0, 360.15, None]),
        ("tier * (level == 1) + 100", [400.0, 100.0, None]),
        ("tier / 2 - 50", [100.0, 100.0, 100.0]),
        ("dibao_standard / 0", [None, None, None]),  # no infinities in amounts
        ("-level", [-1.0, -3.0, None]),
        ("age(birth_date)", [46.0, 15.0, None]),  # birthday on the run date counts; the day after does not
        ("months_between(death_date, as_of)", [1.0, None, None]),
        ("cert_valid_until - as_of", [90.0, -438.0, None]),
        ("500 if starts_with(hukou_county, '33') else 300", [500.0, 300.0, None]),
        ("min(level, 2)", [1.0, 2.0, None]),
        ("max(level * 100, 250)", [250.0, 300.0, None]),
    ],
)
def test_arithmetic_dates_and_functions(text: str, expected: list[Any]) -> None:
    got = run(text)
    assert [None if v is None else round(float(v), 2) for v in got] == expected


def test_dates_cover_years_one_to_9999_without_nanosecond_timestamps() -> None:
    data = frame().astype({"cert_valid_until": object})
    data["cert_valid_until"] = [date(9999, 12, 31), date(1, 1, 1), None]
    assert run("cert_valid_until >= as_of", data) == [True, False, None]
    days = day_numbers(pd.Series([date(9999, 12, 31)], dtype=object))
    assert float(days.iloc[0]) == (date(9999, 12, 31) - date(1970, 1, 1)).days


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("@logging.os.system('id')", r"not a valid expression \(parameters are named without '@'\)"),
        ("__import__('os')", "the function '__import__' is not allowed"),
        ("pd.read_csv('/etc/passwd')", r"attribute access \(\.name\) is not allowed"),
        ("().__class__", r"attribute access \(\.name\) is not allowed"),
        ("level.real", r"attribute access \(\.name\) is not allowed"),
        ("(lambda: 1)()", "lambda is not allowed"),
        ("[x for x in level]", "a list comprehension is not allowed"),
        ("level[0]", r"subscripts \(\[\.\.\.\]\) is not allowed"),
        ("open('/etc/passwd')", "the function 'open' is not allowed"),
        ("f'{level}'", "an f-string is not allowed"),
        ("(x := 1)", r"assignment \(:=\) is not allowed"),
        ("level ** 2", "the operator '\\*\\*' is not allowed"),
        ("level is None", "the comparison 'is' is not allowed"),
        ("no_such_fact", "unknown name 'no_such_fact'"),
        ("level == 'one'", "cannot compare 'level' \\(a number\\) with \"'one'\" \\(text\\)"),
        ("cert_status < 'b'", "text can only be compared with == or !="),
        ("category in [5, 'six']", "'six' in a list compared with a number"),
        ("category in level", "'in' needs a literal list"),
        ("date('2023-02-30')", "expected a real date"),
        ("starts_with(hukou_county, hukou_county)", "takes a text literal as its prefix"),
        ("age(level)", "'level' is a number, expected a date"),
        ("dibao + as_of * 2", "date arithmetic is date"),
        ("dibao + hukou_county", "'hukou_county' is text, expected a number"),
        ("not level - as_of", "date arithmetic"),
        ("age(birth_date, as_of)", r"age\(\) takes 1 argument"),
        ("_hidden", "the name '_hidden' is not allowed"),
        ("None", "the literal None is not allowed"),
        ("level +" * 2000, "longer than 2000 characters"),
    ],
)
def test_anything_outside_the_grammar_is_refused(text: str, message: str) -> None:
    with pytest.raises(ExprError, match=message):
        compile_expression(text, NAMES)


HOSTILE = [
    "@logging.os.system('id')",
    "__import__('os')",
    "pd.read_csv('/etc/passwd')",
    "().__class__",
    "level.real",
    "(lambda: 1)()",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hostile_policy_fails_to_load_naming_file_line_and_key(tmp_path: Path, hostile: str) -> None:
    text = (Path(__file__).resolve().parents[2] / "policies" / "zhejiang.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    line = next(i for i, x in enumerate(lines, 1) if x.strip() == "EXCL_ORPHAN_SUPPORT: orphan_support")
    lines[line - 1] = f"      EXCL_ORPHAN_SUPPORT: {hostile!r}"  # a Python repr is valid YAML quoting here
    path = tmp_path / "hostile.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(
        PolicyError,
        match=rf"hostile\.yaml line {line}: key 'services\.living_subsidy\.exclusions\.EXCL_ORPHAN_SUPPORT': "
        r"expected an expression of the policy grammar .* at column \d+",
    ):
        load_policy(path, AS_OF)


def test_a_criterion_must_be_true_false_and_an_amount_a_number(tmp_path: Path) -> None:
    base = (Path(__file__).resolve().parents[2] / "policies" / "zhejiang.yaml").read_text(encoding="utf-8")
    path = tmp_path / "typed.yaml"
    path.write_text(
        base.replace('NOT_LOW_INCOME: "dibao or dibao_edge"', "NOT_LOW_INCOME: dibao_standard"), "utf-8"
    )
    with pytest.raises(PolicyError, match=r"typed\.yaml line \d+: .*NOT_LOW_INCOME.*a true/false expression"):
        load_policy(path, AS_OF)
    path.write_text(
        base.replace('amount: "living_share_of_dibao * dibao_standard"', "amount: hukou_county"), "utf-8"
    )
    with pytest.raises(
        PolicyError, match=r"living_subsidy\.amount'.*a number expression, this one gives a text"
    ):
        load_policy(path, AS_OF)
