"""一数一源: which source may say each master attribute, and in which order the merge asks them.

Declared per attribute in schemas/master.yaml. Kept apart from transforms/merge.py (no pandas) so that
loading the settings can check the configured `precedence:` block and point at the config file and
line before any stage runs.
"""

from __future__ import annotations

from core.master_schema import master_schema

_SCHEMA = master_schema()
SOURCES = tuple(_SCHEMA.sources)

# attribute -> the sources whose staged rows carry it (what a precedence list may name).
CARRIERS: dict[str, tuple[str, ...]] = _SCHEMA.carriers

# The default order per attribute (schemas/master.yaml): police for identity, 户籍 and death (cdpf
# stands in for identity when police has no record); cdpf for the certificate and needs; civil for
# assistance and the 低保 standard; hrss for employment, pension type and the work-injury care allowance.
DEFAULT_PRECEDENCE: dict[str, list[str]] = _SCHEMA.default_precedence


class PrecedenceError(ValueError):
    """The configured precedence names an unknown attribute or source, or a source that cannot say it."""


def resolve_precedence(
    configured: dict[str, list[str]] | None,
    where: str = "config",
    lines: dict[str, int] | None = None,
) -> dict[str, list[str]]:
    """The precedence per attribute: the defaults, overridden attribute by attribute by the config.

    `where` names the config file and `lines` the line of each attribute in it, for the error message.
    """
    configured = configured or {}
    lines = lines or {}
    problems = []
    for attribute, order in configured.items():
        at = f"{where}:{lines[attribute]}" if attribute in lines else where
        carriers = CARRIERS.get(attribute)
        if carriers is None:
            problems.append(
                f"{at}: precedence.{attribute}: unknown attribute; expected one of {sorted(CARRIERS)}"
            )
            continue
        if not isinstance(order, list) or not all(isinstance(s, str) for s in order):
            problems.append(f"{at}: precedence.{attribute}: expected a list of sources, found {order!r}")
            continue
        unknown = [s for s in order if s not in SOURCES]
        mute = [s for s in order if s in SOURCES and s not in carriers]
        if unknown or mute or not order or len(set(order)) != len(order):
            why = []
            if unknown:
                why.append(f"unknown source(s) {unknown}; sources are {list(SOURCES)}")
            if mute:
                why.append(f"{mute} cannot say {attribute}")
            problems.append(
                f"{at}: precedence.{attribute}: {order} must list distinct sources among {list(carriers)}"
                + (f" ({'; '.join(why)})" if why else "")
            )
    if problems:
        raise PrecedenceError("; ".join(problems))
    return {**DEFAULT_PRECEDENCE, **{a: list(o) for a, o in configured.items()}}
