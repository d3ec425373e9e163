"""`evorec reward`: real commands on real simulated logs; tuning writes a new version and overwrites nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from evorec.cli import app
from reward_lib.errors import RewardError
from reward_lib.store import SHIPPED

runner = CliRunner()


@pytest.mark.parametrize("command", ["list", "show", "validate", "tune", "simulate"])
def test_every_reward_command_has_help(command):
    result = runner.invoke(app, ["reward", command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_list_and_show_describe_the_shipped_rewards(tmp_path):
    listed = runner.invoke(app, ["reward", "list", "--store", str(tmp_path)])
    assert listed.exit_code == 0 and "clicks" in listed.output and "engagement" in listed.output
    shown = runner.invoke(app, ["reward", "show", "engagement", "--store", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "engagement@1" in shown.output and "output range: [-0.05, 2.5]" in shown.output


def test_simulate_validate_and_tune_from_the_command_line(prepared_small, tmp_path):
    logs, store = tmp_path / "logs", tmp_path / "store"
    for seed in ("3", "4"):
        options = ["--dataset", str(prepared_small.path), "--users", "400", "--days", "6", "--seed", seed]
        made = runner.invoke(app, ["reward", "simulate", "--out", str(logs / f"s{seed}"), *options])
        assert made.exit_code == 0, made.output
    validated = runner.invoke(app, ["reward", "validate", "clicks", "engagement", "--log", str(logs / "s3"),
                                    "--store", str(store), "--json"])  # fmt: skip
    assert validated.exit_code == 0, validated.output
    payload = json.loads(validated.output)
    assert {(v["reward"], v["table"], v["ok"]) for v in payload["validation"]} == {
        (reward, table, True) for reward in ("clicks@1", "engagement@1")
        for table in (f"training events of {prepared_small.name}", "log s3")
    }  # fmt: skip
    assert payload["alignment"]["clicks@1"]["arm_agreement"] == 1.0

    (store / "clicks").mkdir(parents=True)
    active = store / "clicks" / "v1.yaml"
    active.write_bytes((SHIPPED / "clicks.yaml").read_bytes())
    tune = ["reward", "tune", str(active), "--log", str(logs / "s3"), "--holdout", str(logs / "s4"),
            "--trials", "8", "--store", str(store)]  # fmt: skip
    for version in (2, 3):
        tuned = runner.invoke(app, tune)
        assert tuned.exit_code == 0, tuned.output
        assert f"new spec: {store / 'clicks' / f'v{version}.yaml'} (clicks@1 is unchanged)" in tuned.output
    assert active.read_bytes() == (SHIPPED / "clicks.yaml").read_bytes()
    assert sorted(p.name for p in (store / "clicks").iterdir()) == [
        "v1.yaml", "v2.report.html", "v2.report.json", "v2.report.md", "v2.yaml",
        "v3.report.html", "v3.report.json", "v3.report.md", "v3.yaml",
    ]  # fmt: skip
    report = json.loads((store / "clicks" / "v3.report.json").read_text())
    assert report["before"] == "clicks@1" and report["after"] == "clicks@3" and len(report["trials"]) == 8
    assert {"tuning_before", "tuning_after", "holdout_before", "holdout_after"} <= set(report)


def test_an_invalid_spec_is_reported_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nversion: 1\ncomponents:\n  - signal: clik\n    weight: 1\n")
    result = runner.invoke(app, ["reward", "show", str(bad)])
    assert isinstance(result.exception, RewardError)
    assert f"{bad}: invalid reward spec:\n  line 4, components.0.signal: unknown signal 'clik'" in str(result.exception)


@pytest.mark.slow
def test_a_reward_error_exits_2_with_the_message_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nversion: 1\ncomponents:\n  - {signal: click, weight: 5, range: [0, 1]}\n")
    done = subprocess.run([sys.executable, "-m", "evorec", "reward", "show", str(bad)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "line 4, components.0: weight 5 is outside its declared range [0, 1]" in " ".join(done.stderr.split())
