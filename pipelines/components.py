"""Kubeflow Pipelines components of both loops: thin, typed wrappers over ``pipelines.steps``.

Each component imports the library inside its body (KFP ships only the function's source to the
task) and runs in the project's image; locally, kfp.local's SubprocessRunner runs it with this
interpreter (``install_kfp_package=False``: the image already has kfp, and a local run has no
network to install it). Configuration travels as plain dicts and is validated again by the step's
pydantic model, so a bad value fails the task with a message naming the field. (No
``from __future__ import annotations`` here: KFP reads the real annotation objects.)
"""

import os
from typing import Any

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

IMAGE = os.environ.get("EVOREC_IMAGE", "ghcr.io/evorec/evorec:0.1.0")
component = dsl.component(base_image=IMAGE, install_kfp_package=False)


@component
def prepare_data(dataset: str, prepared: Output[Dataset]) -> None:
    """Validate, filter and split the dataset (Beam), reusing an up-to-date preparation."""
    from pathlib import Path

    from pipelines.steps import prepare
    from recsys.logs import configure_logging

    configure_logging()  # a task's log is all a person sees of it
    prepared.metadata.update(prepare(dataset, Path(prepared.path)))


@component
def start_evolution(prepared: Input[Dataset], evolution: dict[str, Any], state: Output[Artifact]) -> list[str]:
    """A new evolution state seeded with the seed candidate; returns the keys to evaluate."""
    from pathlib import Path

    from offline_agent.evolve import EvolutionConfig
    from pipelines.steps import start_evolution as start
    from recsys.logs import configure_logging

    configure_logging()  # a task's log is all a person sees of it
    return start(EvolutionConfig.model_validate(evolution), Path(prepared.path), Path(state.path))


@component
def evaluate_candidate(
    prepared: Input[Dataset], state: Input[Artifact], evolution: dict[str, Any], key: str, outcome: Output[Artifact]
) -> str:
    """One candidate through the sandboxed evaluation cascade; its outcome, failed or not."""
    from pathlib import Path

    from offline_agent.evolve import EvolutionConfig
    from pipelines.steps import evaluate_program
    from recsys.logs import configure_logging

    configure_logging()  # a task's log is all a person sees of it
    config = EvolutionConfig.model_validate(evolution)
    return evaluate_program(config, Path(prepared.path), Path(state.path), key, Path(outcome.path))


@component
def record_generation(
    prepared: Input[Dataset],
    state: Input[Artifact],
    outcomes: Input[list[Artifact]],
    evolution: dict[str, Any],
    propose: int,
    next_state: Output[Artifact],
    report: Output[Markdown],
) -> list[str]:
    """Store a generation's outcomes and propose the next one; returns the new keys."""
    import shutil
    from pathlib import Path

    from offline_agent.evolve import EvolutionConfig
    from pipelines.steps import record_generation as record
    from recsys.logs import configure_logging

    configure_logging()  # a task's log is all a person sees of it
    config = EvolutionConfig.model_validate(evolution)
    folders = [Path(o.path) for o in outcomes]
    keys = record(config, Path(prepared.path), Path(state.path), folders, Path(next_state.path), propose)
    shutil.copyfile(Path(next_state.path) / "report.md", report.path)
    return keys


@component
def choose_finalists(
    prepared: Input[Dataset], state: Input[Artifact], evolution: dict[str, Any], registry_url: str, model_name: str
) -> list[str]:
    """The programs to train in full: the best, and the seed when nothing is in production yet."""
    from pathlib import Path

    from offline_agent.evolve import EvolutionConfig
    from pipelines.steps import finalists
    from recsys.logs import configure_logging

    configure_logging()  # a task's log is all a person sees of it
    config = EvolutionConfig.model_validate(evolution)
    return finalists(config, Path(prepared.path), Path(state.path), registry_url, model_name)


@component
def final_training(
    prepared: Input[Dataset],
    state: Input[Artifact],
    evolution: dict[str, Any],
    role: str,
    train_seconds: float,
    max_epochs: int,
    model: Output[Model],
    metrics: Output[Metrics],
) -> None:
    """Train a finalist with the full budget (``max_epochs`` 0: its plan's) and export it for serving."""
    from pathlib import Path

    from offline_agent.evolve import EvolutionConfig
    from pipelines.steps import final_training as train
    from recsys.logs import configure_logging

    configure_logging()  # a task's log is all a person sees of it
    config = EvolutionConfig.model_validate(evolution)
    figures = train(config, Path(prepared.path), Path(state.path), role, train_seconds, Path(model.path), max_epochs)
    model.metadata["role"] = role
    for name, value in figures.items():
        metrics.log_metric(name.replace("@", "_at_"), value)


@component
def register_models(
    models: Input[list[Model]], registry_url: str, model_name: str, first_production_policy: str
) -> int:
    """Write the finalists to the registry; returns the version queued for an experiment (0: none)."""
    from pathlib import Path

    from pipelines.steps import register_finalists
    from recsys.logs import configure_logging

    configure_logging()  # a task's log is all a person sees of it
    policy = first_production_policy or None
    return register_finalists([(Path(m.path), m.uri) for m in models], registry_url, model_name, policy)


@component
def run_experiment(
    prepared: Input[Dataset],
    online: dict[str, Any],
    registry_url: str,
    version: int,
    experiment: Output[Artifact],
    report: Output[HTML],
    summary: Output[Markdown],
) -> int:
    """The simulated A/B experiment of a queued version (0: the oldest queued) against production;
    returns the version it tested (0: none was queued)."""
    import shutil
    from pathlib import Path

    from online_agent.agent import OnlineAgentConfig
    from pipelines.steps import experiment as run
    from recsys.logs import configure_logging

    configure_logging()  # a task's log is all a person sees of it
    config = OnlineAgentConfig.model_validate(online)
    result = run(config, Path(prepared.path), registry_url, version, Path(experiment.path))
    if result.report is not None:
        shutil.copyfile(result.report, report.path)
        shutil.copyfile(result.report.with_suffix(".md"), summary.path)
    else:
        Path(report.path).write_text(f"<!doctype html><title>No experiment</title><p>{result.reason}</p>\n")
        Path(summary.path).write_text(result.reason + "\n")
    experiment.metadata.update({"version": result.version, "state": result.state, "reason": result.reason})
    return result.version


@component
def approval_gate(registry_url: str, version: int, wait_seconds: float) -> str:
    """Where the candidate stands for a person: awaiting approval (with the command), or decided."""
    from pipelines.steps import approval_gate as gate
    from recsys.logs import configure_logging

    configure_logging()  # a task's log is all a person sees of it
    message = gate(registry_url, version, wait_seconds)
    print(message)
    return message
