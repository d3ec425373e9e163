"""The README and docs/ say what the code does: links resolve, named paths exist, examples load, commands parse.

Each check reads the pages as a newcomer would and holds what they say against the real thing: the YAML
and JSON examples go through the loaders the commands use, and every `evorec` command line shown is
parsed by the real command tree.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from pydantic import BaseModel

from ab_testing.experiment import ExperimentPlan
from evorec.cli import app
from evorec.ui.config import UIConfig
from offline_agent.evolve import EvolutionConfig
from offline_agent.llm.base import LLMConfig
from online_agent.agent import OnlineAgentConfig
from pipelines.config import PipelineConfig
from recsys.config_files import parse_yaml_model
from recsys.data.config import PrepareConfig
from recsys.data.sources import DatasetSource
from reward_lib.spec import parse_spec
from serving.server import RecommendBody, ServerConfig

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_LEVEL = ("evorec", "recsys", "pipelines", "offline_agent", "online_agent", "ab_testing", "reward_lib",
             "serving", "infra", "benchmarks", "tests", "docs", "requirements", ".ci")  # fmt: skip
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")

# A YAML example names its file in its first line (`# evolve.yaml`); the file name says which loader reads it.
YAML_LOADERS: dict[str, tuple[type[BaseModel], str | None]] = {
    "my-data.yaml": (DatasetSource, None),
    "prepare.yaml": (PrepareConfig, "prepare"),
    "evolve.yaml": (EvolutionConfig, "evolve"),
    "plan.yaml": (ExperimentPlan, "experiment"),
    "online_agent.yaml": (OnlineAgentConfig, "online_agent"),
    "serve.yaml": (ServerConfig, "serve"),
    "ui.yaml": (UIConfig, "ui"),
    "pipeline.yaml": (PipelineConfig, "pipeline"),
}


def _blocks(language: str) -> Iterator[tuple[Path, str]]:
    for page in PAGES:
        for lang, body in FENCE.findall(page.read_text()):
            if lang == language:
                yield page, body


def _ids(items: list[tuple[Path, str]]) -> list[str]:
    return [f"{page.relative_to(ROOT)}:{body.splitlines()[0][:40]}" for page, body in items]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_every_link_between_pages_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no heading #{anchor})")
    assert not broken, "\n".join(broken)


def test_the_readme_links_every_docs_page() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in LINK.findall((ROOT / "README.md").read_text())}
    missing = [page.name for page in PAGES[1:] if page.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def test_the_readme_opens_with_the_two_commands() -> None:
    first_block = FENCE.search((ROOT / "README.md").read_text())
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(2).splitlines()]
    assert commands == ["make run", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.MULTILINE) and re.search(r"^test:", makefile, re.MULTILINE)


def test_every_repository_path_named_exists() -> None:
    missing = []
    for page in PAGES:
        for text in CODE.findall(page.read_text()):
            path = text.split(" ")[0].rstrip(",.:;")
            if not path.startswith(tuple(f"{top}/" for top in TOP_LEVEL)) or any(c in path for c in "<>*{}…"):
                continue
            if not (ROOT / path).exists():
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, "\n".join(missing)


def test_every_result_file_quoted_is_one_a_benchmark_writes() -> None:
    quoted = {name for page in PAGES for name in re.findall(r"benchmarks/results/(\w+)\.json", page.read_text())}
    assert quoted, "the pages cite no benchmark result file"
    for name in quoted:
        result = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
        assert {"command", "dataset", "date", "machine"} <= result.keys(), name


YAML_EXAMPLES = list(_blocks("yaml"))


@pytest.mark.parametrize(("page", "body"), YAML_EXAMPLES, ids=_ids(YAML_EXAMPLES))
def test_every_yaml_example_loads(page: Path, body: str, tmp_path: Path) -> None:
    """Each example goes through the loader of the file it names (every model forbids unknown fields, so
    nothing an example sets is silently ignored); `llm: {...}` lines through the language-model settings."""
    first = body.splitlines()[0]
    name = first.removeprefix("# ").split(":")[0].split(" ")[0]
    source = f"{page.name} example"
    if name in YAML_LOADERS:
        model, section = YAML_LOADERS[name]
        defaults = {"base_dir": str(tmp_path)} if model is DatasetSource else None
        parse_yaml_model(body, source, model, name, section, defaults)  # unknown fields are errors: none is ignored
    elif "a reward spec" in first:
        assert parse_spec(body, source).components
    else:
        fragments = [line for line in body.splitlines() if line.startswith("llm:")]
        assert fragments, f"{source}: the first line should name the file the example is ({first!r})"
        for line in fragments:
            parse_yaml_model(line, source, LLMConfig, "language model", section="llm")


JSON_EXAMPLES = list(_blocks("json"))


@pytest.mark.parametrize(("page", "body"), JSON_EXAMPLES, ids=_ids(JSON_EXAMPLES))
def test_every_request_body_shown_is_accepted(page: Path, body: str) -> None:
    RecommendBody.model_validate_json(body)


def _command_lines() -> Iterator[tuple[Path, list[str]]]:
    for page, body in _blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value before the command
                words = words[1:]
            if words[:1] == ["torchrun"] and "evorec" in words:
                words = words[words.index("evorec") :]
            if words:
                yield page, words


def _resolve(words: list[str]) -> tuple[Any, list[str]]:
    """The command a line runs (typer's command tree), and the words left for it."""
    command = typer.main.get_command(app)
    rest = words[1:]
    while getattr(command, "commands", None) and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        assert sub is not None, f"evorec has no command {' '.join(words[: len(words) - len(rest) + 1])!r}"
        command, rest = sub, rest[1:]
    return command, rest


def _options(command: Any) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)}


def test_every_command_shown_exists_with_its_options() -> None:
    """Every `evorec ...`, `make ...` and `python benchmarks/...` line in a shell example names a real
    command and only options it declares (except `data prepare`, which hands unknown ones to Beam)."""
    problems, seen = [], 0
    makefile = (ROOT / "Makefile").read_text()
    for page, words in _command_lines():
        where = f"{page.relative_to(ROOT)}: {' '.join(words)}"
        if words[0] == "evorec":
            seen += 1
            try:
                command, rest = _resolve(words)
            except AssertionError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if command.context_settings.get("ignore_unknown_options"):
                continue
            unknown = {w.split("=")[0] for w in rest if w.startswith("-")} - _options(command) - {"--help"}
            if unknown:
                problems.append(f"{where}: unknown options {sorted(unknown)}")
        elif words[0] == "make":
            if not re.search(rf"^{re.escape(words[1])}:", makefile, re.MULTILINE):
                problems.append(f"{where}: no such make target")
        elif words[0] == "python" and words[1].startswith("benchmarks/"):
            script = ROOT / words[1]
            if not script.exists():
                problems.append(f"{where}: no such script")
                continue
            source = script.read_text()
            unknown = {w.split("=")[0] for w in words[2:] if w.startswith("--")}
            unknown = {option for option in unknown if f'"{option}"' not in source}
            if unknown:
                problems.append(f"{where}: the script declares no {sorted(unknown)}")
    assert seen > 20, "the shell examples were not found"
    assert not problems, "\n".join(problems)
