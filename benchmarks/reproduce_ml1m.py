"""Reproduce ../shared/PROTOCOL.md's ML-1M table: SASRec (BCE), SASRec+ (full CE), MF-BPR, EASE, Pop.

Training to convergence takes hours on 2 CPU cores, more than one session. Every neural model
checkpoints after each epoch under ``benchmarks/state/reproduce_ml1m/<model>/`` (committed with
the results), and each invocation resumes where the last one stopped and spends at most
``--budget-seconds``. The result file says which models finished, in how many sessions and
seconds (an invocation killed before it could write is counted from ``invocations.jsonl`` in the state
folder, as ``killed_sessions``); test metrics appear only for finished models (they are computed once, on the best
validation epoch).

These figures are the float32 path's (``precision="float32"``, no length bucketing: the trainer
as it was when they were measured). ``--fast`` trains with the trainer's fast path instead (bfloat16
autocast where the CPU has bfloat16 units, length-bucketed batches, the chunked cross-entropy), into
its own state folder ``state/reproduce_ml1m_fast/`` and result ``results/reproduce_ml1m_fast.json``,
so that its convergence can be set against the float32 figures.

    python benchmarks/reproduce_ml1m.py [--budget-seconds 3600] [--models sasrec_ce,sasrec_bce,...]
    nice -n 10 python benchmarks/reproduce_ml1m.py --fast --models sasrec_ce --budget-seconds 36000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, write_result
from benchmarks.invocations import InvocationLog

ROOT = Path(__file__).resolve().parent
SEEDS = ROOT.parent / "offline_agent" / "seeds"
NEURAL = ("sasrec_ce", "sasrec_bce", "mf_bpr")
BASELINE_NAMES = {"ease": "ease", "most_popular": "most_popular"}
PUBLISHED = {"sasrec_bce": 0.1341, "sasrec_ce": 0.1821}


def _result_name(fast: bool) -> str:
    return "reproduce_ml1m_fast" if fast else "reproduce_ml1m"


def _previous(fast: bool) -> dict[str, Any]:
    path = RESULTS / f"{_result_name(fast)}.json"
    return json.loads(path.read_text()) if path.exists() else {"models": {}, "sessions": 0, "seconds": 0.0}


def _figures(valid: dict[str, float], test: dict[str, float] | None, epochs: int, seconds: float) -> dict[str, Any]:
    return {
        "valid_ndcg10": round(valid["ndcg@10"], 4),
        "test_ndcg10": round(test["ndcg@10"], 4) if test else None,
        "test_hr10": round(test["hr@10"], 4) if test else None,
        "epochs": epochs,
        "seconds": round(seconds, 1),
    }


def _train_neural(name: str, prepared: Any, budget: float, fast: bool) -> dict[str, Any]:
    from recsys.candidate import load_candidate
    from recsys.trainer import Trainer, TrainerConfig

    checkpoint = ROOT / "state" / _result_name(fast) / name
    arithmetic: dict[str, Any] = {} if fast else {"precision": "float32", "bucketing": False}
    config = TrainerConfig(
        seed=0, budget_seconds=budget, checkpoint_dir=checkpoint, resume=True, progress=False, **arithmetic
    )
    result = Trainer(load_candidate(SEEDS / name), prepared, config, epoch_log=sys.stdout).fit()
    finished = result.stopped in ("patience", "epochs")
    figures = _figures(result.valid, result.test if finished else None, result.epochs, result.seconds)
    figures.update(
        finished=finished, best_epoch=result.best_epoch, stopped=result.stopped, content_hash=result.content_hash
    )
    if name in PUBLISHED:
        figures["published_test_ndcg10"] = PUBLISHED[name]
        if finished:
            figures["within_10_percent"] = abs(result.test["ndcg@10"] / PUBLISHED[name] - 1) <= 0.10
    return figures


def _baseline(name: str, prepared: Any) -> dict[str, Any]:
    from recsys.baselines import BASELINES
    from recsys.evaluation import ItemCatalog, evaluate
    from recsys.sequences import UserSequences

    started = time.perf_counter()
    sequences = UserSequences.from_prepared(prepared)
    catalog = ItemCatalog.build(prepared, sequences)
    scorer = BASELINES[name](sequences)
    valid = evaluate(scorer, sequences, "valid", catalog).metrics
    test = evaluate(scorer, sequences, "test", catalog).metrics
    return {**_figures(valid, test, 0, time.perf_counter() - started), "finished": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-seconds", type=float, default=3600.0, help="time this invocation may spend")
    parser.add_argument("--models", default=None, help="default: all five; with --fast, sasrec_ce")
    parser.add_argument("--fast", action="store_true", help="the trainer's fast path, into its own state and result")
    args = parser.parse_args()
    names = (args.models or ("sasrec_ce" if args.fast else "ease,most_popular,sasrec_ce,mf_bpr,sasrec_bce")).split(",")

    record = _previous(args.fast)
    log = InvocationLog(ROOT / "state" / _result_name(args.fast) / "invocations.jsonl", carried=record)
    with log:
        _reproduce(names, record["models"], args.budget_seconds, args.fast, log)


def _reproduce(names: list[str], models: dict[str, Any], budget: float, fast: bool, log: InvocationLog) -> None:
    from recsys.data.beam_prepare import run_prepare
    from recsys.data.catalog import builtin_source
    from recsys.data.config import PrepareConfig
    from recsys.data.fetch import fetch_dataset
    from recsys.data.prepared import PreparedDataset, is_up_to_date
    from recsys.settings import get_settings

    started = time.monotonic()
    settings = get_settings()
    fetch_dataset("ml-1m", settings)
    source, out = builtin_source("ml-1m", settings), settings.prepared_dir / "ml-1m"
    if not is_up_to_date(source, out, PrepareConfig()):
        run_prepare(source, out)
    prepared = PreparedDataset.open(out)

    for name in names:
        if models.get(name, {}).get("finished"):
            continue
        remaining = budget - (time.monotonic() - started)
        if remaining <= 60:
            break
        if name in NEURAL:
            models[name] = _train_neural(name, prepared, remaining, fast)
        else:
            models[name] = _baseline(name, prepared)
        _write(models, log, fast, len(names))
    _write(models, log, fast, len(names))


def _write(models: dict[str, Any], log: InvocationLog, fast: bool, expected: int) -> None:
    figures = {
        "models": models,
        "finished": all(m.get("finished") for m in models.values()) and len(models) >= expected,
        **log.totals(),
    }
    if fast:
        figures["path"] = "fast: bfloat16 autocast where the CPU has bf16 units, length-bucketed batches"
    write_result(_result_name(fast), figures, "ml-1m (protocol: items >= 5 interactions, leave-one-out)")


if __name__ == "__main__":
    main()
