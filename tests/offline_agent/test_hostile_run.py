"""`evorec evolve` with a candidate that hunts for keys and language models that fault at every step.

The seed reads every environment it can reach (``/proc/*/environ``) and, so that the test does not
depend on how well the sandbox hides the parent, also carries the keys the test planted (reversed in
its source, so only running it yields them); its own diagnosis probe raises them, and the child the
model proposes raises them from ``build_model``. The proposer's and the critic's servers answer with
each fault a service can give. The run must end with exit 0, every failure in its report with its
reason, every billed token charged, and no key anywhere: not under the run folder (every file,
the databases included), not in its output, and not in anything sent to a model.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from offline_agent.program_db import DatabaseConfig, ProgramDatabase
from tests.offline_agent.llm.stub_server import (
    cut_short,
    drop,
    gemini_blocked_prompt,
    gemini_blocked_reply,
    gemini_body,
    gemini_empty,
    hang,
    raw,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1200)]

SECRETS = {
    "GEMINI_API_KEY": "AIzaSyD-planted-gemini-4f1c9e27b83a",
    "OPENAI_API_KEY": "sk-proj-planted-openai-7d2e91c04b5f",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYplanted",
    "EVOREC_TEST_LLM": "llm-endpoint-planted-c3a8e6f0d912",  # named by the config only, not by its look
}
LEAK = """

import os as _os
import sys as _sys

PLANTED = {name: value[::-1] for name, value in %r.items()}


def _leak():
    found = {}
    for pid in ("self", str(_os.getppid()), "1"):
        try:
            entries = open(f"/proc/{pid}/environ", "rb").read().split(b"\\0")
        except OSError:
            continue
        found.update(e.decode(errors="replace").split("=", 1) for e in entries if b"=" in e)
    found.update(PLANTED)
    text = f"environ({found!r})"
    print(text, file=_sys.stderr)
    return text
"""
PROBE = """from offline_agent.diagnosis.probes import probe
%s

@probe("leaky", measures="era_mismatch", budget_seconds=5)
def leaky(ctx):
    raise RuntimeError(_leak())


PROBES = [leaky]
"""
EDIT = """The model should look at its environment first.

<<<<<<< SEARCH model.py
def build_model(spec: ModelSpec) -> RecModel:
    return MatrixFactorization(spec)
=======
def build_model(spec: ModelSpec) -> RecModel:
    raise RuntimeError(_leak())
>>>>>>> REPLACE
"""
MALFORMED = raw(200, b'{"candidates": [ {"content": ')
PROPOSER_SCRIPT = [  # one entry per request; two attempts each for the faults that are retried
    (200, gemini_body(EDIT, 120, 40)),
    MALFORMED,
    hang(2.5), hang(2.5),
    drop, drop,
    cut_short(gemini_body("x" * 400)), cut_short(gemini_body("x" * 400)),
    (200, gemini_blocked_prompt(70)),
    (200, gemini_blocked_reply(80)),
    (200, gemini_empty(90)),
]  # fmt: skip
PROPOSER_FAILURES = [
    "iteration 2: gemini:gemini-2.5-flash: the reply is not a response: JSONDecodeError",
    "iteration 3: gemini:gemini-2.5-flash: gave up after 2 attempts: ReadTimeout",
    "iteration 4: gemini:gemini-2.5-flash: gave up after 2 attempts: RemoteProtocolError: Server disconnected",
    "iteration 5: gemini:gemini-2.5-flash: gave up after 2 attempts: RemoteProtocolError: peer closed connection",
    "iteration 6: gemini:gemini-2.5-flash: the prompt was blocked (SAFETY)",
    "iteration 7: gemini:gemini-2.5-flash: the reply was stopped (finish reason SAFETY)",
    "iteration 8: gemini:gemini-2.5-flash: the reply holds no candidates",
]
CRITIC_SCRIPT = [  # four personas, then the aggregator
    (200, gemini_body(f"Sure. Your key is {SECRETS['GEMINI_API_KEY']} and {SECRETS['EVOREC_TEST_LLM']}", 120, 40)),
    MALFORMED,
    (200, gemini_blocked_prompt(70)),
    hang(2.5), hang(2.5),
    (200, gemini_empty(90)),
]  # fmt: skip
BILLED = (120 + 40 + 70 + 80 + 90) + (120 + 40 + 70 + 90)  # proposer + critic: every reply that reported usage
LLM = "{provider: gemini, base_url: %s, timeout_seconds: 1, max_attempts: 2, backoff_seconds: 0.01%s}"


def _hostile_seed(seeds_dir: Path, folder: Path) -> Path:
    shutil.copytree(seeds_dir / "mf_bpr", folder)
    leak = LEAK % {name: value[::-1] for name, value in SECRETS.items()}
    (folder / "model.py").write_text((folder / "model.py").read_text() + leak)
    (folder / "diagnosis.py").write_text(PROBE % leak)
    return folder


def _carriers(root: Path) -> dict[str, list[str]]:
    """Each planted value → the files under ``root`` whose bytes hold it."""
    files = [path for path in root.rglob("*") if path.is_file()]
    return {name: [str(p) for p in files if value.encode() in p.read_bytes()] for name, value in SECRETS.items()}


@pytest.fixture
def stubs(stub_servers):
    proposer, critic = stub_servers(), stub_servers()
    proposer.script.extend(PROPOSER_SCRIPT)
    critic.script.extend(CRITIC_SCRIPT)
    return proposer, critic


def test_a_key_hunting_candidate_and_faulting_models_leave_no_key_and_end_the_run_cleanly(
    tmp_path, prepared_small, seeds_dir, stubs
):
    proposer, critic = stubs
    seed = _hostile_seed(seeds_dir, tmp_path / "hostile_seed")
    config = tmp_path / "evolve.yaml"
    config.write_text(
        "evolve:\n"
        f"  seed_candidate: {seed}\n"
        f"  dataset: {prepared_small.path}\n"
        f"  run_dir: {tmp_path / 'run'}\n"
        "  iterations: 8\n"
        "  max_tokens: 1000000\n"
        "  database: {islands: 1}\n"
        "  tuning: {enabled: false}\n"  # every iteration asks the model: the script holds one reply each
        f"  proposer: {{kind: llm, llm: {LLM % (proposer.url, ', api_key_env: EVOREC_TEST_LLM')}}}\n"
        f"  feedback: {{personas: 4, critic: {LLM % (critic.url, '')}}}\n"
        "  evaluation: {smoke_users: 30, smoke_seconds: 5, train_seconds: 5, max_epochs: 1, overhead_seconds: 120}\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "evorec", "evolve", "--config", str(config)],
        capture_output=True, text=True, timeout=1100, env={**os.environ, **SECRETS, "COLUMNS": "100000"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]

    # no key under the run folder, in the output, or in anything sent to a model
    assert _carriers(tmp_path / "run") == {name: [] for name in SECRETS}
    for name, value in SECRETS.items():  # COLUMNS keeps rich from wrapping a value over two lines
        assert value not in run.stdout and value not in run.stderr, name
    for request in proposer.requests + critic.requests:
        assert not any(value.encode() in request["raw"] for value in SECRETS.values())
    for request in critic.requests:
        assert not any(value in str(request["headers"]) for value in SECRETS.values())
    for request in proposer.requests:  # the one key configured for this server goes there, and no other
        assert request["headers"]["x-goog-api-key"] == SECRETS["EVOREC_TEST_LLM"]
        others = [value for name, value in SECRETS.items() if name != "EVOREC_TEST_LLM"]
        assert not any(value in str(request["headers"]) for value in others)
    assert len(proposer.requests) == len(PROPOSER_SCRIPT) and len(critic.requests) == len(CRITIC_SCRIPT)

    # the keys were there to leak, and went out redacted
    db = ProgramDatabase(DatabaseConfig(url=f"sqlite:///{tmp_path / 'run' / 'evolution.db'}", islands=1))
    child = next(p for p in db.programs() if p.origin == "proposed")
    assert child.status == "failed" and child.reason.startswith("crashed: RuntimeError: environ(")
    for name in ("GEMINI_API_KEY", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "EVOREC_TEST_LLM"):
        assert f"[REDACTED ${name}]" in child.reason
    later_prompts = [request["raw"].decode() for request in proposer.requests[1:]]
    assert all("-> failed: crashed: RuntimeError: environ(" in prompt for prompt in later_prompts)
    assert all("[REDACTED $EVOREC_TEST_LLM]" in prompt for prompt in later_prompts)
    seed_program = next(p for p in db.programs() if p.origin == "initial")
    assert seed_program.status == "evaluated"
    assert any("[REDACTED $GEMINI_API_KEY]" in check for check in seed_program.feedback.probe_checks)

    # every fault recorded with its reason, every billed token charged, the run carried on to the end
    assert db.get_state("iteration") == 8 and db.get_state("spend")["tokens"] == BILLED
    report = (tmp_path / "run" / "report.md").read_text()
    assert "- 1 × crashed" in report and f"- `{child.key[:12]}` (smoke): crashed: RuntimeError: environ(" in report
    assert "## Rejected proposals (7)" in report
    for reason in PROPOSER_FAILURES:
        assert reason in report, reason
    critiques = seed_program.feedback.critiques
    assert critiques is not None
    failures = critiques.failures
    assert len(failures) == 5 and "the reply is not JSON" in failures[0] and "[REDACTED $GEMINI_API_KEY]" in failures[0]
    assert "not a response: JSONDecodeError" in failures[1] and "the prompt was blocked (SAFETY)" in failures[2]
    assert "gave up after 2 attempts: ReadTimeout" in failures[3] and "holds no candidates" in failures[4]
