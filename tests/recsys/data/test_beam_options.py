"""Beam runner configuration files: valid files become Beam flags; bad ones fail naming file and field."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import DebugOptions, FlinkRunnerOptions, PipelineOptions

from recsys.data.beam_options import DEFAULT_RUNNER, BeamRunnerConfig, beam_invocation, load_beam_config
from recsys.errors import ConfigError


def write(tmp_path, text: str):
    path = tmp_path / "runner.yaml"
    path.write_text(text)
    return path


def test_a_valid_file_becomes_flags_that_beam_reads_back(tmp_path):
    config = load_beam_config(
        write(
            tmp_path,
            "runner: FlinkRunner\noptions:\n  flink_master: http://jm:8081\n  flink_submit_uber_jar: true\n"
            "  parallelism: 3\n  experiments: [a, b]\n",
        )
    )
    assert config.runner == "FlinkRunner"
    assert config.to_args() == [
        "--flink_master=http://jm:8081", "--flink_submit_uber_jar", "--parallelism=3", "--experiments=a",
        "--experiments=b",
    ]  # fmt: skip
    options = PipelineOptions(config.to_args())
    flink = options.view_as(FlinkRunnerOptions)
    assert (flink.flink_master, flink.flink_submit_uber_jar, flink.parallelism) == ("http://jm:8081", True, 3)
    assert options.view_as(DebugOptions).experiments == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("options: {parallelism: 2}\n", "runner"),
        ("runner: Flink Runner\n", "runner"),
        ("runner: FlinkRunner\nparallelism: 2\n", "parallelism"),
        ("runner: FlinkRunner\noptions: {--parallelism: 2}\n", "options"),
        ("runner: FlinkRunner\noptions: {runner: DataflowRunner}\n", "options"),
        ("runner: FlinkRunner\noptions: {use_public_ips: false}\n", "use_public_ips"),
        ("runner: FlinkRunner\noptions: {labels: {team: recs}}\n", "options.labels"),
    ],
)
def test_a_malformed_file_fails_naming_the_file_and_the_field(tmp_path, text, field):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_beam_config(path)
    assert str(path) in str(error.value) and field in str(error.value)


def test_an_unknown_option_fails_with_the_closest_beam_option(tmp_path):
    path = write(tmp_path, "runner: FlinkRunner\noptions: {flink_mastr: http://jm:8081}\n")
    with pytest.raises(ConfigError, match="did you mean flink_master") as error:
        load_beam_config(path)
    assert f"{path}: options.flink_mastr: not a Beam pipeline option" in str(error.value)


@pytest.mark.parametrize(
    ("option", "message"), [("flink_version: 1.20", "flink_version.*'1.2'"), ("parallelism: four", "parallelism")]
)
def test_a_value_beam_refuses_fails_on_load_not_at_submission(tmp_path, option, message):
    path = write(tmp_path, f"runner: FlinkRunner\noptions:\n  {option}\n")
    with pytest.raises(ConfigError, match=message) as error:
        load_beam_config(path)
    assert str(path) in str(error.value)


def test_the_file_sets_the_runner_and_command_line_flags_come_last_so_they_win():
    config = BeamRunnerConfig(runner="FlinkRunner", options={"parallelism": 4})
    runner, args = beam_invocation(config, None, ["--parallelism=8"])
    assert runner == "FlinkRunner" and args == ["--parallelism=4", "--parallelism=8"]
    assert PipelineOptions(args).view_as(FlinkRunnerOptions).parallelism == 8
    assert beam_invocation(config, "FlinkRunner", []) == ("FlinkRunner", ["--parallelism=4"])
    assert beam_invocation(None, None, ["--x=1"]) == (DEFAULT_RUNNER, ["--x=1"])
    assert beam_invocation(None, "DirectRunner", []) == ("DirectRunner", [])


def test_a_runner_option_that_contradicts_the_file_is_refused():
    with pytest.raises(ConfigError, match="DirectRunner contradicts the Beam config's runner FlinkRunner"):
        beam_invocation(BeamRunnerConfig(runner="FlinkRunner"), "DirectRunner", [])
