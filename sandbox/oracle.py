"""Ground-truth oracle for the 一件事 services, one person at a time, written from the rules in prose.

Deliberately independent of transforms/: it never evaluates the policy file's expressions, it only reads
the numbers of the period in force, and codes the rules as plain Python (国发〔2015〕52号 and Zhejiang's
local extensions, docs/domain.md, The two subsidies):

- living subsidy (困难残疾人生活补贴): valid certificate, local 户籍, in a 低保 or 低保边缘 household;
  not for 特困供养, 工伤保险生活护理费 or 孤儿/事实无人抚养儿童 support; 30% of the local 低保 standard.
- nursing subsidy (重度残疾人护理补贴): valid certificate, local 户籍, needs long-term care, level 1-2 or
  level 3-4 intellectual/mental; not for 特困供养 or 工伤保险生活护理费; tier by level, +50% in an institution.
- neither subsidy (nor the two contributions below) from the month after the month of death.
- 城乡居民养老保险代缴: valid certificate, local 户籍, level 1-2, aged 16-59 on the run date (whole years),
  enrolled in the resident (not the employee) scheme; the contribution per year.
- 城乡居民医保参保资助: valid certificate, local 户籍, level 1-2 or in a 低保 household; the contribution per year.
- the certificate: a renewal reminder while an active certificate is valid for at most N more days; expired
  when an active certificate's valid-until date has passed; cancellation due when its holder is dead (a
  death date, or police status dead). Reminder and expiry are not raised for the dead.

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
PENSION = "pension_contribution"
MEDICAL = "medical_insurance_subsidy"
RENEWAL = "cert_renewal_reminder"
EXPIRED = "cert_expired"
CANCEL = "cert_cancellation_on_death"
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


@dataclass(frozen=True)
class BundleParameters:
    """The numbers of the other services of the bundle."""

    pension_contribution: Decimal
    pension_age_min: Decimal
    pension_age_max: Decimal
    medical_contribution: Decimal
    renewal_days: Decimal


def _period(policy_file: Path, as_of: date) -> dict[str, object]:
    """The period's parameters with the file's province-wide adjustments in force added (no regional ones)."""
    doc = yaml.safe_load(Path(policy_file).read_text(encoding="utf-8"))
    for period in doc["periods"]:
        start, end = period["effective_from"], period.get("effective_to")
        if start <= as_of and (end is None or as_of <= end):
            params = dict(period["parameters"])
            for adj in doc.get("adjustments") or []:
                if adj.get("region") is None and adj["effective_from"] <= as_of <= adj["effective_to"]:
                    for name, add in adj["add"].items():
                        params[name] = Decimal(str(params[name])) + Decimal(str(add))
            return params
    raise PolicyPeriodMissing(f"{policy_file}: no period in force on {as_of}")


def load_parameters(policy_file: Path, as_of: date) -> Parameters:
    """Parameters of the period in force on `as_of` (effective_from <= as_of <= effective_to)."""
    p = _period(policy_file, as_of)
    return Parameters(*(Decimal(str(p[f])) for f in Parameters.__dataclass_fields__))


def load_bundle_parameters(policy_file: Path, as_of: date) -> BundleParameters:
    """The other services' parameters of the period in force on `as_of`."""
    p = _period(policy_file, as_of)
    return BundleParameters(*(Decimal(str(p[f])) for f in BundleParameters.__dataclass_fields__))


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
    birth_date: date | None = None
    death_date: date | None = None  # None: no usable police record or alive
    pension_type: str | None = None  # resident | employee | none; None: no usable hrss record


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
    died_before = _died_before_this_month(person, as_of)
    orphan_support = bool(kinds & {"orphan", "de_facto_orphan"})
    low_income = bool(kinds & {"dibao", "dibao_edge"})

    living = (
        certificate_valid
        and local_hukou
        and low_income
        and not tekun
        and not person.work_injury_care
        and not orphan_support
        and not died_before
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
        and not died_before
    )
    nursing_amount = Decimal(0)
    if nursing:
        tier = {1: params.nursing_tier1, 2: params.nursing_tier2}.get(person.level, params.nursing_tier3)
        uplift = params.institutional_uplift if person.institutional_care else Decimal(0)
        nursing_amount = tier * (1 + uplift)

    return (
        Decision(person.id_number, LIVING, living, money(living_amount)),
        Decision(person.id_number, NURSING, nursing, money(nursing_amount)),
    )


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _died_before_this_month(person: PersonFacts, as_of: date) -> bool:
    death = person.death_date
    return death is not None and (death.year, death.month) < (as_of.year, as_of.month)


def age_on(birth: date, as_of: date) -> int:
    """Whole years: the birthday on the run date counts."""
    return as_of.year - birth.year - ((as_of.month, as_of.day) < (birth.month, birth.day))


def decide_bundle(
    person: PersonFacts, as_of: date, params: Parameters, bundle: BundleParameters
) -> list[Decision]:
    """Every service for one person, in service-name order."""
    living, nursing = decide(person, as_of, params)
    kinds = {a.kind for a in person.assistance if a.in_force(as_of)}
    certificate_valid = person.cert_status == "active" and person.cert_valid_until >= as_of
    local_hukou = (
        person.hukou_status == "normal"
        and person.hukou_county is not None
        and person.hukou_county.startswith("33")
    )
    alive_this_month = not _died_before_this_month(person, as_of)
    severe = person.level in (1, 2)
    working_age = person.birth_date is not None and (
        bundle.pension_age_min <= age_on(person.birth_date, as_of) <= bundle.pension_age_max
    )
    pension = (
        certificate_valid
        and local_hukou
        and severe
        and working_age
        and person.pension_type == "resident"
        and alive_this_month
    )
    medical = certificate_valid and local_hukou and (severe or "dibao" in kinds) and alive_this_month
    active = person.cert_status == "active"
    dead = person.death_date is not None or person.hukou_status == "dead"
    days_left = (person.cert_valid_until - as_of).days
    zero = Decimal(0)
    out = [
        Decision(person.id_number, CANCEL, active and dead, zero),
        Decision(person.id_number, EXPIRED, active and days_left < 0 and not dead, zero),
        Decision(
            person.id_number, RENEWAL, active and 0 <= days_left <= bundle.renewal_days and not dead, zero
        ),
        living,
        Decision(person.id_number, MEDICAL, medical, money(bundle.medical_contribution) if medical else zero),
        nursing,
        Decision(person.id_number, PENSION, pension, money(bundle.pension_contribution) if pension else zero),
    ]
    return out


def decide_all(people: Iterable[PersonFacts], as_of: date, params: Parameters) -> list[Decision]:
    """Decisions for many people, in their order, living before nursing for each."""
    out: list[Decision] = []
    for person in people:
        out.extend(decide(person, as_of, params))
    return out
