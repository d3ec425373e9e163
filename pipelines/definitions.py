"""The Kubeflow pipelines: ``offline_evolution``, ``online_experiment`` and ``two_loop`` (both loops:
the main job).

Two settings shape the graph and are fixed when a pipeline is built: the number of generations
(each is a ``ParallelFor`` fan-out of candidate evaluations, then a task that stores them and
proposes the next) and how many evaluations run at once. Everything else is a runtime
parameter. Tasks that sample a language model (proposals, critiques) or touch the registry are
never cached.
"""

from typing import Any

from kfp import dsl
from kfp.dsl import PipelineTask
from kfp.dsl.graph_component import GraphComponent
from kfp.dsl.pipeline_channel import PipelineChannel

from pipelines import PIPELINE_NAMES
from pipelines import components as c


def _evolve(dataset: PipelineChannel, evolution: Any, width: Any, generations: int, parallelism: int) -> Any:
    """Seed, then evaluate and store ``generations`` + 1 generations; returns the final state."""
    seeded = c.start_evolution(prepared=dataset, evolution=evolution).set_caching_options(False)
    state, keys = seeded.outputs["state"], seeded.outputs["Output"]
    for generation in range(generations + 1):
        with dsl.ParallelFor(keys, parallelism=parallelism) as key:
            evaluated = c.evaluate_candidate(prepared=dataset, state=state, evolution=evolution, key=key)
            evaluated.set_caching_options(False).set_retry(2).set_display_name(f"evaluate generation {generation}")
        last = generation == generations
        stored = c.record_generation(
            prepared=dataset, state=state, outcomes=dsl.Collected(evaluated.outputs["outcome"]), evolution=evolution,
            propose=0 if last else width,
        ).set_caching_options(False)  # fmt: skip
        stored.set_display_name("store the evolution" if last else f"store generation {generation}, propose more")
        state, keys = stored.outputs["next_state"], stored.outputs["Output"]
    return state


def _finalise(
    dataset: PipelineChannel, state: Any, evolution: Any, final_train_seconds: Any, final_max_epochs: Any,
    registry_url: Any, model_name: Any, first_production_policy: Any,
) -> PipelineTask:  # fmt: skip
    """Train the finalists side by side and register them; the task's output is the queued version."""
    chosen = c.choose_finalists(
        prepared=dataset, state=state, evolution=evolution, registry_url=registry_url, model_name=model_name
    ).set_caching_options(False)
    with dsl.ParallelFor(chosen.output, parallelism=2) as role:
        trained = c.final_training(
            prepared=dataset,
            state=state,
            evolution=evolution,
            role=role,
            train_seconds=final_train_seconds,
            max_epochs=final_max_epochs,
        ).set_display_name("final training")
    registered: PipelineTask = c.register_models(
        models=dsl.Collected(trained.outputs["model"]), registry_url=registry_url, model_name=model_name,
        first_production_policy=first_production_policy,
    ).set_caching_options(False)  # fmt: skip
    return registered


def _experiment(dataset: PipelineChannel, online: Any, registry_url: Any, version: Any, wait: Any) -> None:
    """The A/B experiment of ``version`` and the approval gate after it."""
    run = c.run_experiment(prepared=dataset, online=online, registry_url=registry_url, version=version)
    run.set_caching_options(False).set_display_name("simulated A/B experiment")
    gate = c.approval_gate(registry_url=registry_url, version=run.outputs["Output"], wait_seconds=wait)
    gate.set_caching_options(False).set_display_name("approval gate")


def build(name: str, generations: int = 2, parallelism: int = 2) -> GraphComponent:
    """The pipeline ``name`` (one of PIPELINE_NAMES) for ``generations`` rounds, ``parallelism`` evaluations at once."""
    if name == "offline_evolution":

        @dsl.pipeline(name="offline-evolution", description="The offline loop: evolve, train the finalists, queue.")
        def offline_evolution(
            dataset: str, evolution: dict[str, Any], candidates_per_generation: int, final_train_seconds: float,
            final_max_epochs: int, model_name: str, first_production_policy: str, registry_url: str,
        ) -> None:  # fmt: skip
            prepared = c.prepare_data(dataset=dataset).outputs["prepared"]
            state = _evolve(prepared, evolution, candidates_per_generation, generations, parallelism)
            _finalise(prepared, state, evolution, final_train_seconds, final_max_epochs, registry_url, model_name,
                      first_production_policy)  # fmt: skip

        return offline_evolution
    if name == "online_experiment":

        @dsl.pipeline(name="online-experiment", description="The online loop: a queued version against production.")
        def online_experiment(
            dataset: str, online: dict[str, Any], registry_url: str, version: int, approval_wait_seconds: float
        ) -> None:
            prepared = c.prepare_data(dataset=dataset).outputs["prepared"]
            _experiment(prepared, online, registry_url, version, approval_wait_seconds)

        return online_experiment
    if name == "two_loop":

        @dsl.pipeline(name="two-loop", description="Both loops: evolve offline, then the best into an A/B test.")
        def two_loop(
            dataset: str, evolution: dict[str, Any], candidates_per_generation: int, final_train_seconds: float,
            final_max_epochs: int, model_name: str, first_production_policy: str, registry_url: str,
            online: dict[str, Any], approval_wait_seconds: float,
        ) -> None:  # fmt: skip
            prepared = c.prepare_data(dataset=dataset).outputs["prepared"]
            state = _evolve(prepared, evolution, candidates_per_generation, generations, parallelism)
            registered = _finalise(prepared, state, evolution, final_train_seconds, final_max_epochs, registry_url,
                                   model_name, first_production_policy)  # fmt: skip
            with dsl.If(registered.output > 0, name="a new candidate is queued"):
                _experiment(prepared, online, registry_url, registered.output, approval_wait_seconds)

        return two_loop
    raise ValueError(f"unknown pipeline {name!r}; the pipelines are {', '.join(PIPELINE_NAMES)}")
