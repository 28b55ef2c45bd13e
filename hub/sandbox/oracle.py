"""Ground-truth oracle for the two subsidies (两项补贴), one person at a time, written from the rules in prose.

Deliberately independent of transforms/: it never evaluates the policy file's expressions, it only reads
the numbers of the period in force, and codes the rules as plain Python (国发〔2015〕52号 and Zhejiang's
local extensions, docs/domain.md, The two subsidies):

- living subsidy (困难残疾人生活补贴): valid certificate, local 户籍, in a 低保 or 低保边缘 household;
  not for 特困供养, 工伤保险生活护理费 or 孤儿/事实无人抚养儿童 support; 30% of the local 低保 standard.
- nursing subsidy (重度残疾人护理补贴): valid certificate, local 户籍, needs long-term care, level 1-2 or
  level 3-4 intellectual/mental; not for 特困供养 or 工伤保险生活护理费; tier by level, +50% in an institution.

Facts are what the hub can see: a quarantined police, civil or hrss row is simply absent here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import yaml

LIVING = "living_subsidy"
NURSING = "nursing_subsidy"
CENT = Decimal("0.01")


class PolicyPeriodMissing(LookupError):
    """No period of the policy file is in force on the requested date."""


@dataclass(frozen=True)
class Parameters:
    """The numbers of one policy period (UNCONFIRMED amounts live in the YAML, not here)."""

    living_share_of_dibao: Decimal
    nursing_tier1: Decimal
    nursing_tier2: Decimal
    nursing_tier3: Decimal
    institutional_uplift: Decimal


def load_parameters(policy_file: Path, as_of: date) -> Parameters:
    """Parameters of the period in force on `as_of` (effective_from <= as_of <= effective_to)."""
    doc = yaml.safe_load(Path(policy_file).read_text(encoding="utf-8"))
    for period in doc["periods"]:
        start, end = period["effective_from"], period.get("effective_to")
        if start <= as_of and (end is None or as_of <= end):
            p = period["parameters"]
            return Parameters(*(Decimal(str(p[f])) for f in Parameters.__dataclass_fields__))
    raise PolicyPeriodMissing(f"{policy_file}: no period in force on {as_of}")


@dataclass(frozen=True)
class Assistance:
    """One civil-affairs roll entry (民政救助对象): 'dibao', 'dibao_edge', 'tekun', 'orphan', 'de_facto_orphan'."""

    kind: str
    dibao_standard: Decimal
    start: date
    end: date | None
    active: bool

    def in_force(self, as_of: date) -> bool:
        return self.active and self.start <= as_of and (self.end is None or self.end >= as_of)


@dataclass(frozen=True)
class PersonFacts:
    """What the hub knows about one certificate holder on the run date."""

    id_number: str
    category: int
    level: int
    cert_status: str  # active | cancelled | suspended
    cert_valid_until: date
    needs_long_term_care: bool
    institutional_care: bool
    hukou_status: str | None = None  # None: no usable police record
    hukou_county: str | None = None
    assistance: tuple[Assistance, ...] = ()
    work_injury_care: bool = False


@dataclass(frozen=True)
class Decision:
    id_number: str
    service: str
    eligible: bool
    amount: Decimal


def decide(person: PersonFacts, as_of: date, params: Parameters) -> tuple[Decision, Decision]:
    """The living and nursing decisions for one person."""
    in_force = [a for a in person.assistance if a.in_force(as_of)]
    kinds = {a.kind for a in in_force}
    certificate_valid = person.cert_status == "active" and person.cert_valid_until >= as_of
    local_hukou = (
        person.hukou_status == "normal"
        and person.hukou_county is not None
        and person.hukou_county.startswith("33")
    )
    tekun = "tekun" in kinds
    orphan_support = bool(kinds & {"orphan", "de_facto_orphan"})
    low_income = bool(kinds & {"dibao", "dibao_edge"})

    living = (
        certificate_valid
        and local_hukou
        and low_income
        and not tekun
        and not person.work_injury_care
        and not orphan_support
    )
    living_amount = Decimal(0)
    if living:
        standard = max(a.dibao_standard for a in in_force if a.kind in ("dibao", "dibao_edge"))
        living_amount = params.living_share_of_dibao * standard

    severe_or_extension = person.level <= 2 or person.category in (5, 6)
    nursing = (
        certificate_valid
        and local_hukou
        and person.needs_long_term_care
        and severe_or_extension
        and not tekun
        and not person.work_injury_care
    )
    nursing_amount = Decimal(0)
    if nursing:
        tier = {1: params.nursing_tier1, 2: params.nursing_tier2}.get(person.level, params.nursing_tier3)
        uplift = params.institutional_uplift if person.institutional_care else Decimal(0)
        nursing_amount = tier * (1 + uplift)

    def money(value: Decimal) -> Decimal:
        return value.quantize(CENT, rounding=ROUND_HALF_UP)

    return (
        Decision(person.id_number, LIVING, living, money(living_amount)),
        Decision(person.id_number, NURSING, nursing, money(nursing_amount)),
    )


def decide_all(people: Iterable[PersonFacts], as_of: date, params: Parameters) -> list[Decision]:
    """Decisions for many people, in their order, living before nursing for each."""
    out: list[Decision] = []
    for person in people:
        out.extend(decide(person, as_of, params))
    return out
