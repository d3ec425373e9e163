"""The console's settings (YAML and environment, secrets kept secret) and its diff of an edit."""

from __future__ import annotations

import pytest

from evorec.ui.config import load_ui_config, require_reviewers
from evorec.ui.diffs import block_diffs
from recsys.errors import ConfigError


def test_settings_come_from_the_environment_and_the_yaml_file_and_never_show_a_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOREC_UI_USERS", '{"alice": "from the environment"}')
    monkeypatch.setenv("EVOREC_UI_PORT", "9001")
    assert load_ui_config(None).port == 9001
    path = tmp_path / "console.yaml"
    path.write_text("ui:\n  port: 9002\n  runs_dir: elsewhere\n  session_hours: 1\n")
    config = load_ui_config(path)
    assert (config.port, str(config.runs_dir), config.session_hours) == (9002, "elsewhere", 1)  # the file wins
    assert config.users["alice"].get_secret_value() == "from the environment"
    assert "from the environment" not in repr(config) and "from the environment" not in str(config.model_dump())
    path.write_text("ui:\n  users: {bob: tiny}\n")
    with pytest.raises(ConfigError, match=r"(?s)console\.yaml.*line 2, users: .*at least 8 characters") as refused:
        load_ui_config(path)
    assert "tiny" not in str(refused.value)


def test_a_console_without_reviewers_is_refused_with_the_way_out(monkeypatch):
    monkeypatch.delenv("EVOREC_UI_USERS", raising=False)
    with pytest.raises(ConfigError, match="EVOREC_UI_USERS"):
        require_reviewers(load_ui_config(None))


def test_a_sign_in_limit_that_is_not_a_rate_is_refused_with_the_file_and_an_example(tmp_path):
    path = tmp_path / "console.yaml"
    path.write_text("ui:\n  failed_sign_ins: five a minute\n")
    with pytest.raises(ConfigError, match=r"(?s)console.yaml.*failed_sign_ins.*'5/minute;20/hour'"):
        load_ui_config(path)
    path.write_text("ui:\n  failed_sign_ins: 3/second;10/day\n")
    assert load_ui_config(path).failed_sign_ins == "3/second;10/day"


def test_the_diff_of_an_edit_marks_added_and_deleted_lines_per_changed_block():
    parent = {"model": "a = 1\nb = 2\n", "loss": "x = 1\n", "optim": "same\n"}
    child = {"model": "a = 1\nb = 3\nc = 4\n", "loss": "x = 1\n", "optim": "same\n", "reward": "r = 0\n"}
    diffs = block_diffs(parent, child)
    assert [d.block for d in diffs] == ["model", "reward"]  # unchanged blocks are left out, the contract's order
    model = diffs[0]
    assert (model.added, model.deleted) == (2, 1)
    assert [(line.kind, line.text) for line in model.lines if line.kind in ("add", "delete")] == [
        ("delete", "-b = 2"), ("add", "+b = 3"), ("add", "+c = 4"),
    ]  # fmt: skip
    assert [line.kind for line in model.lines[:3]] == ["file", "file", "hunk"]
    assert (diffs[1].added, diffs[1].deleted) == (1, 0)
