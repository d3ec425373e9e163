"""The CLI through its own entry point: help everywhere, lazy start-up, errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from evorec.cli import app

runner = CliRunner()


def _evorec(*args: str, env_data_dir=None) -> subprocess.CompletedProcess[str]:
    env = None
    if env_data_dir is not None:
        import os

        env = {**os.environ, "EVOREC_DATA_DIR": str(env_data_dir)}
    return subprocess.run([sys.executable, "-m", "evorec", *args], capture_output=True, text=True, timeout=300, env=env)


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command and group of the CLI, walked from its click tree (so a new one cannot be missed)."""
    found = [list(path)]
    for name, child in getattr(command, "commands", {}).items():  # a group
        found += _commands(child, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def test_the_cli_has_every_part_of_the_design():
    tops = {tuple(c) for c in COMMANDS if len(c) == 1}
    for name in ("run", "data", "train", "evolve", "experiment", "promote", "registry", "reward", "pipeline", "serve",
                 "ui"):  # fmt: skip
        assert (name,) in tops, name
    assert ["pipeline", "submit"] in COMMANDS and ["reward", "tune"] in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "evorec")
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_help_does_not_import_torch_or_beam():
    code = (
        "import sys\nsys.argv = ['evorec', '--help']\nfrom evorec.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'apache_beam', 'torchrec') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "HEAVY []" in out


def test_library_errors_exit_2_with_a_message_and_no_traceback(tmp_path):
    result = _evorec("data", "show", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "is not a prepared dataset" in result.stderr and "Traceback" not in result.stderr + result.stdout
    result = _evorec("data", "prepare", "ml-1m", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "run `evorec data fetch ml-1m` first" in result.stderr


@pytest.mark.integration
def test_prepare_then_show_a_yaml_described_dataset(tmp_path):
    rows = "\n".join(f"{u},{i},{(u + i) % 5 + 1},{1000 + u * 10 + i}" for u in range(1, 6) for i in range(1, 7))
    (tmp_path / "events.csv").write_text("u,i,r,t\n" + rows + "\n")
    (tmp_path / "d.yaml").write_text(
        "name: toy\ninteractions:\n  paths: [events.csv]\n  columns: {user: u, item: i, rating: r, timestamp: t}\n"
    )
    (tmp_path / "prepare.yaml").write_text("prepare:\n  filter: {min_item_interactions: 2}\n")
    out = tmp_path / "prepared"
    result = _evorec(
        "data", "prepare", str(tmp_path / "d.yaml"), "--config", str(tmp_path / "prepare.yaml"),
        "--out", str(out), "--split", "random", "--direct_num_workers=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "30" in result.stdout and "random" in result.stdout
    shown = _evorec("data", "show", str(out))
    assert shown.returncode == 0 and "toy" in shown.stdout


@pytest.mark.integration
def test_train_prints_the_metric_set_as_json_and_writes_it(tmp_path, prepared_small, seeds_dir):
    import json

    out = tmp_path / "run"
    result = _evorec(
        "train", "--candidate", str(seeds_dir / "mf_bpr"), "--dataset", str(prepared_small.path),
        "--max-epochs", "2", "--out", str(out), "--json", "--export",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout)  # stdout holds the JSON and nothing else; logs go to stderr
    assert printed == json.loads((out / "result.json").read_text())
    assert printed["epochs"] == 2 and 0.0 <= printed["test"]["ndcg@10"] <= 1.0
    assert len([line for line in result.stderr.splitlines() if line.startswith('{"epoch"')]) == 2
    assert result.stderr.count('"epoch": 1,') == 1  # each epoch once, not again through the log
    assert {f["probe"] for f in printed["diagnosis"]["findings"]} >= {"popularity_bias", "sequence_insensitivity"}
    assert (out / "diagnosis.md").exists() and (out / "artifact" / "model.pt2").exists()


@pytest.mark.integration
def test_train_on_the_plain_float32_path_says_so(tmp_path, prepared_small, seeds_dir):
    result = _evorec(
        "train", "--candidate", str(seeds_dir / "sasrec_bce"), "--dataset", str(prepared_small.path),
        "--max-epochs", "1", "--out", str(tmp_path / "run"), "--precision", "float32", "--no-bucketing",
        "--no-diagnose",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    logged = " ".join(result.stderr.split())  # the console wraps long lines
    assert "trains on cpu float32 (float32 asked for), random batches" in logged


def test_train_names_a_broken_candidate(tmp_path):
    (tmp_path / "c").mkdir()
    result = _evorec("train", "--candidate", str(tmp_path / "c"))
    assert result.returncode == 2 and "missing block(s) model.py" in result.stderr


def test_a_refused_promotion_exits_2_with_the_reason(tmp_path):
    registry = f"sqlite:///{tmp_path / 'registry.db'}"
    result = _evorec("promote", "approve", "7", "--reason", "ship it", "--registry", registry)
    assert result.returncode == 2 and "7" in result.stderr and "Traceback" not in result.stderr
