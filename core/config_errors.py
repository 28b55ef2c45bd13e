"""A configuration mistake as one short message per problem: file, line, field, what was expected.

pydantic reports a location path (sources > police > page_size); the YAML node tree gives the
line of that path, so the operator is pointed at the line to fix instead of a traceback. The
declaration files (source contracts, the master schema) are read here too, their errors naming the
file, the entry and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Declared = TypeVar("Declared", bound=BaseModel)


def line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the deepest node of `loc` that exists in the YAML tree (a config, a policy)."""
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
        line = line_of(root, loc)
        field = ".".join(str(p) for p in loc) or "(top level)"
        where = f"{config_path}:{line}" if line else str(config_path)
        got = error.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f", got {got!r}"
        lines.append(f"  {where}: {field}: {error['msg']}{shown}")
    return "\n".join(lines)


def _entry(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """`columns[3] (gender).codes` for a pydantic error location: list items by index and, when the item
    has one, by name."""
    parts: list[str] = []
    node: Any = raw
    for key in loc:
        if isinstance(key, int) and parts:
            label = f"[{key}]"
            item = node[key] if isinstance(node, list) and key < len(node) else None
            if isinstance(item, dict) and "name" in item:
                label += f" ({item['name']})"
            parts[-1] += label
            node = item
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


def load_declaration(
    path: str | Path, model: type[Declared], error: type[Exception], what: str, expected: str
) -> Declared:
    """Read a YAML declaration file (`what`: "contract", "master schema") into its model, which takes the
    file's `path`; every problem raises `error` naming the file, the entry and the field (`expected`:
    the keys a file must have, for a file that is not a mapping at all)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise error(f"{path}: {what} file not found") from exc
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping with {expected}; found {type(raw).__name__}")
    try:
        return model(**raw, path=path)
    except ValidationError as exc:
        problems = "; ".join(f"{_entry(e['loc'], raw)}: {e['msg']}" for e in exc.errors())
        raise error(f"{path}: {problems}") from exc
