"""The policy expression language: a small whitelisted grammar, parsed once, evaluated vectorised.

Policy files are data written by people outside the code review, so their expressions must never
become code: each is parsed with `ast` in eval mode and every node is checked against a whitelist
(literals, named facts and parameters, comparisons, and/or/not, + - * /, `x if c else y`,
membership in a literal list, and the functions in FUNCTIONS). Anything else (attribute access,
subscripts, calls of other names, lambdas, comprehensions, f-strings, names starting with `_`) is
refused when the policy is loaded, with the column it starts at. What passes is compiled into a
tree of closures over Vec (a numpy array and its mask of unknowns; text as an Arrow array): one
vectorised operation per node, no row loop, and none of pandas' per-operation overhead, which was most
of the evaluation's time. The semantics are pandas' nullable arrays' (Float64, boolean, string);
Compiled.evaluate hands results over as such.

Values have one of four types, checked at load: bool, number, text and date. Dates are whole days
since 1970-01-01 (any year from 1 to 9999, no nanosecond timestamps). Unknown facts are nulls that
propagate (Kleene logic: null and false is false, null or true is true); is_null/not_null test them.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

BOOL, NUM, TEXT, DATE = "bool", "number", "text", "date"
AS_OF = "as_of"
MAX_LENGTH = 2000
EPOCH = date(1970, 1, 1)

# master column kinds (transforms.merge) -> expression types
KIND_TYPES = {
    "string": TEXT,
    "date": DATE,
    "timestamp": DATE,
    "int": NUM,
    "float": NUM,
    "flag": BOOL,
    "bool": BOOL,
}

FUNCTIONS: dict[str, str] = {
    "is_null": "is_null(x): true when x is unknown",
    "not_null": "not_null(x): true when x is known",
    "age": "age(d): whole years from date d to the run date",
    "months_between": "months_between(a, b): calendar months from a's month to b's month",
    "date": "date('YYYY-MM-DD'): a date literal",
    "starts_with": "starts_with(text, 'prefix'): text begins with the literal prefix",
    "min": "min(a, b): the smaller number",
    "max": "max(a, b): the larger number",
}
EXPECTED = (
    "facts, parameters, as_of, literals, comparisons, and/or/not, + - * /, 'x if c else y', "
    "'in' a literal list, or the functions " + ", ".join(FUNCTIONS)
)

Value = Any  # a Vec (one entry per person) or a scalar (literal, parameter, run date)


@dataclass(frozen=True)
class Vec:
    """One value per person: `data` (bool for true/false, float64 for numbers and day numbers, an Arrow
    large_string array for text) and `null`, the mask of unknown entries.

    A number that is NaN is unknown (pandas' Float64 makes NaN results null). Arrays are never changed
    in place: a Vec may be cached and shared by several expressions."""

    data: Any  # np.ndarray, or pa.LargeStringArray for text
    null: np.ndarray

    def __len__(self) -> int:
        return len(self.data)

    def series(self, index: pd.Index) -> pd.Series:
        """As the pandas nullable Series of its type (no copy)."""
        if isinstance(self.data, pa.Array):
            return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([self.data])), index=index)
        if self.data.dtype == np.bool_:
            return pd.Series(pd.arrays.BooleanArray(self.data, self.null), index=index)
        return pd.Series(pd.arrays.FloatingArray(self.data, self.null), index=index)


def _number_vec(data: np.ndarray, null: Any) -> Vec:
    """A number Vec whose NaN entries are unknown (as pandas' Float64 arithmetic makes them)."""
    data = np.asarray(data, dtype=np.float64)
    return Vec(data, np.isnan(data) | null)


def _bool_vec(data: Any, null: Any, n: int) -> Vec:
    return Vec(np.broadcast_to(data, n).astype(bool), np.broadcast_to(null, n).astype(bool))


def _text(arr: pa.Array) -> Vec:
    return Vec(arr, _text_null(arr))


def _text_mask(arr: pa.Array) -> Vec:
    """An Arrow boolean result (nulls where the text was unknown) as a true/false Vec."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return Vec(np.asarray(arr.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool), _text_null(arr))


def _text_null(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _unknown(value: Any) -> bool:
    return value is None or value is pd.NA


class ExprError(ValueError):
    """An expression outside the grammar or ill-typed; `column` is 0-based within the expression."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.column = column


class Env:
    """What one evaluation sees: the master frame, the run date, parameters and facts computed so far."""

    def __init__(
        self,
        frame: pd.DataFrame,
        as_of: date,
        columns: Mapping[str, str],
        parameters: Callable[[str, Env], Value],
    ) -> None:
        self.frame = frame
        self.index = frame.index
        self.as_of = (as_of - EPOCH).days
        self.types = columns
        self._parameters = parameters
        self._cache: dict[str, Value] = {}
        self._calendars: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self.facts: dict[str, Callable[[Env], Value]] = {}

    def name(self, name: str) -> Value:
        if name not in self._cache:
            if name == AS_OF:
                value: Value = self.as_of
            elif name in self.facts:
                value = self.facts[name](self)
            elif name in self.types:
                value = _column(self.frame, name, self.types[name])
            else:
                value = self._parameters(name, self)
            self._cache[name] = value
        return self._cache[name]

    def calendar(self, value: Value) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """_calendar of a date value, once per named one (age(birth_date) is in several facts)."""
        days = self.vector(value, DATE)
        if not any(days is named for named in self._cache.values()):
            return _calendar(days)
        key = id(days)  # stable: the named value lives as long as this Env
        if key not in self._calendars:
            self._calendars[key] = _calendar(days)
        return self._calendars[key]

    def vector(self, value: Value, kind: str) -> Vec:
        """A scalar broadcast to one entry per person (a Vec as it is)."""
        if isinstance(value, Vec):
            return value
        n = len(self.index)
        if kind == TEXT:
            return _text(pa.repeat(pa.scalar(None if _unknown(value) else value, pa.large_string()), n))
        if _unknown(value):
            return Vec(np.zeros(n, dtype=bool if kind == BOOL else np.float64), np.ones(n, dtype=bool))
        if kind == BOOL:
            return Vec(np.full(n, bool(value)), np.zeros(n, dtype=bool))
        return _number_vec(np.full(n, float(value)), False)


def _column(frame: pd.DataFrame, name: str, kind: str) -> Vec:
    if name not in frame.columns:
        raise KeyError(name)
    series = frame[name]
    if kind == TEXT:
        arr = pa.array(series.astype("string").array)
        arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
        return _text(arr.cast(pa.large_string()))
    if kind == BOOL and series.dtype == np.bool_:
        return Vec(series.to_numpy(), np.zeros(len(series), dtype=bool))
    if kind == BOOL:
        flags = series.astype("boolean").array
        return Vec(flags.to_numpy(dtype=bool, na_value=False), flags.isna())
    numbers = (pd.to_numeric(series).astype("Float64") if kind == NUM else day_numbers(series)).array
    return Vec(numbers.to_numpy(dtype=np.float64, na_value=np.nan), numbers.isna())


def day_numbers(series: pd.Series) -> pd.Series:
    """Days since 1970-01-01 as Float64 (null when unknown), from datetime64, Arrow dates or date objects."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        values = series.to_numpy()
        days = values.astype("datetime64[D]").astype(np.int64).astype(np.float64)
        days[np.isnat(values)] = np.nan
    else:
        arrow = pa.array(series.to_numpy(dtype=object), from_pandas=True).cast(pa.date32())
        days = arrow.cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.float64)
    return pd.Series(pd.array(days, dtype="Float64"), index=series.index).where(~np.isnan(days))


def _calendar(days: Vec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Year, month, day of day numbers (as floats) and the mask of known ones."""
    raw = np.where(days.null, np.nan, days.data)
    known = ~np.isnan(raw)
    d = np.where(known, np.floor(raw), 0).astype(np.int64).astype("datetime64[D]")
    months = d.astype("datetime64[M]")
    year = months.astype(np.int64) // 12 + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (d - months.astype("datetime64[D]")).astype(np.int64) + 1
    return year, month, day, known


@dataclass
class Compiled:
    """One checked expression: its text, result type, the names it reads and the function computing it."""

    text: str
    type: str
    names: frozenset[str]
    run: Callable[[Env], Value] = field(repr=False)

    def vector(self, env: Env) -> Vec:
        """One value per person (scalars broadcast)."""
        return env.vector(self.run(env), self.type)

    def evaluate(self, env: Env) -> pd.Series:
        """One value per person as a pandas nullable Series (boolean, Float64 or string)."""
        return self.vector(env).series(env.index)


@dataclass
class Names:
    """What a name can mean in one policy: master attributes (with their types), facts and parameters."""

    columns: Mapping[str, str]
    facts: Mapping[str, str]
    parameters: frozenset[str]


def compile_expression(text: str, names: Names) -> Compiled:
    """Parse and check one expression; ExprError says what is wrong, where, and what was expected."""
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        column = (exc.offset or 1) - 1
        hint = " (parameters are named without '@')" if "@" in text else ""
        raise ExprError(f"not a valid expression{hint}: {exc.msg}; expected {EXPECTED}", column) from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise ExprError(f"expression cannot be parsed ({type(exc).__name__})") from None
    used: set[str] = set()
    try:
        kind, run = _Compiler(names, used).node(tree.body)
    except RecursionError:
        raise ExprError("expression nested too deeply") from None
    return Compiled(text=text, type=kind, names=frozenset(used), run=run)


_COMPARE = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}
_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def _as_number(value: Value) -> Value:
    if isinstance(value, Vec):
        return Vec(value.data.astype(np.float64), value.null)
    return float(value)


def _parts(value: Value) -> tuple[Any, Any]:
    """Data and unknown-mask of a Vec or a scalar (an unknown scalar is unknown everywhere)."""
    if isinstance(value, Vec):
        return value.data, value.null
    if _unknown(value):
        return np.False_, np.True_
    return (np.bool_(value) if isinstance(value, bool) else value), np.False_


def _arithmetic(op: Callable[[Any, Any], Any]) -> Callable[[Value, Value], Value]:
    """A number operation: unknown where either side is, and where the result is NaN."""

    def apply(a: Value, b: Value) -> Value:
        if not isinstance(a, Vec) and not isinstance(b, Vec):
            return op(a, b)
        (da, na), (db, nb) = _parts(a), _parts(b)
        with np.errstate(all="ignore"):
            return _number_vec(op(da, db), na | nb)

    return apply


def _divide(a: Value, b: Value) -> Value:
    """a / b, unknown where b is 0 (an amount is never infinite)."""
    if not isinstance(a, Vec) and not isinstance(b, Vec):
        return pd.NA if b == 0 else a / b
    (da, na), (db, nb) = _parts(a), _parts(b)
    with np.errstate(all="ignore"):
        return _number_vec(np.true_divide(da, db), na | nb | ((db == 0) & ~nb))


class _Compiler:
    def __init__(self, names: Names, used: set[str]) -> None:
        self.names = names
        self.used = used

    def fail(self, node: ast.AST, message: str) -> ExprError:
        return ExprError(message, getattr(node, "col_offset", None))

    def node(self, node: ast.expr) -> tuple[str, Callable[[Env], Value]]:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.fail(node, f"{_describe(node)} is not allowed; expected {EXPECTED}")
        result: tuple[str, Callable[[Env], Value]] = method(node)
        return result

    def typed(self, node: ast.expr, *kinds: str) -> Callable[[Env], Value]:
        kind, run = self.node(node)
        if kind == BOOL and NUM in kinds and BOOL not in kinds:
            return lambda env: _as_number(run(env))  # true/false count as 1/0 in arithmetic
        if kind not in kinds:
            raise self.fail(
                node, f"{ast.unparse(node)!r} is {_a(kind)}, expected {' or '.join(map(_a, kinds))}"
            )
        return run

    # -- leaves --------------------------------------------------------------------------------------

    def _Constant(self, node: ast.Constant) -> tuple[str, Callable[[Env], Value]]:
        value = node.value
        if isinstance(value, bool):
            return BOOL, lambda env: value
        if isinstance(value, int | float):
            number = float(value)
            return NUM, lambda env: number
        if isinstance(value, str):
            return TEXT, lambda env: value
        raise self.fail(node, f"the literal {value!r} is not allowed; expected a number, text, True or False")

    def _Name(self, node: ast.Name) -> tuple[str, Callable[[Env], Value]]:
        name = node.id
        if name.startswith("_"):
            raise self.fail(node, f"the name {name!r} is not allowed (names may not start with '_')")
        if name == AS_OF:
            kind = DATE
        elif name in self.names.facts:
            kind = self.names.facts[name]
        elif name in self.names.columns:
            kind = self.names.columns[name]
        elif name in self.names.parameters:
            kind = NUM
        else:
            raise self.fail(
                node,
                f"unknown name {name!r}; expected a master attribute, a fact defined above, "
                "a parameter of the policy or as_of",
            )
        self.used.add(name)
        return kind, lambda env: env.name(name)

    # -- logic ---------------------------------------------------------------------------------------

    def _BoolOp(self, node: ast.BoolOp) -> tuple[str, Callable[[Env], Value]]:
        parts = [self.typed(v, BOOL) for v in node.values]
        combine = _and if isinstance(node.op, ast.And) else _or

        def run(env: Env) -> Value:
            out = parts[0](env)
            for part in parts[1:]:
                out = combine(out, part(env))
            return out

        return BOOL, run

    def _UnaryOp(self, node: ast.UnaryOp) -> tuple[str, Callable[[Env], Value]]:
        if isinstance(node.op, ast.Not):
            inner = self.typed(node.operand, BOOL)
            return BOOL, lambda env: _negate(inner(env))
        if isinstance(node.op, ast.USub | ast.UAdd):
            inner = self.typed(node.operand, NUM)
            sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
            return NUM, lambda env: _ARITHMETIC["*"](inner(env), sign)
        raise self.fail(node, f"the operator {_describe(node.op)} is not allowed; expected not, - or +")

    def _Compare(self, node: ast.Compare) -> tuple[str, Callable[[Env], Value]]:
        left_node = node.left
        left_kind, left = self.node(left_node)
        steps: list[Callable[[Env], Value]] = []
        last = len(node.ops) - 1
        for i, (op, right_node) in enumerate(zip(node.ops, node.comparators, strict=True)):
            if isinstance(op, ast.In | ast.NotIn):
                if i != last:
                    raise self.fail(node, "'in' [...] must be the last comparison of a chain")
                steps.append(self._membership(left_kind, left, op, right_node))
                break
            if type(op) not in _COMPARE:
                raise self.fail(
                    node,
                    f"the comparison {_describe(op)} is not allowed; expected == != < <= > >= in, "
                    "or is_null()/not_null() for unknown values",
                )
            right_kind, right = self.node(right_node)
            steps.append(self._comparison(left_node, left_kind, left, op, right_node, right_kind, right))
            left_node, left_kind, left = right_node, right_kind, right

        def run(env: Env) -> Value:
            out = steps[0](env)
            for step in steps[1:]:
                out = _and(out, step(env))
            return out

        return BOOL, run

    def _comparison(
        self,
        left_node: ast.expr,
        left_kind: str,
        left: Callable[[Env], Value],
        op: ast.cmpop,
        right_node: ast.expr,
        right_kind: str,
        right: Callable[[Env], Value],
    ) -> Callable[[Env], Value]:
        kinds = {left_kind, right_kind}
        if kinds == {BOOL, NUM}:
            left, right = _numeric(left), _numeric(right)
        elif left_kind != right_kind:
            raise self.fail(
                right_node,
                f"cannot compare {ast.unparse(left_node)!r} ({_a(left_kind)}) with "
                f"{ast.unparse(right_node)!r} ({_a(right_kind)}); expected values of one type",
            )
        elif left_kind in (TEXT, BOOL) and not isinstance(op, ast.Eq | ast.NotEq):
            raise self.fail(right_node, f"{_a(left_kind)} can only be compared with == or !=")
        compare = _COMPARE[type(op)]
        text = TEXT in kinds

        def run(env: Env) -> Value:
            a, b = left(env), right(env)
            if not isinstance(a, Vec) and not isinstance(b, Vec):
                return compare(a, b)
            if text:  # text is compared in Arrow (a text scalar is a literal, never unknown)
                name = {ast.Eq: "equal", ast.NotEq: "not_equal"}[type(op)]
                return _text_mask(pc.call_function(name, [_arrow(a), _arrow(b)]))
            (da, na), (db, nb) = _parts(a), _parts(b)
            return _bool_vec(compare(da, db), na | nb, len(a) if isinstance(a, Vec) else len(b))

        return run

    def _membership(
        self, kind: str, left: Callable[[Env], Value], op: ast.cmpop, right: ast.expr
    ) -> Callable[[Env], Value]:
        if not isinstance(right, ast.List | ast.Tuple | ast.Set):
            raise self.fail(right, "'in' needs a literal list such as [5, 6] or ['a', 'b']")
        values: list[Any] = []
        for item in right.elts:
            if not isinstance(item, ast.Constant) or isinstance(item.value, bool):
                raise self.fail(item, "a list after 'in' may hold only number or text literals")
            item_kind = TEXT if isinstance(item.value, str) else NUM
            if not isinstance(item.value, str | int | float) or item_kind != kind:
                raise self.fail(
                    item, f"{item.value!r} in a list compared with {_a(kind)}; expected {_a(kind)}"
                )
            values.append(item.value)
        negate = isinstance(op, ast.NotIn)

        def run(env: Env) -> Value:
            hit: Value
            value = left(env)
            if not isinstance(value, Vec):
                hit = value in values
            elif kind == TEXT:
                found = pc.is_in(value.data, value_set=pa.array(values, pa.large_string()))
                hit = Vec(found.to_numpy(zero_copy_only=False), value.null)
            else:
                hit = Vec(np.isin(value.data, np.asarray(values, dtype=np.float64)), value.null)
            return _negate(hit) if negate else hit

        return run

    # -- arithmetic ----------------------------------------------------------------------------------

    def _BinOp(self, node: ast.BinOp) -> tuple[str, Callable[[Env], Value]]:
        symbol = _ARITH.get(type(node.op))
        if symbol is None:
            raise self.fail(node, f"the operator {_describe(node.op)} is not allowed; expected + - * /")
        left_kind, _ = self.node(node.left)
        right_kind, _ = self.node(node.right)
        if DATE in (left_kind, right_kind):
            return self._date_arithmetic(node, symbol, left_kind, right_kind)
        left, right = self.typed(node.left, NUM), self.typed(node.right, NUM)
        op = _divide if symbol == "/" else _ARITHMETIC[symbol]
        return NUM, lambda env: op(left(env), right(env))

    def _date_arithmetic(
        self, node: ast.BinOp, symbol: str, left_kind: str, right_kind: str
    ) -> tuple[str, Callable[[Env], Value]]:
        _, left = self.node(node.left)
        _, right = self.node(node.right)
        plus, minus, times = _ARITHMETIC["+"], _ARITHMETIC["-"], _ARITHMETIC["*"]
        if symbol == "-" and left_kind == DATE and right_kind == DATE:
            return NUM, lambda env: minus(left(env), right(env))  # days between
        if symbol in "+-" and left_kind == DATE and right_kind == NUM:
            sign = 1.0 if symbol == "+" else -1.0
            return DATE, lambda env: plus(left(env), times(sign, right(env)))
        if symbol == "+" and left_kind == NUM and right_kind == DATE:
            return DATE, lambda env: plus(left(env), right(env))
        raise self.fail(
            node,
            "date arithmetic is date + days, date - days or date - date (days between); "
            f"found {_a(left_kind)} {symbol} {_a(right_kind)}",
        )

    def _IfExp(self, node: ast.IfExp) -> tuple[str, Callable[[Env], Value]]:
        test = self.typed(node.test, BOOL)
        body_kind, _ = self.node(node.body)
        else_kind, _ = self.node(node.orelse)
        kind = NUM if {body_kind, else_kind} == {BOOL, NUM} else body_kind
        if body_kind != else_kind and kind != NUM:
            raise self.fail(
                node, f"both branches must have one type, found {_a(body_kind)} and {_a(else_kind)}"
            )
        body, orelse = self.typed(node.body, kind), self.typed(node.orelse, kind)

        def run(env: Env) -> Value:
            cond = env.vector(test(env), BOOL)
            yes, no = env.vector(body(env), kind), env.vector(orelse(env), kind)
            pick = cond.data & ~cond.null
            if kind == TEXT:
                chosen = pc.if_else(pa.array(pick), yes.data, no.data)
                return _text(pc.if_else(pa.array(cond.null), pa.scalar(None, pa.large_string()), chosen))
            return Vec(np.where(pick, yes.data, no.data), np.where(pick, yes.null, no.null) | cond.null)

        return kind, run

    # -- functions -----------------------------------------------------------------------------------

    def _Call(self, node: ast.Call) -> tuple[str, Callable[[Env], Value]]:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node.func, f"{_describe(node.func)} is not allowed; expected {EXPECTED}")
        name = node.func.id
        if name not in FUNCTIONS:
            raise self.fail(
                node, f"the function {name!r} is not allowed; expected one of {', '.join(FUNCTIONS)}"
            )
        if node.keywords:
            raise self.fail(node, f"{name}() takes no keyword arguments; expected {FUNCTIONS[name]}")
        args = node.args
        arity = {"is_null": 1, "not_null": 1, "age": 1, "date": 1}.get(name, 2)
        if len(args) != arity or any(isinstance(a, ast.Starred) for a in args):
            raise self.fail(node, f"{name}() takes {arity} argument(s); expected {FUNCTIONS[name]}")
        result: tuple[str, Callable[[Env], Value]] = getattr(self, f"_fn_{name}")(node, *args)
        return result

    def _fn_is_null(self, node: ast.Call, arg: ast.expr) -> tuple[str, Callable[[Env], Value]]:
        _, inner = self.node(arg)
        return BOOL, lambda env: _isna(inner(env))

    def _fn_not_null(self, node: ast.Call, arg: ast.expr) -> tuple[str, Callable[[Env], Value]]:
        _, inner = self.node(arg)
        return BOOL, lambda env: _negate(_isna(inner(env)))

    def _fn_age(self, node: ast.Call, arg: ast.expr) -> tuple[str, Callable[[Env], Value]]:
        born = self.typed(arg, DATE)

        def run(env: Env) -> Value:
            by, bm, bd, known = env.calendar(born(env))
            ay, am, ad, _ = _calendar(Vec(np.array([float(env.as_of)]), np.zeros(1, dtype=bool)))
            years = ay[0] - by - ((am[0] * 100 + ad[0]) < (bm * 100 + bd)).astype(np.int64)
            return _number_vec(years, ~known)

        return NUM, run

    def _fn_months_between(
        self, node: ast.Call, a: ast.expr, b: ast.expr
    ) -> tuple[str, Callable[[Env], Value]]:
        first, second = self.typed(a, DATE), self.typed(b, DATE)

        def run(env: Env) -> Value:
            ya, ma, _, ka = env.calendar(first(env))
            yb, mb, _, kb = env.calendar(second(env))
            return _number_vec((yb * 12 + mb) - (ya * 12 + ma), ~(ka & kb))

        return NUM, run

    def _fn_date(self, node: ast.Call, arg: ast.expr) -> tuple[str, Callable[[Env], Value]]:
        if not isinstance(arg, ast.Constant) or not isinstance(arg.value, str):
            raise self.fail(arg, "date() takes a text literal 'YYYY-MM-DD'")
        try:
            day = float((date.fromisoformat(arg.value) - EPOCH).days)
        except ValueError:
            raise self.fail(arg, f"date({arg.value!r}): expected a real date YYYY-MM-DD") from None
        return DATE, lambda env: day

    def _fn_starts_with(
        self, node: ast.Call, text: ast.expr, prefix: ast.expr
    ) -> tuple[str, Callable[[Env], Value]]:
        inner = self.typed(text, TEXT)
        if not isinstance(prefix, ast.Constant) or not isinstance(prefix.value, str):
            raise self.fail(prefix, "starts_with() takes a text literal as its prefix, e.g. '33'")
        start = prefix.value

        def run(env: Env) -> Value:
            value = inner(env)
            if isinstance(value, Vec):
                return _text_mask(pc.starts_with(value.data, start))
            return str(value).startswith(start)

        return BOOL, run

    def _fn_min(self, node: ast.Call, a: ast.expr, b: ast.expr) -> tuple[str, Callable[[Env], Value]]:
        return self._extreme(a, b, smaller=True)

    def _fn_max(self, node: ast.Call, a: ast.expr, b: ast.expr) -> tuple[str, Callable[[Env], Value]]:
        return self._extreme(a, b, smaller=False)

    def _extreme(self, a: ast.expr, b: ast.expr, smaller: bool) -> tuple[str, Callable[[Env], Value]]:
        first, second = self.typed(a, NUM), self.typed(b, NUM)

        def run(env: Env) -> Value:
            x, y = env.vector(first(env), NUM), env.vector(second(env), NUM)
            pick = (x.data <= y.data) if smaller else (x.data >= y.data)
            return Vec(np.where(pick, x.data, y.data), x.null | y.null)

        return NUM, run


_ARITHMETIC = {
    "+": _arithmetic(lambda a, b: a + b),
    "-": _arithmetic(lambda a, b: a - b),
    "*": _arithmetic(lambda a, b: a * b),
}


def _and(a: Value, b: Value) -> Value:
    """Kleene and: false where either side is known false, else unknown where either side is."""
    if not isinstance(a, Vec) and not isinstance(b, Vec):
        return a & b
    (da, na), (db, nb) = _parts(a), _parts(b)
    false = (~na & ~da) | (~nb & ~db)
    return _bool_vec(da & db & ~false, (na | nb) & ~false, len(a) if isinstance(a, Vec) else len(b))


def _or(a: Value, b: Value) -> Value:
    """Kleene or: true where either side is known true, else unknown where either side is."""
    if not isinstance(a, Vec) and not isinstance(b, Vec):
        return a | b
    (da, na), (db, nb) = _parts(a), _parts(b)
    true = (~na & da) | (~nb & db)
    return _bool_vec(true, (na | nb) & ~true, len(a) if isinstance(a, Vec) else len(b))


def _arrow(value: Value) -> Any:
    return value.data if isinstance(value, Vec) else pa.scalar(value, pa.large_string())


def _numeric(run: Callable[[Env], Value]) -> Callable[[Env], Value]:
    return lambda env: _as_number(run(env))


def _negate(value: Value) -> Value:
    return Vec(~value.data, value.null) if isinstance(value, Vec) else not value


def _isna(value: Value) -> Value:
    if isinstance(value, Vec):
        return Vec(value.null, np.zeros(len(value.null), dtype=bool))
    return _unknown(value)


def _a(kind: str) -> str:
    return {BOOL: "a true/false value", NUM: "a number", TEXT: "text", DATE: "a date"}[kind]


def _describe(node: ast.AST) -> str:
    """A reader's name for a refused node."""
    names = {
        ast.Attribute: "attribute access (.name)",
        ast.Subscript: "subscripts ([...])",
        ast.Lambda: "lambda",
        ast.ListComp: "a list comprehension",
        ast.SetComp: "a set comprehension",
        ast.DictComp: "a dict comprehension",
        ast.GeneratorExp: "a generator expression",
        ast.JoinedStr: "an f-string",
        ast.NamedExpr: "assignment (:=)",
        ast.Await: "await",
        ast.Yield: "yield",
        ast.YieldFrom: "yield",
        ast.Starred: "unpacking (*)",
        ast.Dict: "a dict literal",
        ast.Set: "a set literal",
        ast.List: "a list outside 'in'",
        ast.Tuple: "a tuple outside 'in'",
        ast.Call: "a call",
        ast.Is: "'is'",
        ast.IsNot: "'is not'",
        ast.MatMult: "'@'",
        ast.Pow: "'**'",
        ast.Mod: "'%'",
        ast.FloorDiv: "'//'",
        ast.BitAnd: "'&' (use 'and')",
        ast.BitOr: "'|' (use 'or')",
        ast.BitXor: "'^'",
        ast.LShift: "'<<'",
        ast.RShift: "'>>'",
        ast.Invert: "'~' (use 'not')",
    }
    return names.get(type(node), type(node).__name__)
