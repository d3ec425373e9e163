"""Does directional feedback earn its keep under the search evorec runs? Three arms, equal CPU time, several seeds.

Every arm starts from ``sasrec_bce`` and spends the same CPU-seconds (``--cpu-budget``: seconds × threads of
every rung evaluation, in the CPU-seconds of the processor the ablation began on: :mod:`benchmarks.processor_speed`)
per seed, on the same rungs (``--rungs`` epochs, successive halving):

- ``directional``: evorec as it ships (the rulebook with its catalogue, multi-fidelity rungs, tune children and
  the bandit between edit kinds), its proposer reading the diagnosis probes and the simulated users' critiques;
- ``scalar_only``: the same scheduler, tuning and catalogue with the diagnosis and critiques hidden from the
  proposer (they are still measured, so its edits are checked against the same signals);
- ``optuna``: Optuna's TPE over the seed's declared numbers with Hyperband pruning on the same rungs
  (``random``, the same with random sampling, on request).

A run's result is its best at the highest rung it reached (by validation NDCG@10; the test NDCG@10 measured
with it is reported, never used to select). Per arm: the mean, spread and per-seed figures; for the evorec
arms the **feedback precision** (of the edits that answered a flagged problem, the share whose child showed
the problem less: :mod:`offline_agent.feedback_checks`), per rule too, and the probes the loop added with
their verdicts. Per pair of arms: the per-seed paired differences of test NDCG@10 (the runs of a seed start
from the same candidate with the same seed), their mean with a 95% t confidence interval and the paired
t-test (scipy).

Resumable: each run lives under ``benchmarks/state/feedback_ablation_rungs_<dataset>/<arm>_seed<k>/`` (its
evolution database or Optuna study: committed; checkpoints: this machine only). Runs advance one step (one
evaluation: evorec's promotion due or new child, Optuna's rung) at a time, the run that has spent the least CPU
first, ``--parallel`` steps in flight (when one ends the next starts, so a long step leaves no core idle); an
invocation stops starting steps after ``--budget-seconds`` and the next goes on.

    python benchmarks/feedback_ablation.py --dataset ml-1m --cpu-budget 3600 --rungs 1,3,9 --budget-seconds 7200
    python benchmarks/feedback_ablation.py --dataset ml-latest-small --cpu-budget 120 --rungs 1,2 --seeds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.arms import Arm, TopRung
from benchmarks.common import RESULTS, write_result
from benchmarks.invocations import InvocationLog
from benchmarks.processor_speed import SPEEDS, CpuMeter, ProcessorSpeeds, UnmeasuredProcessor, first_step_here

ROOT = Path(__file__).resolve().parent
ARMS = ("directional", "scalar_only", "optuna")
EVOREC_ARMS = ("directional", "scalar_only")
PAIRS = (("directional", "scalar_only"), ("directional", "optuna"), ("scalar_only", "optuna"))
CONFIDENCE = 0.95


@dataclass
class Run:
    """One arm on one seed, its CPU time counted in the reference processor's CPU-seconds."""

    arm: str
    seed: int
    meter: CpuMeter[Arm]
    budget: float

    @property
    def searcher(self) -> Arm:
        return self.meter.arm

    @property
    def done(self) -> bool:
        return self.meter.spent() >= self.budget


def build_arm(name: str, seed: int, folder: Path, prepared: Path, evaluation: Any, rungs: Any, personas: int) -> Arm:
    """The searcher of arm ``name`` for one seed, resuming from ``folder``."""
    import optuna

    from benchmarks.evolve import SEED
    from benchmarks.hpo_arm import HyperbandArm
    from benchmarks.race_evorec import EvorecArm
    from offline_agent.evolve import FeedbackConfig
    from recsys.candidate import load_candidate

    evaluation = evaluation.model_copy(update={"seed": seed, "checkpoint_dir": str(folder / "checkpoints")})
    if name in EVOREC_ARMS:
        feedback = FeedbackConfig(mode="directional" if name == "directional" else "scalar", personas=personas)
        return EvorecArm(SEED, prepared, evaluation, rungs, folder, seed, feedback)
    samplers = {"optuna": optuna.samplers.TPESampler(seed=seed), "random": optuna.samplers.RandomSampler(seed)}
    return HyperbandArm(name, samplers[name], dict(load_candidate(SEED).sources), evaluation, rungs, folder)


def ablation_runs(
    arms: Sequence[str],
    seeds: int,
    state: Path,
    prepared: Path,
    evaluation: Any,
    rungs: Any,
    personas: int,
    budget: float,
    reference_cpu: dict[str, Any] | None,
) -> tuple[list[Run], ProcessorSpeeds]:
    """Every arm on every seed, resuming from ``state``, and the processor speeds their steps are charged at:
    measured on the seed's first evaluation by the first evorec arm, with seed 0, against what it cost that
    arm's runs of seed 0 on ``reference_cpu`` (the processor the ablation's first invocation ran on)."""
    from benchmarks.race_evorec import EvorecArm

    searchers = {(arm, seed): build_arm(arm, seed, state / f"{arm}_seed{seed}", prepared, evaluation, rungs, personas)
                 for seed in range(seeds) for arm in arms}  # fmt: skip
    measured = next((arm for arm in arms if arm in EVOREC_ARMS), None)

    def reference_seconds() -> float | None:
        found = [s.first_evaluation_seconds() for (arm, seed), s in searchers.items()
                 if arm == measured and seed == 0 and isinstance(s, EvorecArm)]  # fmt: skip
        return found[0] if found else None

    def measure() -> float:
        assert measured is not None  # reference_seconds() found its run's evaluation
        arm = measured
        return first_step_here(lambda folder: build_arm(arm, 0, folder, prepared, evaluation, rungs, personas), state)

    speeds = ProcessorSpeeds(state / SPEEDS, reference_cpu, reference_seconds, measure)
    runs = [Run(arm, seed, CpuMeter(searcher, state / f"{arm}_seed{seed}", speeds), budget)
            for (arm, seed), searcher in searchers.items()]  # fmt: skip
    return runs, speeds


def advance(runs: Sequence[Run], parallel: int, deadline: float) -> bool:
    """Step the runs, least CPU spent first, ``parallel`` steps in flight (a long step holds back no other run's),
    until every one spent its budget (True) or ``deadline`` (monotonic) passed and the steps in flight ended (False).
    """
    running: dict[Future[None], Run] = {}
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        while True:
            if time.monotonic() < deadline:
                idle = [run for run in runs if not run.done and run not in running.values()]
                for run in sorted(idle, key=lambda run: run.meter.spent())[: parallel - len(running)]:
                    running[pool.submit(run.meter.step)] = run
            if not running:
                return all(run.done for run in runs)
            ended, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in ended:
                run = running.pop(future)
                future.result()  # a failing step stops the benchmark with its traceback
                print(f"{run.arm} seed {run.seed}: {run.searcher.evaluations()} evaluations, "
                      f"{run.meter.spent():.0f} of {run.budget:.0f} CPU-s", flush=True)  # fmt: skip


def feedback_figures(searchers: Sequence[Arm]) -> dict[str, Any]:
    """The evorec runs' feedback precision (over all of them, per seed, per rule or proposer) and their added
    probes' verdicts; nothing for searchers without feedback."""
    from benchmarks.race_evorec import EvorecArm
    from offline_agent.feedback_checks import overall, precision_by
    from offline_agent.probe_review import review_probes

    runs = [s.evolution.db.programs() for s in searchers if isinstance(s, EvorecArm)]
    if not runs:
        return {}
    return {
        "feedback_precision": {
            **overall(p for programs in runs for p in programs).to_json(),
            "per_seed": [overall(programs).to_json() for programs in runs],
        },
        "feedback_precision_by_rule": [
            {name: found.to_json() for name, found in precision_by(programs).items()} for programs in runs
        ],
        "probes": [[verdict.to_json() for verdict in review_probes(programs)] for programs in runs],
    }


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.mean(values), 4) if values else None


def arm_figures(runs: Sequence[Run], bests: Sequence[TopRung | None]) -> dict[str, Any]:
    """One arm over its seeds: the best at the top rung of each run (``bests``, in the order of ``runs``) and
    their means."""
    shown = [best.to_json() if best else None for best in bests]
    found = [figures for figures in shown if figures is not None]
    test = [figures["test_ndcg10"] for figures in found]
    return {
        "runs": len(found),
        "mean_test_ndcg10": _mean(test),
        "std_test_ndcg10": round(statistics.stdev(test), 4) if len(test) > 1 else None,
        "mean_valid_ndcg10": _mean([figures["valid_ndcg10"] for figures in found]),
        "per_seed_test_ndcg10": [figures["test_ndcg10"] if figures else None for figures in shown],
        "per_seed": shown,
        "evaluations": [run.searcher.evaluations() for run in runs],
        "cpu_seconds": [round(run.meter.spent(), 1) for run in runs],  # the reference processor's
        "raw_cpu_seconds": [round(run.searcher.cpu_seconds(), 1) for run in runs],  # as measured, wherever
        **feedback_figures([run.searcher for run in runs]),
    }


def paired(first: Sequence[TopRung | None], second: Sequence[TopRung | None]) -> dict[str, Any]:
    """``first`` minus ``second`` seed by seed (test NDCG@10), the mean difference with its 95% t interval,
    the wins and the paired t-test, over the seeds where both arms have a result."""
    pairs = [(a.to_json()["test_ndcg10"], b.to_json()["test_ndcg10"]) for a, b in zip(first, second, strict=True)
             if a is not None and b is not None]  # fmt: skip
    differences = [a - b for a, b in pairs]
    figures: dict[str, Any] = {"test_ndcg10_differences": [round(d, 4) for d in differences]}
    if not differences:
        return figures
    figures.update(mean_difference=round(statistics.mean(differences), 4), wins=sum(d > 0 for d in differences))
    if len(differences) > 1 and statistics.stdev(differences) > 0:
        spread = stats.sem(differences)
        low, high = stats.t.interval(CONFIDENCE, len(differences) - 1, loc=statistics.mean(differences), scale=spread)
        figures["ci95"] = [round(float(low), 4), round(float(high), 4)]
        figures["paired_t_p_value"] = round(float(stats.ttest_rel(*zip(*pairs, strict=True)).pvalue), 4)
    return figures


def summarise(runs: Sequence[Run], arms: Sequence[str], seeds: int) -> dict[str, Any]:
    by_arm = {arm: [run for run in runs if run.arm == arm] for arm in arms}
    bests = {arm: [run.searcher.best() for run in found] for arm, found in by_arm.items()}
    figures: dict[str, Any] = {"seeds": seeds, "arms": {arm: arm_figures(by_arm[arm], bests[arm]) for arm in by_arm}}
    figures["paired"] = {f"{a} - {b}": paired(bests[a], bests[b]) for a, b in PAIRS if a in bests and b in bests}
    figures["directional_against"] = {b: figures["paired"][f"directional - {b}"] for a, b in PAIRS[:2]
                                      if f"{a} - {b}" in figures["paired"]}  # fmt: skip
    means = [figures["arms"].get(arm, {}).get("mean_test_ndcg10") for arm in ARMS]
    ahead = figures["paired"].get("directional - scalar_only", {})
    if None not in means and len(ahead.get("test_ndcg10_differences", [])) == seeds:
        figures["goal_met"] = bool(means[0] > means[1] > means[2] and ahead["wins"] == seeds)
    return figures


def _result_name(dataset: str) -> str:
    return "feedback_ablation" if dataset == "ml-1m" else f"feedback_ablation_{dataset.replace('-', '_')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cpu-budget", type=float, default=3600, help="CPU-seconds per arm and seed")
    parser.add_argument("--rungs", default="1,3,9", help="epochs of each rung, increasing")
    parser.add_argument("--personas", type=int, default=8, help="simulated users critiquing each evorec candidate")
    parser.add_argument("--budget-seconds", type=float, default=7200, help="wall time this invocation may spend")
    parser.add_argument("--parallel", type=int, default=2, help="runs advanced at once (a core each)")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated; 'random' may be added")
    args = parser.parse_args()

    arms = args.arms.split(",")
    setup = {"cpu_budget": args.cpu_budget, "rungs": [int(e) for e in args.rungs.split(",")], "seeds": args.seeds,
             "arms": arms, "personas": args.personas, "seed_candidate": "sasrec_bce"}  # fmt: skip
    state = ROOT / "state" / f"feedback_ablation_rungs_{args.dataset}"
    previous_path = RESULTS / f"{_result_name(args.dataset)}.json"
    previous = json.loads(previous_path.read_text()) if previous_path.exists() else {}
    with InvocationLog(state / "invocations.jsonl", setup, previous if previous.get("setup") == setup else None) as log:
        try:
            _ablate(args, arms, setup, state, log)
        except UnmeasuredProcessor as error:
            sys.exit(f"feedback_ablation: {error}")


def _ablate(args: argparse.Namespace, arms: list[str], setup: dict[str, Any], state: Path, log: InvocationLog) -> None:
    from offline_agent.evaluator import EvaluationConfig, warm_up
    from offline_agent.rungs import RungConfig
    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings

    started = time.monotonic()
    prepared = prepared_dataset(args.dataset, get_settings())
    rungs = RungConfig(epochs=tuple(setup["rungs"]))
    evaluation = EvaluationConfig(dataset=str(prepared.path), work_dir=str(state / "sandboxes"))
    warm_up(evaluation)  # one-time loading, charged to no arm
    runs, speeds = ablation_runs(arms, args.seeds, state, prepared.path, evaluation, rungs, args.personas,
                                 args.cpu_budget, log.first_cpu())  # fmt: skip
    if not all(run.done for run in runs):
        print(f"a CPU-second here is {speeds.speed():.4f} of the reference processor's", flush=True)
    finished = advance(runs, args.parallel, started + args.budget_seconds)
    figures = {
        **summarise(runs, arms, args.seeds),
        "setup": setup,
        "selection": "each run's best at the highest rung it reached, by validation NDCG@10; test reported, "
        "never used to select",
        "finished": finished,
        "processor_speeds": speeds.known(),
        **log.totals(),
    }
    path = write_result(_result_name(args.dataset), figures, args.dataset)
    print(path.read_text())


if __name__ == "__main__":
    main()
