"""Evolution with the rulebook proposer against random search over a fixed hyperparameter space.

Both arms start from sasrec_bce, get the same number of evaluations and the same evaluation
cascade (smoke run, then budgeted training in the sandbox). Each arm's best is chosen on
validation NDCG@10; its test NDCG@10 is reported. The arms advance together, their evaluations
side by side (a core each), so a run stopped by its time budget compares like with like; state
lives under ``benchmarks/state/evolve_<dataset>/`` and the next invocation resumes.

Selection runs on a short training budget; published figures are of models trained to
convergence. So, once both arms have spent their evaluations, each arm's best is trained again
in the sandbox until early stopping (``final``), checkpointed so that it spans invocations.

    python benchmarks/evolve.py --dataset ml-1m --evaluations 8 --train-seconds 900   # -> evolve_ml1m.json
    python benchmarks/evolve.py --dataset ml-latest-small --evaluations 6 --train-seconds 45     # fast variant
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, write_result

if TYPE_CHECKING:
    from offline_agent.evaluator import EvaluationConfig, EvaluationOutcome

ROOT = Path(__file__).resolve().parent
SEED = ROOT.parent / "offline_agent" / "seeds" / "sasrec_bce"
SPACE: dict[str, tuple[str, str, list[Any]]] = {
    "dim": ("model", "DIM = 64", [32, 64, 128]),
    "blocks": ("model", "BLOCKS = 2", [1, 2, 3]),
    "heads": ("model", "HEADS = 2", [1, 2, 4]),
    "dropout": ("model", "DROPOUT = 0.2", [0.1, 0.2, 0.3, 0.5]),
    "lr": ("optim", "LEARNING_RATE = 1e-3", [5e-4, 1e-3, 2e-3]),
    "batch_size": ("optim", "BATCH_SIZE = 128", [64, 128, 256]),
}


def random_configuration(rng: random.Random) -> dict[str, Any]:
    return {name: rng.choice(values) for name, (_, _, values) in SPACE.items()}


def apply_configuration(sources: dict[str, str], configuration: dict[str, Any]) -> dict[str, str]:
    """The seed's blocks with the sampled hyperparameters written in."""
    updated = dict(sources)
    for name, value in configuration.items():
        block, default, _ = SPACE[name]
        key = default.split("=")[0].rstrip()
        joiner = " = " if " = " in default else "="
        updated[block] = updated[block].replace(default, f"{key}{joiner}{value}", 1)
    return updated


def log_trial(log: Path, configuration: dict[str, Any], outcome: EvaluationOutcome) -> dict[str, Any]:
    """Append one random-search evaluation to its JSON-lines log (what a resumed run reads back)."""
    trial = {"configuration": configuration, "status": outcome.status, "reason": outcome.reason,
             "valid": outcome.valid, "test": outcome.test, "seconds": round(outcome.seconds, 1)}  # fmt: skip
    with log.open("a") as handle:
        handle.write(json.dumps(trial) + "\n")
    return trial


def final_training(arms: dict[str, dict[str, str]], evaluation: EvaluationConfig, state: Path, seconds: float
                   ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each arm's best trained side by side until early stopping, or for ``seconds`` more; resumable."""
    from offline_agent.evaluator import evaluate_candidate

    update = {"train_seconds": seconds, "max_epochs": None, "diagnose": False, "checkpoint_dir": str(state / "final")}
    config = evaluation.model_copy(update=update)
    with ThreadPoolExecutor(max_workers=len(arms)) as pool:
        outcomes = pool.map(lambda sources: evaluate_candidate(sources, config), arms.values())
        return {arm: _final_figures(outcome) for arm, outcome in zip(arms, outcomes, strict=True)}


def _final_figures(outcome: EvaluationOutcome) -> dict[str, Any]:
    if outcome.status != "evaluated" or not outcome.valid or not outcome.test:
        return {"finished": False, "reason": outcome.reason}
    return {
        "finished": outcome.stopped in ("patience", "epochs"),
        "stopped": outcome.stopped,
        "valid_ndcg10": round(outcome.valid["ndcg@10"], 4),
        "test_ndcg10": round(outcome.test["ndcg@10"], 4),
        "test_hr10": round(outcome.test["hr@10"], 4),
        "epochs": len(outcome.history),
        "best_epoch": outcome.best_epoch,
        "training_seconds": outcome.history[-1]["seconds"],
    }


def _finished(final: dict[str, dict[str, Any]]) -> bool:
    return bool(final) and all(arm.get("finished") for arm in final.values())


def _result_name(dataset: str) -> str:
    return "evolve_ml1m" if dataset == "ml-1m" else f"evolve_{dataset.replace('-', '_')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--evaluations", type=int, default=8, help="evaluations per arm, the seed included")
    parser.add_argument("--train-seconds", type=float, default=60)
    parser.add_argument("--budget-seconds", type=float, default=3600, help="time this invocation may spend")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--final", action=argparse.BooleanOptionalAction, default=True,
                        help="train each arm's best to convergence once the evaluations are spent")  # fmt: skip
    args = parser.parse_args()

    from offline_agent.evaluator import EvaluationConfig, evaluate_candidate
    from offline_agent.evolve import Evolution, EvolutionConfig
    from offline_agent.program_db import DatabaseConfig
    from recsys.candidate import load_candidate
    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings

    started = time.monotonic()
    prepared = prepared_dataset(args.dataset, get_settings())
    state = ROOT / "state" / f"evolve_{args.dataset}"
    state.mkdir(parents=True, exist_ok=True)
    evaluation = EvaluationConfig(
        dataset=str(prepared.path), seed=args.seed, train_seconds=args.train_seconds, work_dir=str(state / "sandboxes")
    )
    base = EvolutionConfig(
        seed_candidate=str(SEED),
        dataset=str(prepared.path),
        run_dir=str(state / "evolution"),
        seed=args.seed,
        database=DatabaseConfig(islands=1),
        evaluation=evaluation,
    )
    random_log = state / "random_search.jsonl"
    resumed = random_log.exists() or (state / "evolution").exists()  # a fresh state starts the tallies afresh
    trials = [json.loads(line) for line in random_log.read_text().splitlines()] if random_log.exists() else []
    rng = random.Random(args.seed)
    configurations = [random_configuration(rng) for _ in range(args.evaluations)]
    seed_sources = dict(load_candidate(SEED).sources)

    def evolution_evaluations(evolution: Evolution) -> int:
        counts = evolution.db.counts()
        return counts.get("evaluated", 0) + counts.get("failed", 0)

    evolution = Evolution(base.model_copy(update={"iterations": 0}), prepared.path)
    stopped = "evaluations"
    with ThreadPoolExecutor(max_workers=1) as random_search:
        while evolution_evaluations(evolution) < args.evaluations or len(trials) < args.evaluations:
            if time.monotonic() - started >= args.budget_seconds:
                stopped = "time budget"
                break
            pending = None
            if len(trials) < args.evaluations and len(trials) <= evolution_evaluations(evolution):
                configuration = configurations[len(trials)]
                sources = apply_configuration(seed_sources, configuration)
                pending = random_search.submit(evaluate_candidate, sources, evaluation)  # its own sandbox process
            if evolution_evaluations(evolution) < args.evaluations:
                target = int(evolution.db.get_state("iteration", 0)) + 1
                evolution = Evolution(base.model_copy(update={"iterations": target}), prepared.path)
                evolution.run()
            if pending is not None:
                trials.append(log_trial(random_log, configuration, pending.result()))

    best = evolution.db.best()
    scored = [t for t in trials if t["status"] == "evaluated"]
    random_best = max(scored, key=lambda t: t["valid"]["ndcg@10"]) if scored else None
    previous_path = RESULTS / f"{_result_name(args.dataset)}.json"
    previous = json.loads(previous_path.read_text()) if resumed and previous_path.exists() else {}
    final = previous.get("final", {})
    overhead = evaluation.smoke_seconds + evaluation.overhead_seconds
    remaining = args.budget_seconds - (time.monotonic() - started) - overhead
    if args.final and stopped == "evaluations" and best and random_best and not _finished(final) and remaining >= 60:
        configuration = random_best["configuration"]
        arms = {"evolution": best.blocks, "random_search": apply_configuration(seed_sources, configuration)}
        final = final_training(arms, evaluation, state, remaining)
    figures = {
        "best_valid_ndcg10": round(best.fitness, 4) if best and best.fitness is not None else None,
        "best_test_ndcg10": round(best.feedback.test_metrics["ndcg@10"], 4)
        if best and best.feedback.test_metrics
        else None,
        "best_lineage": [p.feedback.rule or p.origin for p in evolution.db.lineage(best.key)] if best else [],
        "evolution_trials": [
            {
                "key": p.key[:12],
                "parent": (p.parent_key or "")[:12],
                "rule": p.feedback.rule or p.origin,
                "status": p.status,
                "valid_ndcg10": round(p.fitness, 4) if p.fitness is not None else None,
            }
            for p in evolution.db.programs()
            if p.status != "pending"
        ],
        "random_search_trials": [
            {
                **t["configuration"],
                "status": t["status"],
                "valid_ndcg10": round(t["valid"]["ndcg@10"], 4) if t["valid"] else None,
            }
            for t in trials
        ],
        "random_search_best_valid_ndcg10": round(random_best["valid"]["ndcg@10"], 4) if random_best else None,
        "random_search_best_test_ndcg10": round(random_best["test"]["ndcg@10"], 4) if random_best else None,
        "random_search_best_configuration": random_best["configuration"] if random_best else None,
        "evaluations": {"evolution": evolution_evaluations(evolution), "random_search": len(trials)},
        "evaluations_per_arm": args.evaluations,
        "train_seconds_per_evaluation": args.train_seconds,
        "published_sasrec_plus_3000_test_ndcg10": 0.1857 if args.dataset == "ml-1m" else None,
        "finished": stopped == "evaluations",
        "final": final,
        "final_test_ndcg10": final.get("evolution", {}).get("test_ndcg10"),
        "random_search_final_test_ndcg10": final.get("random_search", {}).get("test_ndcg10"),
        "final_finished": _finished(final),
        "sessions": previous.get("sessions", 0) + 1,
        "seconds": round(previous.get("seconds", 0.0) + time.monotonic() - started, 1),
    }
    path = write_result(_result_name(args.dataset), figures, args.dataset)
    print(path.read_text())


if __name__ == "__main__":
    main()
