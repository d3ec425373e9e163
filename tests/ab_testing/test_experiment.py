"""A simulated experiment end to end: two trained, exported models as arms, hashed assignment, logs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from ab_testing.analysis import analyse, planned_users_per_arm
from ab_testing.decision import MetricSpec
from ab_testing.experiment import (
    ArmPlan,
    ExperimentError,
    ExperimentPlan,
    ExperimentRun,
    assign,
    run_experiment,
    simulated_user_ids,
)
from ab_testing.report import write_report
from ab_testing.statistics import power_analysis
from recsys.event_log import EventLog
from serving.artifacts import load_artifact
from serving.batcher import top_k

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def models(artifacts):
    return {"control": load_artifact(str(artifacts["mf_bpr"])), "treatment": load_artifact(str(artifacts["sasrec_ce"]))}


PLAN = ExperimentPlan(
    name="exp-1", arms=(ArmPlan(name="control"), ArmPlan(name="treatment")), users=300, days=3, pre_period_days=1
)


def test_assignment_is_a_stable_salted_hash_with_the_planned_split():
    users = simulated_user_ids(4000)
    first = assign(PLAN, users)
    assert np.array_equal(first, assign(PLAN, users))
    assert 0.46 < first.mean() < 0.54
    resalted = assign(PLAN.model_copy(update={"salt": "other"}), users)
    assert 0.4 < (first == resalted).mean() < 0.6  # a new salt reshuffles users
    skewed = PLAN.model_copy(update={"arms": (ArmPlan(name="control", weight=3), ArmPlan(name="treatment"))})
    assert 0.2 < assign(skewed, users).mean() < 0.3


def test_the_sample_size_splits_alpha_over_the_north_stars_the_rule_tests():
    active_days = np.random.default_rng(0).normal(7.0, 2.4, 5000)
    three = ExperimentPlan(name="p", arms=(ArmPlan(name="a"), ArmPlan(name="b")), days=14)  # d7, active days, sat.
    one = three.model_copy(update={"metrics": (MetricSpec(name="active_days", kind="north_star", test="cuped"),)})
    single = power_analysis(float(active_days.mean()), float(active_days.std()), 0.02, 0.05, 0.8)
    assert planned_users_per_arm(one, active_days) == single
    assert planned_users_per_arm(three, active_days) == power_analysis(
        float(active_days.mean()), float(active_days.std()), 0.02, 0.05 / 3, 0.8
    )
    assert planned_users_per_arm(three, active_days) > 1.3 * single


def test_a_run_writes_the_plan_the_events_and_per_user_metrics(prepared_small, models, tmp_path):
    run = run_experiment(PLAN, prepared_small, models, tmp_path / "exp-1")
    frame = pd.read_parquet(tmp_path / "exp-1" / "users.parquet")
    assert len(frame) == 300 and set(frame["arm"]) == {"control", "treatment"}
    assert {"retained_d7", "active_days", "mean_satisfaction", "clicks", "diversity", "pre_active_days"} <= set(frame)
    assert ExperimentPlan.model_validate_json((tmp_path / "exp-1" / "plan.json").read_text()) == PLAN
    events = EventLog.read(tmp_path / "exp-1" / "events.parquet")
    assert set(events["day"]) == set(range(-1, 3)) and set(events["arm"]) == {"control", "treatment"}
    visited = frame["active_days"] > 0
    assert frame.loc[visited, "diversity"].between(0, 1).all() and frame.loc[~visited, "diversity"].isna().all()
    for guardrails in run.guardrails.values():
        assert 0 < guardrails["coverage"] <= 1 and 0 < guardrails["p50_latency_ms"] <= guardrails["p99_latency_ms"]


def test_the_analysis_tests_every_registered_metric_and_explains_its_verdict(prepared_small, models, tmp_path):
    plan = PLAN.model_copy(update={"users": 1000, "days": 8})
    run = run_experiment(plan, prepared_small, models, tmp_path / "exp-2")
    [analysis] = analyse(run)
    assert (analysis.control, analysis.treatment) == ("control", "treatment")
    assert {"retained_d7", "active_days", "satisfaction", "ctr", "consumption", "diversity"} == set(
        analysis.comparisons
    )
    assert "retained_d14" not in analysis.comparisons  # the run is shorter than 14 days
    assert analysis.comparisons["active_days"].variance_reduction is not None
    assert not analysis.srm.mismatch
    report = analysis.to_json()
    assert report["ship"] == analysis.ship and report["reasons"][0].startswith(("Ship", "Do not ship"))
    assert {g["name"] for g in report["arm_guardrails"]} == {"coverage", "p99_latency_ms"}


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ([{"name": "revenue", "kind": "north_star"}], "metric 'revenue' is not measured"),
        ([{"name": "retained_d7", "kind": "north_star"}], "retained_d7 needs an experiment longer than its day"),
        ([{"name": "consumption", "kind": "north_star", "test": "cuped"}], "no pre-period covariate for CUPED"),
        ([{"name": "active_days", "kind": "north_star", "test": "ratio"}], "the ratio test is for ctr"),
        ([{"name": "ctr", "kind": "proxy", "test": "ratio"}], "at least one north_star"),
    ],
)
def test_a_plan_declares_only_metrics_the_run_can_measure(metrics, message):
    with pytest.raises(ValidationError, match=message):
        ExperimentPlan.model_validate({**PLAN.model_dump(), "metrics": metrics})


def test_the_analysis_uses_the_metrics_the_plan_registered(prepared_small, models, tmp_path):
    metrics = (
        MetricSpec(name="active_days", kind="north_star", test="cuped"),
        MetricSpec(name="diversity", kind="guardrail", non_inferiority_margin=0.5),
    )
    plan = PLAN.model_copy(update={"name": "declared", "metrics": metrics})
    run = run_experiment(plan, prepared_small, models, tmp_path / "declared")
    assert ExperimentPlan.model_validate_json((tmp_path / "declared" / "plan.json").read_text()).metrics == metrics
    [analysis] = analyse(run)
    assert set(analysis.comparisons) == {"active_days", "diversity"}
    assert tuple(analysis.specs) == metrics  # the registered 50% diversity margin, not the default 2%


@pytest.mark.slow
def test_experiment_run_list_and_report_from_the_command_line(prepared_small, artifacts, tmp_path):
    import subprocess
    import sys

    from serving.registry import Registry

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry(url) as registry:
        ids = []
        for seed in ("mf_bpr", "sasrec_ce"):
            version = registry.register(candidate_id=seed, content_hash=seed, artifact_uri=str(artifacts[seed]),
                                        metrics={}, actor="test", reason="trained")  # fmt: skip
            ids.append(version.id)
        for state in ("queued", "experimenting", "awaiting_approval"):
            registry.transition(ids[0], state, actor="test", reason="bootstrap")
        registry.approve(ids[0], actor="reviewer", reason="bootstrap production")
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"experiment:\n  name: cli-1\n  dataset: {prepared_small.path}\n  users: 300\n  days: 3\n"
        f"  pre_period_days: 1\n  arms:\n    - {{name: control}}\n    - {{name: treatment, version: {ids[1]}}}\n"
    )
    runs = tmp_path / "runs"

    def evorec(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "evorec", *args], capture_output=True, text=True, timeout=600)

    ran = evorec("experiment", "run", "--config", str(plan), "--registry", url, "--runs", str(runs))
    assert ran.returncode == 0, ran.stderr[-2000:]
    page = (runs / "cli-1" / "report-treatment.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "Health checks" in page
    markdown = (runs / "cli-1" / "report-treatment.md").read_text()
    assert "sample ratio" in markdown and "| active_days | north_star |" in markdown
    listed = evorec("experiment", "list", "--runs", str(runs))
    assert listed.returncode == 0 and "cli-1" in listed.stdout
    (runs / "cli-1" / "report-treatment.md").unlink()  # `evorec experiment report` rewrites it the same way
    run = ExperimentRun.load(runs / "cli-1")
    [analysis] = analyse(run)
    assert write_report(run, analysis)["md"].read_text() == markdown
    with pytest.raises(ExperimentError, match="not a finished experiment run"):
        ExperimentRun.load(tmp_path)


def test_the_report_states_the_simulator_fidelity_with_its_verdict(prepared_small, models, tmp_path):
    from ab_testing.fidelity import SimulatorFidelity
    from ab_testing.report import report_markdown
    from recsys.reports import split_verdict

    below = SimulatorFidelity(dataset=prepared_small.name, source="quick check", policies=4,
                              spearman={"active_days": 0.4, "satisfaction": 0.8})  # fmt: skip
    run = run_experiment(PLAN, prepared_small, models, tmp_path / "exp-gate", fidelity=below)
    assert ExperimentRun.load(tmp_path / "exp-gate").fidelity == below
    [analysis] = analyse(run)
    verdict, _ = split_verdict(report_markdown(run, analysis))
    assert "Warning: this verdict rests on a simulator below the fidelity bar" in verdict
    assert "Spearman ρ of active_days 0.40 < 0.8" in verdict
    paths = write_report(run, analysis)
    assert json.loads(paths["json"].read_text())["simulator_fidelity"]["passed"] is False


def test_a_served_arm_scores_a_user_again_only_when_their_history_grew(prepared_small, models):
    from ab_testing.experiment import ServedPolicy
    from recsys.evaluation import ItemCatalog
    from recsys.sequences import UserSequences

    sequences = UserSequences.from_prepared(prepared_small)
    users = np.arange(20)
    policy = ServedPolicy(models["treatment"], users, ItemCatalog.build(prepared_small, sequences), 10)
    histories = [sequences.history(int(user), "test") for user in users]
    first = policy(users, histories)
    assert len(policy.latencies_ms) == 20
    again = policy(users[:10], histories[:10])  # nothing new consumed: the same slates, no scoring
    np.testing.assert_array_equal(again, first[:10])
    assert len(policy.latencies_ms) == 20
    grown = [np.append(histories[0], first[0, 0]), *histories[1:10]]
    after = policy(users[:10], grown)
    assert len(policy.latencies_ms) == 21 and first[0, 0] not in after[0]
    np.testing.assert_array_equal(after[0], top_k(models["treatment"], users[:1], grown[:1], 10).indices[0].numpy())
    np.testing.assert_array_equal(after[1:], first[1:10])


@pytest.mark.parametrize("workers", [1, 2])  # 2: batches of a day scored on two threads side by side
def test_cached_and_incremental_slates_are_the_slates_of_scoring_every_user_every_day(
    prepared_small, models, truth, sequences, workers, monkeypatch
):
    import threading

    from ab_testing.experiment import ServedPolicy
    from ab_testing.population import Population, PopulationConfig, simulate
    from recsys.evaluation import ItemCatalog

    config = PopulationConfig(users=300, days=4, pre_period_days=2, seed=3)
    catalog = ItemCatalog.build(prepared_small, sequences)
    assignment = assign(PLAN, simulated_user_ids(config.users))

    def served_days(make_policy):
        """Every call of every arm's policy over the pre-period and the experiment: (users, slates)."""
        population = Population.sample(truth, sequences, config)
        calls: list[tuple[np.ndarray, np.ndarray]] = []

        def recorded(policy):
            def serve(users, histories):
                slates = np.asarray(policy(users, histories))
                calls.append((users.copy(), slates))
                return slates

            return serve

        simulate(population, {name: recorded(make_policy(model, population)) for name, model in models.items()},
                 assignment)  # fmt: skip
        return calls

    cached: list[ServedPolicy] = []
    scoring_threads: dict[int, set[str]] = {}  # policy -> the threads its batches ran on, over all days
    score_chunk = ServedPolicy._score_chunk

    def recorded_chunk(self, *args):
        scoring_threads.setdefault(id(self), set()).add(threading.current_thread().name)
        score_chunk(self, *args)

    monkeypatch.setattr(ServedPolicy, "_score_chunk", recorded_chunk)
    monkeypatch.setattr("ab_testing.experiment.SCORING_CHUNK", 16)  # a day's few hundred users: several batches

    def cached_policy(model, population):
        cached.append(ServedPolicy(model, population.source_user, catalog, config.slate_size, workers))
        return cached[-1]

    def every_user(model, population):
        return lambda users, histories: top_k(model, population.source_user[users], histories, 10).indices.numpy()

    threads = torch.get_num_threads()
    fast, reference = served_days(cached_policy), served_days(every_user)
    assert torch.get_num_threads() == threads  # the workers' one-thread setting is undone
    assert len(fast) == len(reference) == config.pre_period_days + 2 * config.days  # pre-period: the control only
    for (users, slates), (users_again, slates_again) in zip(fast, reference, strict=True):
        np.testing.assert_array_equal(users, users_again)
        np.testing.assert_array_equal(slates, slates_again)
    visits = sum(len(users) for users, _ in fast)
    scored = sum(len(policy.latencies_ms) for policy in cached)
    assert 0 < scored < visits  # the cache served the users whose history had not grown
    [sasrec_policy] = [policy for policy in cached if policy.incremental is not None]  # mf_bpr: its program
    sasrec = sasrec_policy.incremental
    assert sasrec is not None
    assert sasrec.steps > 0  # histories grown by one item were scored from the transformer's cache
    side_by_side = scoring_threads[id(sasrec_policy)] - {threading.main_thread().name}
    assert len(side_by_side) == (workers if workers > 1 else 0)  # the same threads (and workspaces) every day
