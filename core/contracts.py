"""Source contracts (schemas/sources/<source>.yaml) as typed models, and the quarantine reason codes.

A contract says what a department sends (native column names, as received) and what the hub
makes of it (canonical name, type, code list). A malformed contract is an operator's error, so
the message names the file, the column and the field, and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.config_errors import load_declaration
from core.settings import Settings

ColumnType = Literal["id_number", "name", "string", "code", "date", "timestamp", "bool", "float", "int"]

# Quarantine reason codes (SPEC "ID numbers and quarantine reason codes"), in the order a row lists them.
# The Chinese text goes into the reject file the department receives.
REASONS: dict[str, str] = {
    "DUPLICATE_ROW": "与同批次前一行完全重复(保留第一行)",
    "ENCODING_INVALID": "该行含有不符合约定字符编码的字节(经人工决定部分接收本批次时退回)",
    "ID_MISSING": "公民身份号码为空",
    "ID_FORMAT": "公民身份号码格式错误(应为18位或15位数字,末位可为X)",
    "ID_CHECKSUM": "公民身份号码校验码错误",
    "ID_BIRTH_INVALID": "公民身份号码中的出生日期不存在",
    "ID_BIRTH_FUTURE": "公民身份号码中的出生日期晚于运行日期",
    "FIELD_MISSING": "必填字段为空",
    "FIELD_INVALID": "字段值无法解析为数值",
    "CODE_UNKNOWN": "代码不在代码表中",
    "DATE_INVALID": "日期或时间无效",
    "CERT_MISMATCH": "残疾人证号与公民身份号码、残疾类别或等级不符",
    "ID_INVALID": "公民身份号码无效(校验码错误、出生日期不存在或晚于运行日期)",
    "ID_FIELDS_DISAGREE": "出生日期或性别与公民身份号码不符",  # a warning: the row is kept, the merge records a conflict
    "ID_COUNTY_UNKNOWN": "公民身份号码前6位不是已知的县级行政区划代码",  # a warning: new codes are valid
    "ID_SPREADSHEET_DAMAGED": "公民身份号码经电子表格按数值处理已损坏(科学计数法、小数或末尾数字丢失),请以文本格式重新报送",
    "ID_UPGRADE_IMPLAUSIBLE": "15位公民身份号码升位后出生年份不合理(年龄超过上限或晚于运行日期),无法确定世纪",
    "FIELD_TYPE": "字段值类型错误(应为文本)",
    "FIELD_CONTROL_CHAR": "字段含有NUL等控制字符",
    "FIELD_TOO_LONG": "字段长度超过约定的最大长度",
    "DUPLICATE_KEY_CONFLICT": "同批次中同一主键有多行且内容互相矛盾(均未采用)",
}


class ContractError(ValueError):
    """A source contract file is missing or malformed."""


class Column(BaseModel):
    """One column: the native name as sent, the canonical name and how to read the value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="canonical column name (SPEC: canonical staged columns)")
    native: str = Field(description="column name exactly as the department sends it")
    title: str = Field(description="Chinese title, used in reject files")
    type: ColumnType
    required: bool = False
    codes: dict[str, str | int] | None = Field(None, description="native code -> canonical value (type code)")
    true_values: list[str] | None = None
    false_values: list[str] | None = None
    format: str | None = Field(
        None, description="strptime pattern for date/timestamp, overriding the defaults"
    )
    max_length: int | None = Field(
        None, gt=0, description="most characters a name/string value may have (the master store's width)"
    )

    @field_validator("codes", mode="before")
    @classmethod
    def _code_keys_as_text(cls, value: Any) -> Any:
        """YAML reads `1: x` as an int key; natives are text, so keys are compared as text."""
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        return value

    @field_validator("true_values", "false_values", mode="before")
    @classmethod
    def _values_as_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(v) for v in value]
        return value

    @model_validator(mode="after")
    def _type_needs(self) -> Column:
        if self.type == "code":
            if not self.codes:
                raise ValueError("a code column needs a non-empty `codes` mapping")
            kinds = {type(v) for v in self.codes.values()}
            if len(kinds) > 1:
                raise ValueError(
                    f"`codes` values must all be text or all be integers, found {sorted(k.__name__ for k in kinds)}"
                )
        elif self.codes is not None:
            raise ValueError(f"`codes` is only allowed on type code, not {self.type}")
        if self.type == "bool":
            if not self.true_values or not self.false_values:
                raise ValueError("a bool column needs `true_values` and `false_values`")
            if set(self.true_values) & set(self.false_values):
                raise ValueError("`true_values` and `false_values` overlap")
        elif self.true_values is not None or self.false_values is not None:
            raise ValueError(f"`true_values`/`false_values` are only allowed on type bool, not {self.type}")
        if self.max_length is not None and self.type not in ("name", "string"):
            raise ValueError(f"`max_length` is only allowed on name/string columns, not {self.type}")
        if self.format is not None and self.type not in ("date", "timestamp"):
            raise ValueError(f"`format` is only allowed on date/timestamp columns, not {self.type}")
        return self


class EventRule(BaseModel):
    """Rows that count as one kind of event (a death, a cancellation) for the batch gate on abnormal rises."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(description="canonical column")
    values: list[str] = Field(min_length=1, description="canonical values that make a row an event")


# How the merge reduces a department's current rows to what it says about each person (docs/architecture.md):
# `latest` keeps each person's row with the latest updated_at; `assistance_periods` keeps the 民政
# assistance periods in force on the run date (transforms.merge.civil_flags). A whitelist, never code.
Reduction = Literal["latest", "assistance_periods"]


class MergeRule(BaseModel):
    """How the merge reads a department that feeds the master file (schemas/master.yaml `sources`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str | None = Field(
        None,
        pattern=r"^([a-z][a-z0-9]*_)?$",
        description="prefix of the department's columns in the merge's joined frame; default `<source>_`",
    )
    reduce: Reduction = Field("latest", description="how rows become what the department says per person")
    key: list[str] = Field(
        default_factory=lambda: ["id_number"],
        min_length=1,
        description="what identifies a row across batches: a delta row replaces the earlier rows with its key",
    )
    may_lack: list[str] = Field(
        default_factory=list,
        description="columns a staged batch may leave out (named after older batches were staged): read as null",
    )


class SourceContract(BaseModel):
    """What one department sends and what the hub makes of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    version: int
    department: str
    format: Literal["sql", "csv", "json"]
    encoding: str = "utf-8"
    columns: list[Column] = Field(min_length=1)
    spreadsheet_ids: bool = Field(
        False, description="files pass through spreadsheets: an 18-digit ID ending in 000 lost its digits"
    )
    implausible_upgrade: Literal["quarantine", "flag"] = Field(
        "quarantine",
        description="a 15-digit ID whose upgrade gives an implausible age: quarantined, or kept and flagged",
    )
    events: dict[str, EventRule] = Field(
        default_factory=dict, description="event kinds (deaths, cancellations) watched by the batch gate"
    )
    merge: MergeRule = Field(default_factory=lambda: MergeRule(), description="how the merge reads it")
    path: Path | None = Field(None, exclude=True, description="the file it was read from, for messages")

    @model_validator(mode="after")
    def _unique_and_keyed(self) -> SourceContract:
        for attr in ("name", "native"):
            seen = [getattr(c, attr) for c in self.columns]
            dupes = sorted({v for v in seen if seen.count(v) > 1})
            if dupes:
                raise ValueError(f"column {attr}s must be unique, repeated: {dupes}")
        ids = [c.name for c in self.columns if c.type == "id_number"]
        if len(ids) != 1 or ids[0] != "id_number":
            raise ValueError(f"exactly one column `id_number` of type id_number is required, found {ids}")
        unknown = {k: e.column for k, e in self.events.items() if e.column not in self.names}
        if unknown:
            raise ValueError(f"events name column(s) not in this contract: {unknown}")
        named = [c for c in (*self.merge.key, *self.merge.may_lack) if c not in self.names]
        if named:
            raise ValueError(f"merge names column(s) not in this contract: {named}")
        if self.merge.key[0] != "id_number" or "id_number" in self.merge.may_lack:
            raise ValueError("merge.key must start with id_number, which merge.may_lack cannot name")
        if self.encoding.lower().replace("-", "") in ("gbk", "gb2312"):
            raise ValueError("encoding must be gb18030 (a superset of GBK/GB2312), not " + self.encoding)
        return self

    @property
    def join_prefix(self) -> str:
        """The prefix of this department's columns in the merge's joined frame."""
        return f"{self.source}_" if self.merge.prefix is None else self.merge.prefix

    @property
    def natives(self) -> list[str]:
        return [c.native for c in self.columns]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"contract {self.source} has no column {name!r}")


def load_contract(path: str | Path) -> SourceContract:
    """Read and validate a contract file; errors name the file, the column and the field."""
    return load_declaration(path, SourceContract, ContractError, "contract", "source, version, columns")


def contract_for(settings: Settings, source: str) -> SourceContract:
    """The contract the config names for a source."""
    if source not in settings.sources:
        raise ContractError(f"source {source!r} is not configured; known: {sorted(settings.sources)}")
    return load_contract(settings.path(settings.sources[source].contract))
