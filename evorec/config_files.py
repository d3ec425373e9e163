"""Reading a validated configuration model from a YAML file, with messages that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from evorec.exceptions import ConfigError

Model = TypeVar("Model", bound=BaseModel)


def load_yaml_model(
    path: Path, model: type[Model], what: str, section: str | None = None, defaults: dict[str, Any] | None = None
) -> Model:
    """``model`` validated from the YAML in ``path`` (from its ``section`` when the file has one)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such {what} file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping for the {what}, got {type(raw).__name__}")
    if section is not None:
        raw = raw.get(section, raw)
    try:
        return model.model_validate({**(defaults or {}), **raw})
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid {what}:\n{exc}") from exc
