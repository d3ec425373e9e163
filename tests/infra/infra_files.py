"""The infra files as data: Kubernetes manifests by file, the Dockerfile as stages of instructions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
DOCKERFILE = INFRA / "Dockerfile"
EXAMPLE_SECRET = "secret.example.yaml"
KUSTOMIZATION = "kustomization.yaml"


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    """Every Kubernetes object file of infra/k8s (the kustomization itself is not an object)."""
    return sorted(p for p in K8S.glob("*.yaml") if p.name != KUSTOMIZATION)


def find(kind: str) -> dict[str, Any]:
    """The one object of ``kind`` among the deployed manifests."""
    found = [
        doc for path in manifest_files() if path.name != EXAMPLE_SECRET for doc in load_documents(path)
        if doc["kind"] == kind
    ]  # fmt: skip
    assert len(found) == 1, f"expected one {kind} in {K8S}, found {len(found)}"
    return found[0]


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        name, _, rest = line.strip().partition(" ")
        name, rest = name.upper(), " ".join(rest.split())
        if name == "FROM":
            match = re.fullmatch(r"(\S+)(?: AS (\S+))?", rest, flags=re.IGNORECASE)
            assert match, f"cannot read FROM {rest}"
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), match.group(1))
            stages.append(Stage(match.group(2), base))
        elif not stages and name == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default.strip('"')
        else:
            assert stages, f"{name} before the first FROM"
            stages[-1].instructions.append((name, rest))
    return args, stages


def exec_form(args: str) -> list[str]:
    """An instruction's JSON (exec) form, e.g. ENTRYPOINT ["evorec"]."""
    value = json.loads(args)
    assert isinstance(value, list), f"expected the exec form, got {args}"
    return value


def lineage(stages: list[Stage], stage: Stage) -> list[Stage]:
    """``stage`` and the stages it is built on, the first one first."""
    by_name = {s.name: s for s in stages if s.name}
    chain = [stage]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    return chain


def instructions(chain: list[Stage], instruction: str) -> list[str]:
    return [args for stage in chain for args in stage.args_of(instruction)]
