"""Does directional feedback help? Evolution with diagnosis and critiques, with the fitness only, and random search.

Three arms start from the same seed candidate and get the same number of evaluations per run, the
same evaluation cascade and the same training budget in epochs (so a busy machine changes the
time taken, not the result: the seed candidate scores the same in every arm), over several seeds:

- ``directional``: the rulebook reads the diagnosis probes, the simulated users' critiques, the
  metrics and the training curve;
- ``scalar_only``: the rulebook sees the code and the fitness only (no metrics, no feedback);
- ``random``: random search over the seed's hyperparameters (``benchmarks/evolve.py``'s space).

Each run's best is chosen on validation NDCG@10; its test metrics are reported. Runs advance one
evaluation at a time, those furthest behind first (``--parallel`` of them side by side), so a
run cut by its time budget still compares like with like; state lives under
``benchmarks/state/feedback_ablation_<dataset>/`` and the next invocation resumes.

    python benchmarks/feedback_ablation.py --dataset ml-latest-small --evaluations 4 --max-epochs 20
    python benchmarks/feedback_ablation.py --dataset ml-1m --evaluations 4 --max-epochs 4 --parallel 2

On ML-1M an epoch takes about 50 s on one core, so the committed run trains each evaluation for 4
epochs (about 2 h in all on 2 cores); 8 evaluations of 30 epochs would take about 16 h.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, write_result
from benchmarks.evolve import SEED
from benchmarks.random_search import apply_configuration, log_trial, random_configuration

ROOT = Path(__file__).resolve().parent
ARMS = ("directional", "scalar_only", "random")
BEYOND_ACCURACY = ("coverage@10", "ild@10", "novelty@10", "popularity_lift@10", "calibration_kl@10")
MAX_PROPOSALS_PER_EVALUATION = 4  # a run whose proposals keep being rejected stops trying


def _result_name(dataset: str) -> str:
    return "feedback_ablation" if dataset == "ml-1m" else f"feedback_ablation_{dataset.replace('-', '_')}"


class EvolutionRun:
    """One evolution arm and seed, advanced one evaluation at a time (resumable from its database)."""

    def __init__(self, arm: str, seed: int, state: Path, prepared: Any, args: argparse.Namespace) -> None:
        from offline_agent.evaluator import EvaluationConfig
        from offline_agent.evolve import EvolutionConfig, FeedbackConfig
        from offline_agent.program_db import DatabaseConfig

        self.prepared = prepared
        evaluation = EvaluationConfig(
            dataset=str(prepared.path),
            seed=seed,
            train_seconds=args.train_seconds,
            max_epochs=args.max_epochs,
            work_dir=str(state / "sandboxes"),
        )
        mode: Literal["directional", "scalar"] = "directional" if arm == "directional" else "scalar"
        self.config = EvolutionConfig(
            seed_candidate=str(SEED),
            dataset=str(prepared.path),
            run_dir=str(state / f"{arm}_seed{seed}"),
            seed=seed,
            feedback=FeedbackConfig(mode=mode, personas=args.personas),
            database=DatabaseConfig(islands=1),
            evaluation=evaluation,
            iterations=0,
        )
        self.limit = args.evaluations

    def _evolution(self, iterations: int) -> Any:
        from offline_agent.evolve import Evolution

        return Evolution(self.config.model_copy(update={"iterations": iterations}), self.prepared.path)

    def evaluations(self) -> int:
        counts = self._evolution(0).db.counts()
        return counts.get("evaluated", 0) + counts.get("failed", 0)

    def exhausted(self) -> bool:
        iteration = int(self._evolution(0).db.get_state("iteration", 0))
        return iteration >= MAX_PROPOSALS_PER_EVALUATION * self.limit

    def step(self) -> None:
        """Run until one more candidate is evaluated (or the proposals run out)."""
        target = self.evaluations() + 1
        while self.evaluations() < target and not self.exhausted():
            iteration = int(self._evolution(0).db.get_state("iteration", 0))
            self._evolution(iteration + 1).run()

    def best(self) -> dict[str, Any] | None:
        best = self._evolution(0).db.best()
        if best is None or best.fitness is None:
            return None
        return {"valid": best.metrics, "test": best.feedback.test_metrics, "rule_chain": best.feedback.rule}


class RandomRun:
    """Random search: one sampled configuration of the seed per evaluation, logged as JSON lines."""

    def __init__(self, seed: int, state: Path, prepared: Any, args: argparse.Namespace) -> None:
        from offline_agent.evaluator import EvaluationConfig
        from recsys.candidate import load_candidate

        self.log = state / f"random_seed{seed}.jsonl"
        self.evaluation = EvaluationConfig(
            dataset=str(prepared.path), seed=seed, train_seconds=args.train_seconds, max_epochs=args.max_epochs,
            diagnose=False, work_dir=str(state / "sandboxes"),
        )  # fmt: skip
        rng = random.Random(seed)
        self.configurations = [random_configuration(rng) for _ in range(args.evaluations)]
        self.configurations[0] = {}  # the seed itself first, as in the evolution arms
        self.seed_sources = dict(load_candidate(SEED).sources)
        self.limit = args.evaluations

    def trials(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def evaluations(self) -> int:
        return len(self.trials())

    def exhausted(self) -> bool:
        return False

    def step(self) -> None:
        from offline_agent.evaluator import evaluate_candidate

        configuration = self.configurations[self.evaluations()]
        outcome = evaluate_candidate(apply_configuration(self.seed_sources, configuration), self.evaluation)
        log_trial(self.log, configuration, outcome)

    def best(self) -> dict[str, Any] | None:
        scored = [t for t in self.trials() if t["status"] == "evaluated"]
        if not scored:
            return None
        best = max(scored, key=lambda t: t["valid"]["ndcg@10"])
        return {"valid": best["valid"], "test": best["test"], "configuration": best["configuration"]}


def _summary(bests: list[dict[str, Any]]) -> dict[str, Any]:
    def column(split: str, metric: str) -> list[float]:
        return [float(b[split][metric]) for b in bests]

    def spread(values: list[float]) -> float | None:
        return round(statistics.stdev(values), 4) if len(values) > 1 else None

    figures: dict[str, Any] = {"runs": len(bests)}
    if not bests:
        return figures
    test = column("test", "ndcg@10")
    figures.update(
        mean_test_ndcg10=round(statistics.mean(test), 4),
        std_test_ndcg10=spread(test),
        mean_valid_ndcg10=round(statistics.mean(column("valid", "ndcg@10")), 4),
        per_seed_test_ndcg10=[round(v, 4) for v in test],
    )
    for metric in BEYOND_ACCURACY:
        figures[f"mean_test_{metric.replace('@', '')}"] = round(statistics.mean(column("test", metric)), 4)
    return figures


def _paired(bests: dict[str, list[dict[str, Any] | None]], other: str) -> dict[str, Any]:
    """Directional against another arm seed by seed: the runs of a seed start from the same seed
    candidate trained with the same seed, so the per-seed difference takes out how lucky that seed was."""
    pairs = [
        (float(d["test"]["ndcg@10"]), float(o["test"]["ndcg@10"]))
        for d, o in zip(bests["directional"], bests[other], strict=True)
        if d and o
    ]
    differences = [d - o for d, o in pairs]
    figures: dict[str, Any] = {"test_ndcg10_differences": [round(v, 4) for v in differences]}
    if differences:
        figures.update(mean_difference=round(statistics.mean(differences), 4), wins=sum(v > 0 for v in differences))
    if len(differences) > 1 and statistics.stdev(differences) > 0:
        directional, others = zip(*pairs, strict=True)
        figures["paired_t_p_value"] = round(float(stats.ttest_rel(directional, others).pvalue), 4)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evaluations", type=int, default=5, help="evaluations per run, the seed candidate included")
    parser.add_argument("--max-epochs", type=int, default=20, help="the training budget of every evaluation")
    parser.add_argument("--train-seconds", type=float, default=1800, help="a safety cap on each training run")
    parser.add_argument("--personas", type=int, default=8, help="simulated users critiquing each candidate")
    parser.add_argument("--budget-seconds", type=float, default=7200, help="time this invocation may spend")
    parser.add_argument("--parallel", type=int, default=2, help="runs advanced at once (a core each)")
    args = parser.parse_args()

    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings

    started = time.monotonic()
    prepared = prepared_dataset(args.dataset, get_settings())
    state = ROOT / "state" / f"feedback_ablation_{args.dataset}"
    resumed = state.exists() and any(state.iterdir())  # a fresh state starts the tallies afresh
    state.mkdir(parents=True, exist_ok=True)
    runs: dict[tuple[str, int], Any] = {}
    for seed in range(args.seeds):
        for arm in ARMS:
            runs[arm, seed] = (
                RandomRun(seed, state, prepared, args) if arm == "random"
                else EvolutionRun(arm, seed, state, prepared, args)
            )  # fmt: skip
    stopped = "evaluations"
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:  # each evaluation is its own sandbox process
        while True:
            waiting = [run for run in runs.values() if run.evaluations() < args.evaluations and not run.exhausted()]
            if not waiting:
                break
            if time.monotonic() - started >= args.budget_seconds:
                stopped = "time budget"
                break
            behind = sorted(waiting, key=lambda run: run.evaluations())[: args.parallel]
            for future in [pool.submit(run.step) for run in behind]:
                future.result()  # a failing step stops the benchmark with its traceback

    previous_path = RESULTS / f"{_result_name(args.dataset)}.json"
    previous = json.loads(previous_path.read_text()) if resumed and previous_path.exists() else {}
    bests = {arm: [runs[arm, seed].best() for seed in range(args.seeds)] for arm in ARMS}
    arms = {
        arm: {
            **_summary([b for b in bests[arm] if b is not None]),
            "evaluations": [runs[arm, seed].evaluations() for seed in range(args.seeds)],
        }
        for arm in ARMS
    }
    figures = {
        "seeds": args.seeds,
        "arms": arms,
        "directional_against": {other: _paired(bests, other) for other in ARMS[1:]},
        "evaluations_per_run": args.evaluations,
        "max_epochs_per_evaluation": args.max_epochs,
        "personas": args.personas,
        "seed_candidate": SEED.name,
        "selection": "each run's best by validation NDCG@10; test metrics reported, never used to select",
        "finished": stopped == "evaluations",
        "sessions": previous.get("sessions", 0) + 1,
        "seconds": round(previous.get("seconds", 0.0) + time.monotonic() - started, 1),
    }
    path = write_result(_result_name(args.dataset), figures, args.dataset)
    print(path.read_text())


if __name__ == "__main__":
    main()
