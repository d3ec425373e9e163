"""Reference A/B logs: the simulator run with reference policies as arms (random, popularity, the
oracle that knows the users' taste), so that a reward's alignment can be measured and tuned on a
dataset before any candidate was exported. The log is written in ``recsys.event_log``'s schema.
"""

from __future__ import annotations

from pathlib import Path

from ab_testing.experiment import ExperimentError, ExperimentPlan, assign, simulated_user_ids
from ab_testing.ground_truth import FitSettings, GroundTruth
from ab_testing.population import Population, oracle_policy, popularity_policy, random_policy, simulate
from recsys.data.prepared import PreparedDataset
from recsys.event_log import EventLog
from recsys.sequences import UserSequences

REFERENCE_POLICIES = ("random", "popularity", "oracle")


def simulate_reference_log(
    plan: ExperimentPlan, prepared: PreparedDataset, folder: Path, ground_truth: GroundTruth | None = None
) -> Path:
    """Run ``plan`` with reference policies as arms (names among ``REFERENCE_POLICIES``) and write
    ``plan.json`` and ``events.parquet`` to ``folder`` (returned); users are assigned by the plan's salted hash."""
    unknown = [arm.name for arm in plan.arms if arm.name not in REFERENCE_POLICIES]
    if unknown:
        raise ExperimentError(f"arm(s) {', '.join(unknown)}: a reference log's arms are among {REFERENCE_POLICIES}")
    truth = ground_truth or GroundTruth.fit(prepared, FitSettings(seed=plan.seed))
    population = Population.sample(truth, UserSequences.from_prepared(prepared), plan.population_config())
    slate = population.config.slate_size
    policies = {
        "random": lambda: random_policy(truth.num_items, slate, plan.seed),
        "popularity": lambda: popularity_policy(truth, slate),
        "oracle": lambda: oracle_policy(truth, population),
    }
    arms = {arm.name: policies[arm.name]() for arm in plan.arms}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.json").write_text(plan.model_dump_json(indent=2) + "\n")
    assignment = assign(plan, simulated_user_ids(population.num_users))
    with EventLog(list(arms), folder / "events.parquet") as log:
        simulate(population, arms, assignment, log=log)
    return folder
