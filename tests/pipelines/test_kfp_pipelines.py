"""The Kubeflow pipelines: compiled IR (components, artifact wiring, fan-out, caching), the stages
that touch the registry, and the two-loop pipeline run end to end with kfp.local."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI, Request
from typer.testing import CliRunner

from evorec.cli import app
from offline_agent.evaluator import content_key
from offline_agent.program_db import DatabaseConfig, ProgramDatabase
from pipelines.config import PipelineConfig, load_pipeline_config
from pipelines.runner import PipelineRunError, compile_pipeline, run_local, submit
from pipelines.steps import PipelineStepError, approval_gate, register_finalists
from recsys.errors import ConfigError
from serving.registry import Registry
from tests.serving.conftest import LiveServer, free_port


def _compiled(tmp_path: Path, name: str, **config: Any) -> dict[str, Any]:
    path = compile_pipeline(name, PipelineConfig(**config), tmp_path / f"{name}.yaml")
    return yaml.safe_load(path.read_text())


def _dag(spec: dict[str, Any], component: str | None = None) -> dict[str, Any]:
    return (spec["components"][component]["dag"] if component else spec["root"]["dag"])["tasks"]


def _producer(task: dict[str, Any], artifact: str) -> tuple[str, str]:
    """Which task and output feed a task's input artifact (through a loop's channel when inside one)."""
    source = task["inputs"]["artifacts"][artifact]
    if "taskOutputArtifact" in source:
        return source["taskOutputArtifact"]["producerTask"], source["taskOutputArtifact"]["outputArtifactKey"]
    return "parent", source["componentInputArtifact"]


def test_every_pipeline_compiles_with_the_config_as_parameter_defaults(tmp_path):
    for name, expected in [
        ("offline_evolution", {"prepare-data", "start-evolution", "choose-finalists", "register-models"}),
        ("online_experiment", {"prepare-data", "run-experiment", "approval-gate"}),
        ("two_loop", {"prepare-data", "start-evolution", "choose-finalists", "register-models", "condition-5"}),
    ]:
        spec = _compiled(tmp_path, name, dataset="ml-1m", candidates_per_generation=3)
        assert expected <= set(_dag(spec))
        parameters = spec["root"]["inputDefinitions"]["parameters"]
        assert parameters["dataset"]["defaultValue"] == "ml-1m"
        if "candidates_per_generation" in parameters:
            assert parameters["candidates_per_generation"]["defaultValue"] == 3
            assert parameters["evolution"]["defaultValue"]["proposer"]["kind"] == "rulebook"
        assert "generations" not in parameters and "parallelism" not in parameters  # they shape the graph


def test_generations_fan_out_and_hand_the_state_on(tmp_path):
    spec = _compiled(tmp_path, "two_loop", generations=2, parallelism=3)
    tasks = _dag(spec)
    loops = [f"for-loop-{n}" for n in (1, 2, 3)]  # the seed's generation and two more
    assert [tasks[loop]["iteratorPolicy"]["parallelismLimit"] for loop in loops] == [3, 3, 3]
    assert _producer(tasks["for-loop-1"], "pipelinechannel--start-evolution-state") == ("start-evolution", "state")
    assert _producer(tasks["for-loop-2"], "pipelinechannel--record-generation-next_state") == (
        "record-generation",
        "next_state",
    )
    assert _producer(tasks["record-generation-2"], "state") == ("record-generation", "next_state")
    collected = tasks["record-generation-3"]["inputs"]["artifacts"]["outcomes"]["taskOutputArtifact"]
    assert collected["producerTask"] == "for-loop-3"
    assert tasks["record-generation-3"]["inputs"]["parameters"]["propose"]["runtimeValue"]["constant"] == 0
    # the finalists train side by side and all reach the registry
    assert tasks["register-models"]["inputs"]["artifacts"]["models"]["taskOutputArtifact"]["producerTask"] == (
        "for-loop-4"
    )
    # the experiment runs only when a new candidate was queued, and the gate waits on the version it tested
    condition = tasks["condition-5"]["triggerPolicy"]["condition"]
    assert "register-models-Output" in condition and "> 0" in condition
    gate = _dag(spec, "comp-condition-5")["approval-gate"]
    assert gate["inputs"]["parameters"]["version"]["taskOutputParameter"]["producerTask"] == "run-experiment"


def test_sampling_and_registry_tasks_are_never_cached_and_evaluations_retry(tmp_path):
    spec = _compiled(tmp_path, "two_loop")
    tasks = {**_dag(spec), **_dag(spec, "comp-for-loop-1"), **_dag(spec, "comp-condition-5")}
    for name in ("start-evolution", "record-generation", "choose-finalists", "register-models", "evaluate-candidate",
                 "run-experiment", "approval-gate"):  # fmt: skip
        assert not tasks[name]["cachingOptions"].get("enableCache"), name
    assert tasks["prepare-data"]["cachingOptions"]["enableCache"]
    assert tasks["evaluate-candidate"]["retryPolicy"]["maxRetryCount"] == 2


def test_components_run_the_project_image_without_installing_anything(tmp_path, monkeypatch):
    spec = _compiled(tmp_path, "two_loop")
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) >= 9
    for executor in executors.values():
        container = executor["container"]
        assert container["image"].startswith("ghcr.io/evorec/evorec:")
        assert "pip install" not in " ".join(container["command"])


def test_a_bad_pipeline_config_names_the_file_and_field(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("pipeline:\n  generations: 0\n  online: {users: 5}\n")
    with pytest.raises(ConfigError) as error:
        load_pipeline_config(path)
    message = str(error.value)
    assert str(path) in message and "generations" in message and "online.users" in message


@pytest.mark.integration
def test_a_failed_task_stops_the_local_run_naming_the_task_and_keeping_its_log(tmp_path):
    with pytest.raises(PipelineRunError) as error:
        run_local("online_experiment", PipelineConfig(dataset="no-such-dataset"), tmp_path / "root")
    message = str(error.value)
    assert "'prepare-data'" in message and "FAILURE" in message
    log = Path(message.rsplit("(log: ", 1)[1].rstrip(")"))
    assert "no-such-dataset" in log.read_text()


def _kfp_api(received: list[dict[str, Any]]) -> FastAPI:
    """The few Kubeflow Pipelines v2beta1 endpoints that kfp.Client uses to start a run."""
    api = FastAPI()

    @api.get("/apis/v2beta1/healthz")
    def healthz() -> dict[str, Any]:
        return {"multi_user": False}

    @api.get("/apis/v2beta1/experiments")
    def experiments() -> dict[str, Any]:
        return {"experiments": [{"experiment_id": "exp-1", "display_name": "evorec"}], "total_size": 1}

    @api.post("/apis/v2beta1/runs")
    async def runs(request: Request) -> dict[str, Any]:
        body = await request.json()
        received.append(body)
        return {"run_id": "run-1", "display_name": body["display_name"], "experiment_id": "exp-1"}

    return api


@pytest.mark.integration
def test_submit_sends_the_compiled_pipeline_and_its_parameters_to_the_cluster(tmp_path):
    received: list[dict[str, Any]] = []
    with LiveServer(_kfp_api(received), free_port()) as server:
        run = submit("two_loop", PipelineConfig(dataset="ml-1m"), server.url)
        with pytest.raises(
            PipelineRunError, match=r"cannot submit two_loop to Kubeflow Pipelines at http://127\.0\.0\.1:9"
        ):
            submit("two_loop", PipelineConfig(), "http://127.0.0.1:9")
    assert run == {"run_id": "run-1", "url": f"{server.url}/#/runs/details/run-1"}
    [body] = received
    assert body["experiment_id"] == "exp-1"
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "two-loop"
    assert body["runtime_config"]["parameters"]["dataset"] == "ml-1m"


def _finalist(folder: Path, role: str, key: str) -> tuple[Path, str]:
    folder.mkdir(parents=True)
    record = {"role": role, "key": key * 8, "content_hash": key * 8, "rationale": f"{role} rationale",
              "valid": {"ndcg@10": 0.1}, "test": {"ndcg@10": 0.09}}  # fmt: skip
    (folder / "training.json").write_text(json.dumps(record))
    return folder, f"gs://bucket/{role}"


def test_the_seed_becomes_the_first_production_model_and_the_best_is_queued(tmp_path):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    models = [_finalist(tmp_path / "best", "best", "b"), _finalist(tmp_path / "seed", "seed", "a")]
    queued = register_finalists(models, url, "default", "first-production")
    with Registry(url) as registry:
        production = registry.production()
        assert production is not None and production.candidate_id.startswith("seed-")
        assert production.artifact_uri == "gs://bucket/seed"
        assert registry.audit(production.id)[-1].actor == "policy:first-production"
        candidate = registry.get(queued)
        assert (candidate.state, candidate.artifact_uri) == ("queued", "gs://bucket/best")
        assert "best of the evolution run" in registry.audit(queued)[-1].reason


def test_without_a_first_production_policy_a_person_must_promote_first(tmp_path):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with pytest.raises(PipelineStepError, match="no first_production_policy"):
        register_finalists([_finalist(tmp_path / "seed", "seed", "a")], url, "default", None)


def test_the_approval_gate_prints_the_command_and_waits_for_a_person(tmp_path):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    models = [_finalist(tmp_path / "seed", "seed", "a"), _finalist(tmp_path / "best", "best", "b")]
    version = register_finalists(models, url, "default", "first-production")
    with Registry(url) as registry:
        for state in ("experimenting", "awaiting_approval"):
            registry.transition(version, state, actor="online-agent", reason="the experiment says ship")
    assert f"evorec promote approve {version}" in approval_gate(url, version, wait_seconds=0)

    def approve_soon() -> None:
        time.sleep(0.5)
        with Registry(url) as registry:
            registry.approve(version, actor="alice", reason="report read")

    person = threading.Thread(target=approve_soon)
    person.start()
    message = approval_gate(url, version, wait_seconds=30, poll_seconds=0.1)
    person.join()
    assert message == f"version {version} is production (alice: report read)"
    assert approval_gate(url, 0, wait_seconds=0).startswith("nothing to approve")


@pytest.mark.slow
@pytest.mark.integration
def test_the_two_loop_pipeline_runs_here_end_to_end(tmp_path, prepared_small, artifacts, monkeypatch):
    """Both loops as a real kfp.local run on 60 users: evolution with rungs and finals, finalists, registry,
    A/B, gate.

    Production already serves an MF-BPR model, so the best of the run (a SASRec variant) always
    goes into the experiment against it.
    """
    monkeypatch.chdir(tmp_path)
    registry_url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry(registry_url) as registry:
        production = registry.register(
            candidate_id="mf_bpr", content_hash="mf-bpr", artifact_uri=str(artifacts["mf_bpr"]), metrics={},
            actor="test", reason="the model in production before this run",
        )  # fmt: skip
        registry.bootstrap(production.id, "test")
    config = tmp_path / "pipeline.yaml"
    evaluation = {"smoke_users": 30, "smoke_seconds": 30, "train_seconds": 120, "overhead_seconds": 120,
                  "diagnosis_users": 32}  # fmt: skip
    rungs = {"epochs": [1, 2], "promote_fraction": 0.5, "finals": 2, "final_epochs": 3}
    config.write_text(yaml.safe_dump({"pipeline": {
        "dataset": str(prepared_small.path), "generations": 1, "candidates_per_generation": 2,
        "final_train_seconds": 120, "final_max_epochs": 3, "registry_url": registry_url,
        "evolution": {"iterations": 2, "evaluation": evaluation, "feedback": {"personas": 4}, "rungs": rungs},
        "online": {"users": 300, "days": 4, "pre_period_days": 2},
    }}))  # fmt: skip
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    [summary_path] = (tmp_path / "runs" / "pipelines").glob("two-loop-*/summary.json")
    summary = json.loads(summary_path.read_text())
    tasks = summary["tasks"]
    assert tasks["evaluate-candidate"]["runs"] == 1  # the seed once, not once per island
    assert 1 <= tasks["evaluate-candidate-2"]["runs"] <= 2  # the proposals of one generation, side by side
    assert tasks["final-training"]["runs"] == 1  # the best only: production exists
    assert all(times["failed"] == 0 for times in tasks.values())
    states = [ProgramDatabase(DatabaseConfig(url=f"sqlite:///{path}", islands=3))
              for path in Path(summary["folder"]).rglob("evolution.db")]  # fmt: skip
    [db] = [state for state in states if any(r.rung == 2 for r in state.rung_results())]  # the last generation's
    results = db.rung_results()
    folder = Path(str(db.engine.url.database)).parent / "checkpoints"
    for program in db.programs(status="evaluated"):  # each checkpoint came with its outcome, and went on from there
        judged = json.loads((folder / content_key(program.blocks) / "judged.json").read_text())
        reached = max(r.trained_epochs or 0 for r in results if r.content_hash == program.content_hash)
        assert len(judged["history"]) == reached
    assert {r.rung for r in results} == {0, 1, 2} and all(r.status == "evaluated" for r in results)
    assert [r.trained_epochs for r in results if r.rung == 1] == [2] * len([r for r in results if r.rung == 1])
    top = db.best_at_top_rung()
    assert top is not None and top[1].rung == 2  # the finals' best is what final training exports
    [verdict] = Path(summary["folder"]).glob("run-experiment/experiment/*/report-treatment.json")
    ship = json.loads(verdict.read_text())["ship"]
    with Registry(registry_url) as registry:
        candidate = registry.get(summary["version"])
        assert Path(candidate.artifact_uri, "model.pt2").exists()
        assert registry.production().id == production.id  # nothing is promoted without a person
    assert candidate.state == ("awaiting_approval" if ship else "rejected") == summary["state"]
    assert candidate.content_hash == top[0].content_hash
    assert Path(summary["report"]).read_text().startswith("<!doctype html>")
    assert (f"evorec promote approve {candidate.id}" in result.output) == ship
