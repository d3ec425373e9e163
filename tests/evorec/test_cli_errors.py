"""No traceback reaches a user: every command, given bad arguments, URLs or environment values,
answers with a message and exit code 2 (through the real entry point, `evorec.cli.main`)."""

from __future__ import annotations

import sys

import pytest

from evorec.cli import main
from tests.evorec.test_cli import COMMANDS


def _leaf_commands() -> list[list[str]]:
    """Commands that are not groups: no other command extends them."""
    names = {tuple(command) for command in COMMANDS}
    return [
        command
        for command in COMMANDS
        if command and not any(len(other) > len(command) and other[: len(command)] == tuple(command) for other in names)
    ]


def _run(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``evorec ARGS`` in this process: exit code and everything printed."""
    monkeypatch.setattr(sys, "argv", ["evorec", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("command", _leaf_commands(), ids=" ".join)
def test_every_command_refuses_an_unknown_option_with_exit_2(monkeypatch, capsys, command):
    code, printed = _run(monkeypatch, capsys, *command, "--no-such-option")
    assert code == 2 and ("No such option" in printed or "error:" in printed) and "Traceback" not in printed


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("serve", "--port", "99999"), "65535"),
        (("serve", "--registry", "bogus://x"), "not a registry URL"),
        (("registry", "list", "--registry", "bogus://x"), "not a registry URL"),
        (
            ("promote", "approve", "2", "--reason", "r", "--registry", "sqlite:////no/such/folder/r.db"),
            "/no/such/folder does not exist",
        ),
        (("runs", "list", "--registry", "postgresql+nosuchdriver://h/db"), "not a registry URL"),
        (("runs", "list", "--kind", "nonsense"), "evolution or experiment"),
        (("experiment", "list", "--registry", "sqlite:////no/such/folder/r.db"), "does not exist"),
        (("ui", "--registry", "sqlite:////no/such/folder/r.db"), "does not exist"),
        (("ui", "--port", "0"), "--port"),
        (("train", "--candidate", "/no/such/candidate"), "no such candidate directory"),
        (("data", "show", "no-such-dataset"), "no-such-dataset"),
        (("evolve", "--config", "/no/such/evolve.yaml"), "/no/such/evolve.yaml"),
        (("pipeline", "run", "no-such-pipeline"), "no-such-pipeline"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else None,
)
def test_bad_arguments_and_urls_exit_2_with_a_message(monkeypatch, capsys, tmp_path, args, expected):
    monkeypatch.setenv("EVOREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EVOREC_UI_USERS", '{"alice": "a long passphrase"}')
    code, printed = _run(monkeypatch, capsys, *args)
    assert code == 2, printed
    assert expected in printed and "Traceback" not in printed


@pytest.mark.parametrize(
    ("variable", "value", "args", "expected"),
    [
        ("EVOREC_UI_USERS", "not json", ("ui",), "EVOREC_UI_USERS must be a JSON object"),
        ("EVOREC_UI_USERS", '{"alice": "short"}', ("ui",), "at least 8 characters"),
        ("EVOREC_UI_SESSION_HOURS", "forever", ("ui",), "session_hours"),
        ("EVOREC_REGISTRY_URL", "bogus://x", ("registry", "list"), "not a registry URL"),
        ("EVOREC_REGISTRY_URL", "sqlite:////no/such/folder/r.db", ("runs", "list"), "does not exist"),
    ],
)
def test_bad_environment_values_exit_2_with_a_message(monkeypatch, capsys, tmp_path, variable, value, args, expected):
    monkeypatch.setenv("EVOREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv(variable, value)
    code, printed = _run(monkeypatch, capsys, *args)
    assert code == 2, printed
    assert expected in printed and "Traceback" not in printed
    assert not (tmp_path / "no").exists()


def test_an_unforeseen_error_is_a_message_too_with_the_traceback_only_when_asked(monkeypatch, capsys):
    def broken() -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("evorec.cli.app", broken)
    code, printed = _run(monkeypatch, capsys)
    assert code == 2 and "ZeroDivisionError: a bug" in printed and "--verbose" in printed
    assert "Traceback" not in printed
