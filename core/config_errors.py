"""A configuration mistake as one short message per problem: file, line, field, what was expected.

pydantic reports a location path (sources > police > page_size); the YAML node tree gives the
line of that path, so the operator is pointed at the line to fix instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the deepest node of `loc` that exists in the YAML tree."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if k.value == str(part)]
            if not found:
                break
            key, node = found[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def explain(config_path: Path, exc: ValidationError | TypeError) -> str:
    """The message `hub` exits with for an invalid config file."""
    if not isinstance(exc, ValidationError):
        return f"{config_path}: the file must be a YAML mapping of settings ({exc})"
    try:
        root = yaml.compose(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        root = None
    lines = [f"{config_path}: {exc.error_count()} configuration error(s)"]
    for error in exc.errors():
        # A discriminated union adds the transport tag to the path; it is not a key in the file.
        loc = tuple(p for p in error["loc"] if p not in {"sql", "folder", "rest", "sftp"})
        line = _line_of(root, loc)
        field = ".".join(str(p) for p in loc) or "(top level)"
        where = f"{config_path}:{line}" if line else str(config_path)
        got = error.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f", got {got!r}"
        lines.append(f"  {where}: {field}: {error['msg']}{shown}")
    return "\n".join(lines)
