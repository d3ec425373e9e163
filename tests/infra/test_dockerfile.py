"""infra/Dockerfile, read as text (no docker engine here): the install of `make setup` without the
dev tools, a non-root runtime, the CLI as entry point; .dockerignore keeps local state out."""

from __future__ import annotations

import fnmatch
import re
import tomllib

import pytest

from tests.infra.infra_files import DOCKERFILE, ROOT, Stage, exec_form, instructions, lineage, parse_dockerfile

# psycopg sits in the dev extra for the PostgreSQL tests; a PostgreSQL registry needs it at run time.
RUNTIME_EXTRAS = {"psycopg"}


def expand_args(command: str, stage: Stage) -> str:
    """``$NAME`` and ``${NAME}`` replaced by the stage's ARG defaults."""
    defaults = dict(arg.partition("=")[::2] for arg in stage.args_of("ARG"))
    defaults = {name: value.strip('"') for name, value in defaults.items()}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), command)


def pip_installs(stage: Stage) -> list[str]:
    """Each `pip install ...` command of the stage's RUN instructions."""
    commands = []
    for run in stage.args_of("RUN"):
        commands += [part.strip() for part in re.split(r"&&|;", run) if re.search(r"\bpip install\b", part)]
    return commands


@pytest.fixture(scope="module")
def builder(dockerfile) -> Stage:
    installers = [stage for stage in dockerfile if pip_installs(stage)]
    assert len(installers) == 1, "one stage installs; the others copy its virtualenv"
    return installers[0]


def test_every_stage_starts_from_python_3_11_slim_or_beams_sdk_image():
    args, stages = parse_dockerfile(DOCKERFILE.read_text())
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    for stage in stages:
        root = lineage(stages, stage)[0]
        assert root.base == "python:3.11-slim" or root.base.startswith("apache/beam_python3.11_sdk:"), root.base


def test_the_beam_sdk_image_matches_the_locked_beam():
    args, _ = parse_dockerfile(DOCKERFILE.read_text())
    locked = re.search(r"^apache-beam==(\S+)$", (ROOT / "requirements/lock.txt").read_text(), re.MULTILINE)
    assert locked and args["BEAM_SDK_IMAGE"] == f"apache/beam_python3.11_sdk:{locked.group(1)}"


def test_lock_nodeps_is_installed_with_no_deps_and_nothing_after_it_resolves_dependencies(builder):
    """Any resolver run after torchrec is in would fetch the CUDA fbgemm-gpu it declares."""
    commands = pip_installs(builder)
    nodeps = [i for i, command in enumerate(commands) if "lock-nodeps.txt" in command]
    assert len(nodeps) == 1
    for command in commands[nodeps[0] :]:
        assert "--no-deps" in command.split(), command


def test_the_lock_only_constrains_so_dev_tools_stay_out(builder):
    """requirements/lock.txt also pins the dev extra; as constraints it installs none of it."""
    lock_uses = [c for c in pip_installs(builder) if re.search(r"\block\.txt\b", c)]
    assert lock_uses
    for command in lock_uses:
        assert re.search(r"(--constraint|-c) (\S*/)?lock\.txt\b", command), command
        assert not re.search(r"(--requirement|-r) (\S*/)?lock\.txt\b", command), command
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    dev_tools = {re.split(r"[=<>\[ ]", requirement)[0].lower() for requirement in dev} - RUNTIME_EXTRAS
    for command in map(lambda c: expand_args(c, builder), pip_installs(builder)):
        words = {re.split(r"[=<>\[]", word)[0].lower() for word in command.split()}
        assert not words & dev_tools, f"dev tools installed: {words & dev_tools}"
        assert "[dev]" not in command and "-e" not in command.split() and "--editable" not in command, command


def test_the_runtime_user_is_numeric_and_not_root_and_owns_the_data_dir(runtime):
    users = instructions(runtime, "USER")
    assert users, "the runtime image must not run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid lets Kubernetes check runAsNonRoot"
    assert gid.isdigit() and int(gid) != 0
    env = " ".join(instructions(runtime, "ENV"))
    data_dir = re.search(r"EVOREC_DATA_DIR=(\S+)", env).group(1)
    made = " ".join(instructions(runtime, "RUN"))
    assert re.search(rf"install -d -o {uid} -g {gid} {re.escape(data_dir)}\b", made), "the data dir must be writable"


def test_the_runtime_runs_the_cli_and_serves_by_default(runtime):
    assert exec_form(instructions(runtime, "ENTRYPOINT")[-1]) == ["evorec"]
    command = exec_form(instructions(runtime, "CMD")[-1])
    assert command[0] == "serve" and command[command.index("--host") + 1] == "0.0.0.0"
    assert instructions(runtime, "HEALTHCHECK"), "docker ps should tell whether a model is serving"


def test_the_build_installs_the_project_itself_without_editable_mode(builder):
    installs = pip_installs(builder)
    assert any(command.split()[-1] == "." for command in installs), installs


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's patterns leave ``path`` out, as Docker reads them: a pattern matching a
    folder drops its contents, ``**`` spans any number of folders, the last matching line wins
    (``!`` re-includes)."""
    result = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        segments = pattern.removeprefix("!").strip("/").split("/")
        if any(_match(segments, parts[:end]) for end in range(1, len(parts) + 1)):
            result = not negate
    return result


def _match(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(pattern[1:], parts[1:])


def test_dockerignore_drops_local_state_and_keeps_what_the_build_needs():
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    local_state = [".git/HEAD", ".venv/bin/python", "runs/evolve/x.db", "benchmarks/state/a/b.pt", ".mypy_cache/x",
                   ".ruff_cache/x", ".pytest_cache/x", "evorec/__pycache__/cli.cpython-311.pyc"]  # fmt: skip
    for path in local_state:
        assert ignored(path, patterns), f"{path} would be sent to the docker daemon"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    needed = ["pyproject.toml", "README.md", "requirements/lock.txt", "requirements/lock-nodeps.txt"]
    needed += [f"{package.rstrip('*')}/__init__.py" for package in packages["include"]]
    needed += ["recsys/datasets/ml-latest-small/ratings.csv", "offline_agent/seeds/sasrec_bce/model.py"]
    for path in needed:
        assert (ROOT / path).exists(), path
        assert not ignored(path, patterns), f"{path} is needed by the build but ignored"


def test_the_dockerignore_matcher_reads_patterns_as_docker_does():
    assert ignored("a/b/c.pyc", ["**/*.pyc"]) and ignored("x.pyc", ["**/*.pyc"])
    assert ignored("runs/a", ["runs"]) and not ignored("runsx/a", ["runs"])
    assert not ignored("a/keep.txt", ["a", "!a/keep.txt"]) and ignored("a/drop.txt", ["a", "!a/keep.txt"])
    assert ignored("evorec/__pycache__/x.pyc", ["**/__pycache__"]) and not ignored("evorec/cli.py", ["**/__pycache__"])
