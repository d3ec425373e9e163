"""Loading candidates: a directory of code blocks, resolved, imported and checked against the contract.

The blocks and what each provides are the candidate API (``recsys.candidate_api``). A directory
holds some of them and an optional ``candidate.yaml`` (``name``, ``description``, ``base``): a
candidate with a ``base`` takes every block it does not define from that candidate (a sibling
directory), so a variant holds only what it changes. Loading resolves the bundle, checks every
required function and its parameters, and names the block and function when something is missing
or wrong.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from recsys.errors import EvorecError

BLOCKS = ("model", "loss", "optim", "reward", "diagnosis")
REQUIRED: dict[str, dict[str, tuple[str, ...]]] = {
    "model": {"build_model": ("spec",)},
    "loss": {"build_train_task": ("spec",)},
    "optim": {"training_plan": (), "build_optimizer": ("params",)},
    "reward": {"event_weights": ("events",)},
    "diagnosis": {},
}
REQUIRED_VALUES = {"diagnosis": ("PROBES",)}


class CandidateError(EvorecError):
    """A candidate's blocks do not fulfil the contract."""


@dataclass(frozen=True)
class Candidate:
    """A resolved, validated candidate: its source per block, and the loaded modules."""

    name: str
    description: str
    sources: dict[str, str]
    modules: dict[str, ModuleType] = field(repr=False, compare=False)

    @property
    def content_hash(self) -> str:
        """sha256 over the blocks' sources: two candidates with the same code are one candidate."""
        digest = hashlib.sha256()
        for block in BLOCKS:
            digest.update(block.encode() + b"\0" + self.sources[block].encode() + b"\0")
        return digest.hexdigest()

    def function(self, block: str, name: str) -> Any:
        return getattr(self.modules[block], name)

    def write(self, directory: Path) -> None:
        """Write the resolved blocks (no ``base``) so the directory stands on its own."""
        directory.mkdir(parents=True, exist_ok=True)
        for block, source in self.sources.items():
            (directory / f"{block}.py").write_text(source)
        meta = {"name": self.name, "description": self.description}
        (directory / "candidate.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / "candidate.yaml"
    if not path.exists():
        return {}
    try:
        meta = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CandidateError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(meta, dict) or not set(meta) <= {"name", "description", "base"}:
        raise CandidateError(f"{path}: expected a mapping with name, description and base only")
    return meta


def resolve_sources(directory: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, str], dict[str, Any]]:
    """The source of every block, following ``base`` links; a cycle or a missing block is an error."""
    directory = directory.resolve()
    if not directory.is_dir():
        raise CandidateError(f"{directory}: no such candidate directory")
    if directory in seen:
        raise CandidateError(f"{directory}: candidate bases form a cycle: {' -> '.join(map(str, seen))}")
    meta = _read_meta(directory)
    sources: dict[str, str] = {}
    if "base" in meta:
        sources, _ = resolve_sources(directory.parent / str(meta["base"]), (*seen, directory))
    for block in BLOCKS:
        path = directory / f"{block}.py"
        if path.exists():
            sources[block] = path.read_text()
    missing = [b for b in BLOCKS if b not in sources]
    if missing:
        raise CandidateError(f"{directory}: missing block(s) {', '.join(f'{b}.py' for b in missing)}")
    return sources, meta


_PARSING = threading.Lock()


def parse_block(source: str, filename: str = "<unknown>") -> ast.Module:
    """A block's source as an AST, one parse at a time in this process.

    Python 3.11 keeps the AST constructor's recursion depth in interpreter-wide state, so parses in
    two threads at once (proposals and checks of parallel runs) can fail with a spurious
    ``SystemError: AST constructor recursion depth mismatch`` (CPython gh-106905).
    """
    with _PARSING:
        return ast.parse(source, filename=filename)


def _load_module(name: str, block: str, source: str) -> ModuleType:
    module_name = f"evorec_candidate_{name}_{block}"
    spec = importlib.util.spec_from_loader(module_name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__file__ = f"<candidate {name}/{block}.py>"
    try:
        code = compile(source, module.__file__, "exec")
    except SyntaxError as exc:
        raise CandidateError(f"{block}.py, line {exc.lineno}: syntax error: {exc.msg}") from exc
    sys.modules[module_name] = module
    try:
        exec(code, module.__dict__)
    except Exception as exc:
        del sys.modules[module_name]
        raise CandidateError(f"{block}.py: failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def _check(block: str, module: ModuleType) -> None:
    for function, parameters in REQUIRED[block].items():
        value = getattr(module, function, None)
        if value is None:
            raise CandidateError(f"{block}.py: function {function}({', '.join(parameters)}) is missing")
        if not callable(value):
            raise CandidateError(f"{block}.py: {function} must be a function, found {type(value).__name__}")
        found = tuple(inspect.signature(value).parameters)
        if found != parameters:
            contract = f"{function}({', '.join(parameters)})"
            raise CandidateError(f"{block}.py: {function} takes ({', '.join(found)}); the contract is {contract}")
    for name in REQUIRED_VALUES.get(block, ()):
        if not hasattr(module, name):
            raise CandidateError(f"{block}.py: {name} is missing")


def load_candidate(directory: Path) -> Candidate:
    """Resolve, import and validate the candidate in ``directory``."""
    sources, meta = resolve_sources(directory)
    name = str(meta.get("name", directory.resolve().name))
    short = hashlib.sha256("".join(sources[b] for b in BLOCKS).encode()).hexdigest()[:12]
    modules = {}
    for block in BLOCKS:
        try:
            modules[block] = _load_module(short, block, sources[block])
            _check(block, modules[block])
        except CandidateError as exc:
            raise CandidateError(f"candidate {name} ({directory}): {exc}") from exc
    return Candidate(name, str(meta.get("description", "")), sources, modules)
