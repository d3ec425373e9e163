"""An equal-compute race: evorec against what an engineer would run instead, from the same seed.

Three arms start from ``sasrec_bce`` and spend the same CPU time on selection (``--cpu-budget``: seconds ×
threads of every rung evaluation, in the CPU-seconds of the processor the race began on:
:mod:`benchmarks.processor_speed`; the finals are not counted):

- ``evorec``: the rulebook proposer with directional feedback, multi-fidelity rungs (successive halving over
  ``--rungs`` epochs, τ-adaptive), tune children and the bandit between edit kinds;
- ``optuna``: Optuna's TPE over the seed's declared numbers with Hyperband pruning on the same rungs;
- ``random``: random sampling with the same Hyperband (Hyperband proper).

Every candidate of every arm is trained by the same sandboxed, judged evaluator (one thread each). The arms
run side by side, a thread each, so load from other work on the machine falls on all alike. When an arm
has spent its budget, its top ``--finals`` (highest rung reached, then validation) are trained to
convergence from their checkpoints; the best of them on validation is the arm's result, and its test
NDCG@10 (computed once, never ranked on) is the arm's figure. The finals of all arms share
``--final-workers`` sandboxes (default: one per arm, as many as selection runs): an arm whose finals are
done leaves its worker to another arm's next final, so the slowest arm's finals train side by side rather
than one after another while cores idle.

Resumable: everything lives under ``benchmarks/state/race_<dataset>/`` (the evolution database, the Optuna
studies, each arm's ``finals.json``: committed; the candidates' checkpoints: ignored by git, a few MB each);
an invocation spends at most ``--budget-seconds`` of wall time and the next goes on. A checkpoint that is
missing (another machine) is trained again from scratch, its time counted, so the checkpoints of finals
still training are committed by hand (``git add -f``) where the next invocation may run on another machine.
Once every final has finished, only the finals' checkpoints are kept.

    python benchmarks/evolve.py --dataset ml-1m --cpu-budget 7200 --budget-seconds 3600   # -> evolve_ml1m.json
    python benchmarks/evolve.py --dataset ml-latest-small --cpu-budget 300 --rungs 1,2 --final-epochs 4  # fast
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.arms import Arm
from benchmarks.common import RESULTS, write_json_atomically, write_result
from benchmarks.invocations import InvocationLog
from benchmarks.processor_speed import SPEEDS, CpuMeter, ProcessorSpeeds, UnmeasuredProcessor, first_step_here

ROOT = Path(__file__).resolve().parent
SEED = ROOT.parent / "offline_agent" / "seeds" / "sasrec_bce"
ARMS = ("evorec", "optuna", "random")
PUBLISHED_SASREC_PLUS_3000 = 0.1857  # ../shared/PROTOCOL.md, ML-1M test NDCG@10
FINALS = "finals.json"
FINALS_OVERHEAD = 600
"""Seconds a final's sandbox is given past its training budget (start-up, the last epoch's and the final scoring):
180 s was too few at load 10, and a final killed at the wall limit loses its invocation's training."""


def _result_name(dataset: str) -> str:
    return "evolve_ml1m" if dataset == "ml-1m" else f"evolve_{dataset.replace('-', '_')}"


def train_finals(
    folder: Path,
    finalists: list[dict[str, str]],
    evaluation: Any,
    final_epochs: int,
    deadline: float,
    twins: Sequence[Path] = (),
    workers: Executor | None = None,
) -> dict[str, Any]:
    """Train each finalist on towards convergence until ``deadline`` (monotonic), from its kept checkpoint;
    the record in ``folder/finals.json`` says which finished, with what, in how many seconds.

    The finalists go to ``workers`` in their order (best first) and train side by side as its workers allow
    (without: one after another, here). A finalist that another arm (``twins``: their folders) has already
    trained to the end is the same program with the same seed and data: its record is taken, marked
    ``trained_by``, instead of training it again."""
    from offline_agent.evaluator import content_key
    from offline_agent.multifidelity import train_on

    path = folder / FINALS
    record = _finals_of(folder)
    recording = threading.Lock()  # finalists of this arm finish on several threads; the file holds them all

    def note(key: str, entry: dict[str, Any]) -> None:
        with recording:
            record[key] = entry
            write_json_atomically(path, record)  # other arms' threads read it (twins)

    def train(sources: dict[str, str]) -> None:
        key = content_key(sources)
        before = record.get(key, {})
        if before.get("finished"):
            return
        shared = _finished_by_twin(key, twins)
        if shared is not None:
            note(key, shared)
            return
        trained = train_on(sources, evaluation, final_epochs, final=True, deadline=deadline)
        if trained is None:  # too little time left for this invocation
            return
        outcome, spent = trained
        seconds = round(before.get("seconds", 0.0) + spent, 1)
        if outcome.status != "evaluated" or not outcome.valid:
            note(key, {"finished": False, "reason": outcome.reason, "seconds": seconds})
            return
        note(key, {
            "finished": outcome.stopped in ("patience", "epochs"),
            "stopped": outcome.stopped,
            "valid_ndcg10": round(outcome.valid["ndcg@10"], 4),
            # none for a final paused between a kill at its memory limit and its going on (see train_on)
            "test_ndcg10": round(outcome.test["ndcg@10"], 4) if outcome.test else None,
            "epochs": len(outcome.history),
            "best_epoch": outcome.best_epoch,
            "seconds": seconds,
        })  # fmt: skip

    if workers is None:
        for sources in finalists:
            train(sources)
    else:
        list(workers.map(train, finalists))
    return record


def _finals_of(folder: Path) -> dict[str, Any]:
    path = folder / FINALS
    return json.loads(path.read_text()) if path.exists() else {}


def _finished_by_twin(key: str, twins: Sequence[Path]) -> dict[str, Any] | None:
    for twin in twins:
        final = _finals_of(twin).get(key, {})
        if final.get("finished") and "trained_by" not in final:
            return {**final, "trained_by": twin.name}
    return None


def drop_checkpoints_but(checkpoints: Path, keep: set[str]) -> None:
    """Remove every candidate's checkpoint folder under ``checkpoints`` but those named in ``keep``. The folder is
    ignored by git, so a race that ends on another machine than the one it trained on may have none."""
    if not checkpoints.is_dir():
        return
    for folder in checkpoints.iterdir():
        if folder.name not in keep:
            shutil.rmtree(folder)


def race_arm(
    name: str,
    arm: Arm,
    folder: Path,
    budget: float,
    evaluation: Any,
    final_epochs: int,
    deadline: float,
    speeds: ProcessorSpeeds,
    twins: Sequence[Path] = (),
    final_workers: Executor | None = None,
) -> dict[str, Any]:
    """Selection until the arm's CPU budget is spent, in the reference processor's CPU-seconds (or this
    invocation's time), then its finals on ``final_workers`` (a finalist another arm of ``twins`` finished is
    shared, not trained twice)."""
    meter = CpuMeter(arm, folder, speeds)
    while meter.spent() < budget and time.monotonic() < deadline:
        meter.step()
        print(f"{name}: {arm.evaluations()} evaluations, {meter.spent():.0f} of {budget:.0f} CPU-s", flush=True)
    selected = meter.spent() >= budget
    finals = (
        train_finals(folder, arm.finalists(), evaluation, final_epochs, deadline, twins, final_workers)
        if selected
        else {}
    )
    finished = [f for f in finals.values() if f.get("finished")]
    done = selected and len(finished) == len(arm.finalists()) > 0
    best = max(finished, key=lambda f: f["valid_ndcg10"]) if done else None
    return {
        "final_test_ndcg10": best["test_ndcg10"] if best else None,
        "final_valid_ndcg10": best["valid_ndcg10"] if best else None,
        "cpu_seconds": round(meter.spent(), 1),  # the reference processor's
        "raw_cpu_seconds": round(arm.cpu_seconds(), 1),  # as measured, wherever
        "evaluations": arm.evaluations(),
        "selection_finished": selected,
        "finals_finished": done,
        "finals": finals,
        "proxy_fidelity": arm.proxy_fidelity(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--cpu-budget", type=float, default=7200, help="selection's CPU-seconds per arm")
    parser.add_argument("--budget-seconds", type=float, default=3600, help="wall time this invocation may spend")
    parser.add_argument("--rungs", default="2,6,18", help="epochs of each rung, increasing")
    parser.add_argument("--finals", type=int, default=3, help="candidates of each arm trained to convergence")
    parser.add_argument(
        "--final-epochs", type=int, default=200, help="the finals' epoch cap (early stopping ends them)"
    )
    parser.add_argument(
        "--final-workers", type=int, help="finals trained at once, all arms together (default: one per arm)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", default=",".join(ARMS), help="which arms to run (all three for the result)")
    args = parser.parse_args()
    if args.final_workers is not None and args.final_workers < 1:
        parser.error(f"--final-workers must be at least 1, got {args.final_workers}")
    deadline = time.monotonic() + args.budget_seconds
    state = ROOT / "state" / f"race_{args.dataset}"
    race = {"cpu_budget": args.cpu_budget, "rungs": [int(e) for e in args.rungs.split(",")], "seed": args.seed}
    previous_path = RESULTS / f"{_result_name(args.dataset)}.json"
    previous = json.loads(previous_path.read_text()) if previous_path.exists() else {}
    with InvocationLog(state / "invocations.jsonl", race, previous if previous.get("race") == race else None) as log:
        try:
            _race(args, state, race, deadline, log)
        except UnmeasuredProcessor as error:
            sys.exit(f"evolve: {error}")


def _race(args: argparse.Namespace, state: Path, race: dict[str, Any], deadline: float, log: InvocationLog) -> None:
    import optuna

    from benchmarks.hpo_arm import HyperbandArm
    from benchmarks.race_evorec import EvorecArm
    from offline_agent.evaluator import EvaluationConfig, content_key, warm_up
    from offline_agent.rungs import RungConfig
    from recsys.candidate import load_candidate
    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings

    prepared = prepared_dataset(args.dataset, get_settings())
    rungs = RungConfig(
        epochs=tuple(int(e) for e in args.rungs.split(",")), finals=args.finals, final_epochs=args.final_epochs
    )
    evaluation = EvaluationConfig(
        dataset=str(prepared.path), seed=args.seed, work_dir=str(state / "sandboxes"), overhead_seconds=FINALS_OVERHEAD
    )
    seed_sources = dict(load_candidate(SEED).sources)

    def arm(name: str, folder: Path | None = None) -> tuple[Arm, EvaluationConfig]:
        folder = folder or state / name
        checkpoints = evaluation.model_copy(update={"checkpoint_dir": str(folder / "checkpoints")})
        if name == "evorec":
            return EvorecArm(SEED, prepared.path, checkpoints, rungs, folder, args.seed), checkpoints
        sampler = (
            optuna.samplers.TPESampler(seed=args.seed) if name == "optuna" else optuna.samplers.RandomSampler(args.seed)
        )
        return HyperbandArm(name, sampler, seed_sources, checkpoints, rungs, folder), checkpoints

    warm_up(evaluation)  # one-time loading, charged to no arm
    arms = {name: arm(name) for name in ARMS if name in args.arms.split(",")}

    def reference_seconds() -> float | None:  # the seed's first evaluation, by the evorec arm
        evorec = arms.get("evorec", (None, None))[0]
        return evorec.first_evaluation_seconds() if isinstance(evorec, EvorecArm) else None

    def measure() -> float:
        return first_step_here(lambda folder: arm("evorec", folder)[0], state)

    speeds = ProcessorSpeeds(state / SPEEDS, log.first_cpu(), reference_seconds, measure)
    final_workers = ThreadPoolExecutor(max_workers=args.final_workers or len(arms), thread_name_prefix="final")
    with final_workers, ThreadPoolExecutor(max_workers=len(arms)) as pool:
        futures = {
            name: pool.submit(
                race_arm,
                name,
                built,
                state / name,
                args.cpu_budget,
                config,
                rungs.final_epochs,
                deadline,
                speeds,
                [state / other for other in arms if other != name],
                final_workers,
            )
            for name, (built, config) in arms.items()
        }
        figures = {name: future.result() for name, future in futures.items()}

    finished = all(f["finals_finished"] for f in figures.values()) and set(figures) == set(ARMS)
    if finished:  # the race is over: keep the finals' checkpoints only
        for name, (built, _) in arms.items():
            drop_checkpoints_but(state / name / "checkpoints", {content_key(sources) for sources in built.finalists()})
    result = {
        "race": race,
        "arms": figures,
        "proxy_fidelity": figures.get("evorec", {}).get("proxy_fidelity"),
        "published_sasrec_plus_3000_test_ndcg10": PUBLISHED_SASREC_PLUS_3000 if args.dataset == "ml-1m" else None,
        "finished": finished,
        **log.totals(),
    }
    path = write_result(_result_name(args.dataset), result, args.dataset)
    print(path.read_text())


if __name__ == "__main__":
    main()
