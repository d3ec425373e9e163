"""Reading a validated configuration model from YAML, with messages that name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from recsys.errors import ConfigError

Model = TypeVar("Model", bound=BaseModel)


def load_yaml_model(
    path: Path, model: type[Model], what: str, section: str | None = None, defaults: dict[str, Any] | None = None
) -> Model:
    """``model`` validated from the YAML in ``path`` (from its ``section`` when the file has one)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such {what} file") from exc
    return parse_yaml_model(text, str(path), model, what, section, defaults)


def parse_yaml_model(
    text: str,
    source: str,
    model: type[Model],
    what: str,
    section: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> Model:
    """``model`` validated from YAML ``text``; ``source`` names where the text came from in messages.

    Each validation error is reported with the line of the YAML node it concerns (the nearest
    enclosing one for a missing field), the dotted field path and what was expected.
    """
    try:
        raw = yaml.safe_load(text) or {}
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if isinstance(raw, dict) and section is not None and section in raw:
        raw, root = raw[section], (_child(root, section) or (None, 0))[0]
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping for the {what}, got {type(raw).__name__}")
    try:
        return model.model_validate({**(defaults or {}), **raw})
    except ValidationError as exc:
        problems = "\n".join(_describe(error, root) for error in exc.errors())
        raise ConfigError(f"{source}: invalid {what}:\n{problems}") from exc


def _describe(error: Any, root: yaml.Node | None) -> str:
    location = tuple(error["loc"])
    field = ".".join(str(part) for part in location) or "(top level)"
    message = str(error["msg"]).removeprefix("Value error, ")
    text = f"  line {node_line(root, location)}, {field}: {message}"
    value = error.get("input")
    if error["type"] != "missing" and isinstance(value, str | int | float | bool):
        text += f" (got {value!r})"
    return text


def _child(node: yaml.Node | None, key: str | int) -> tuple[yaml.Node, int] | None:
    """The node under ``key`` and the line that introduces it (the key's for a mapping entry)."""
    if isinstance(node, yaml.MappingNode):
        for name, value in node.value:
            if name.value == str(key):
                return value, int(name.start_mark.line) + 1
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        item: yaml.Node = node.value[key]
        return item, int(item.start_mark.line) + 1
    return None


def node_line(root: yaml.Node | None, location: tuple[str | int, ...]) -> int:
    """1-based line of the YAML entry at ``location`` (field names and list indices), or of its
    deepest existing ancestor when the path ends early (a missing field is reported on its parent)."""
    if root is None:
        return 1
    node, line = root, int(root.start_mark.line) + 1
    for key in location:
        found = _child(node, key)
        if found is None:
            break
        node, line = found
    return line


def with_overrides(settings: Model, overrides: dict[str, Any], what: str) -> Model:
    """``settings`` with the given (non-None) command-line values, validated like the file's."""
    chosen = {key: value for key, value in overrides.items() if value is not None}
    try:
        return type(settings).model_validate({**settings.model_dump(), **chosen})
    except ValidationError as exc:
        problems = "\n".join(f"  --{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid {what}:\n{problems}") from exc
