"""The shipped runner configurations load, and Beam reads their values back; `evorec data prepare
--beam-config` hands the file's runner and flags to the pipeline (no Flink or Dataflow is run)."""

from __future__ import annotations

import tomllib

import pytest
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)
from typer.testing import CliRunner

from evorec.cli import app
from recsys.data.beam_options import load_beam_config
from tests.infra.infra_files import INFRA, ROOT

BEAM = INFRA / "beam"


def options_of(name: str) -> PipelineOptions:
    config = load_beam_config(BEAM / name)
    return PipelineOptions([f"--runner={config.runner}", *config.to_args()])


def test_flink_config_reads_back_as_flink_options():
    options = options_of("flink.yaml")
    assert options.view_as(StandardOptions).runner == "FlinkRunner"
    flink = options.view_as(FlinkRunnerOptions)
    assert flink.flink_master == "http://flink-jobmanager:8081"
    assert flink.flink_version == "1.20" and flink.flink_submit_uber_jar is True and flink.parallelism == 4
    portable = options.view_as(PortableOptions)
    assert (portable.environment_type, portable.environment_config) == ("EXTERNAL", "localhost:50000")


def test_dataflow_config_reads_back_as_google_cloud_and_worker_options():
    options = options_of("dataflow.yaml")
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region) == ("my-gcp-project", "europe-west1")
    assert cloud.temp_location.startswith("gs://") and cloud.staging_location.startswith("gs://")
    workers = options.view_as(WorkerOptions)
    assert (workers.machine_type, workers.max_num_workers) == ("n2-standard-4", 10)
    assert options.view_as(SetupOptions).sdk_location == "container"


def test_the_dataflow_worker_image_is_the_projects_beam_worker_image():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    image = options_of("dataflow.yaml").view_as(WorkerOptions).sdk_container_image
    assert image == f"ghcr.io/OWNER/evorec-beam:{version}"
    assert "AS beam-worker" in (INFRA / "Dockerfile").read_text()


@pytest.mark.parametrize("name", ["flink.yaml", "dataflow.yaml"])
def test_data_prepare_passes_the_files_runner_and_flags_then_the_command_lines(monkeypatch, tmp_path, name):
    import recsys.data.beam_prepare

    calls = []

    def fake_run_prepare(source, out, config, runner, beam_args, infer_new_schema):
        calls.append((runner, beam_args))
        raise SystemExit(0)  # stop before any Beam runner is contacted

    monkeypatch.setattr(recsys.data.beam_prepare, "run_prepare", fake_run_prepare)
    result = CliRunner().invoke(
        app,
        [
            "data",
            "prepare",
            "ml-latest-small",
            "--data-dir",
            str(tmp_path),
            "--beam-config",
            str(BEAM / name),
            "--extra_flag=1",
        ],
    )
    assert result.exit_code == 0, result.output
    config = load_beam_config(BEAM / name)
    assert calls == [(config.runner, [*config.to_args(), "--extra_flag=1"])]


def test_data_prepare_refuses_a_runner_that_contradicts_the_file(tmp_path):
    result = CliRunner().invoke(
        app, ["data", "prepare", "--data-dir", str(tmp_path), "--beam-config", str(BEAM / "flink.yaml"),
              "--runner", "DirectRunner"],
    )  # fmt: skip
    assert result.exit_code != 0 and "contradicts" in str(result.exception)
