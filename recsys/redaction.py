"""Secret values kept out of every text this process stores, logs, reports or sends to a model.

A key is redacted by its value, not by the name it is shown under: a candidate that prints the
environment it found, or a model that echoes its prompt, carries the bare value. The values are
those of the variables a configuration names (:func:`remember`), and of every environment variable
whose name looks like a secret (:data:`SECRET_NAME`) and whose value is long enough not to be a
common word (:data:`MIN_LENGTH`). A text cut short (a stderr tail, a truncated error body) may
start or end with a piece of a value; a piece of :data:`MIN_LENGTH` characters or more at either
end is redacted too. Deliberate encodings (base64, reversal) are not recognised: that a candidate
cannot read a key at all is the sandbox's part.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from typing import TypeVar

from pydantic import BaseModel

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL|AUTH", re.IGNORECASE)
MIN_LENGTH = 8
T = TypeVar("T")

_remembered: dict[str, str] = {}  # value -> the variable it came from
_lock = threading.Lock()


def remember(variable: str) -> str | None:
    """The value of ``variable`` (None when unset or empty), redacted from now on whatever its name."""
    value = os.environ.get(variable) or None
    if value is not None and len(value.strip()) >= MIN_LENGTH:
        with _lock:
            _remembered[value.strip()] = variable
    return value


def secret_values() -> dict[str, str]:
    """Each secret value known, with the name of its variable; once seen, a value stays known (the
    variable may be unset later, the text that carries it may still come)."""
    found = {
        value.strip(): name
        for name, value in os.environ.items()
        if SECRET_NAME.search(name) and len(value.strip()) >= MIN_LENGTH
    }
    with _lock:
        for value, name in found.items():
            _remembered.setdefault(value, name)
        return dict(_remembered)


@functools.lru_cache(maxsize=8)
def _pattern(values: tuple[str, ...]) -> re.Pattern[str]:
    """One alternation, longest first: a value that contains another is replaced whole."""
    return re.compile("|".join(re.escape(value) for value in values))


def redact(text: str) -> str:
    """``text`` with every secret value (and a piece of one at either end) replaced by ``[REDACTED $NAME]``."""
    secrets = secret_values()
    if not secrets or not text:
        return text
    values = tuple(sorted(secrets, key=lambda value: (-len(value), value)))
    text = _pattern(values).sub(lambda match: f"[REDACTED ${secrets[match.group()]}]", text)
    for value in values:
        for size in range(len(value) - 1, MIN_LENGTH - 1, -1):
            if text.endswith(value[:size]):
                text = f"{text[:-size]}[REDACTED ${secrets[value]}]"
                break
        for size in range(len(value) - 1, MIN_LENGTH - 1, -1):
            if text.startswith(value[-size:]):
                text = f"[REDACTED ${secrets[value]}]{text[size:]}"
                break
    return text


def redact_json(value: T) -> T:
    """``value`` with every string in it redacted: dict keys and values, list and tuple items, and the
    fields of a pydantic model (the evolution's typed records)."""
    if isinstance(value, BaseModel):
        return type(value).model_validate(redact_json(value.model_dump(by_alias=True)))
    if isinstance(value, str):
        return redact(value)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {redact_json(key): redact_json(item) for key, item in value.items()}  # type: ignore[return-value]
    if isinstance(value, list | tuple):
        return type(value)(redact_json(item) for item in value)
    return value


class RedactingFilter(logging.Filter):
    """Formats each record's message (and traceback) once, redacted, before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: the handler reports it as logging does
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
