"""The candidate API as prompt text, rendered from ``recsys.candidate_api`` when the prompt is built.

The text is the module's docstring, then a stub of each public name (signatures, dataclass fields,
docstrings, no bodies), read with ``inspect``: a proposer is shown the contract the trainer holds
it to, never a copy that could fall behind the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
from types import ModuleType
from typing import Any

from recsys import candidate_api


def _docstring(obj: Any, indent: str) -> list[str]:
    doc = inspect.getdoc(obj)
    if not doc:
        return []
    return [textwrap.indent(f'"""{doc}\n"""' if "\n" in doc else f'"""{doc}"""', indent)]


def _annotation(value: Any) -> str:
    return value if isinstance(value, str) else inspect.formatannotation(value)


def _signature(function: Any) -> str:
    """``(name: type = default, ...) -> type`` as written in the source (annotations are strings there)."""
    signature = inspect.signature(function)
    parameters = []
    for parameter in signature.parameters.values():
        text = str(parameter.replace(annotation=inspect.Parameter.empty, default=inspect.Parameter.empty))
        if parameter.annotation is not inspect.Parameter.empty:
            text += f": {_annotation(parameter.annotation)}"
        if parameter.default is not inspect.Parameter.empty:
            text += f" = {parameter.default!r}"
        parameters.append(text)
    returns = signature.return_annotation
    shown = "" if returns is inspect.Signature.empty else f" -> {_annotation(returns)}"
    return f"({', '.join(parameters)}){shown}"


def _function(name: str, function: Any, indent: str = "", decorator: str = "") -> list[str]:
    head = [f"{indent}{decorator}"] if decorator else []
    body = _docstring(function, indent + "    ") or [f"{indent}    ..."]
    return [*head, f"{indent}def {name}{_signature(function)}:", *body]


def _class(cls: type) -> list[str]:
    params = getattr(cls, "__dataclass_params__", None)
    head = [f"@dataclass{'(frozen=True)' if params is not None and params.frozen else ''}"] if params else []
    bases = "(Protocol)" if getattr(cls, "_is_protocol", False) else ""
    lines = [*head, f"class {cls.__name__}{bases}:", *_docstring(cls, "    ")]
    if params is not None:
        for field in dataclasses.fields(cls):
            default = "" if field.default is dataclasses.MISSING else f" = {field.default!r}"
            lines.append(f"    {field.name}: {_annotation(field.type)}{default}")
    for name, member in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(member, property):
            lines += ["", *_function(name, member.fget, "    ", "@property")]
        elif inspect.isfunction(member):
            lines += ["", *_function(name, member, "    ")]
    return lines


def candidate_api_text(module: ModuleType = candidate_api) -> str:
    """The module's docstring, how to import it, and a stub of every name in its ``__all__``."""
    stubs: list[str] = []
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value):
            stubs += ["", "", *_class(value)]
        elif inspect.isfunction(value):
            stubs += ["", "", *_function(name, value)]
        else:
            stubs += ["", f"{name} = {value!r}"]
    return (
        f"{inspect.getdoc(module)}\n\n"
        f"Blocks import it as: from {module.__name__} import {', '.join(module.__all__)}\n\n"
        f"```python\n{chr(10).join(stubs).strip()}\n```"
    )
