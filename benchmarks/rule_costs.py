"""How much longer an epoch takes after each rulebook edit: the ``epoch_cost`` the rules declare.

Under a time budget a rule that slows epochs leaves its child fewer of them, so the rulebook
discounts its known gain by this cost (``Rule.budgeted_prior``). Each rule's edit is applied to
the first parent it applies to (sasrec_bce, sasrec_ce, the sampled-softmax child, mf_bpr), the
parent and the child each train a few epochs with the real trainer (validation every epoch, as in
evolution), and the cost is the ratio of their seconds per epoch after the first (warm-up) epoch.
The parent is timed again right before each child so load changes on the machine cancel out.

    python benchmarks/rule_costs.py                       # ml-latest-small, about 10 minutes
    python benchmarks/rule_costs.py --dataset ml-1m --epochs 2
    python benchmarks/rule_costs.py --rules gbce ligr_layers   # these re-timed, the others' figures kept

Each cost is a ratio of two timings taken back to back, so figures of rules timed in different runs
stay comparable; ``timed_in`` says which run (date and command) timed each rule.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, write_result

ROOT = Path(__file__).resolve().parent
SEEDS = ROOT.parent / "offline_agent" / "seeds"
IMPROVING = (0.05, 0.07, 0.09)
OVERFIT = (0.05, 0.09, 0.08, 0.07, 0.06, 0.05)
METRICS = {"coverage@10": 0.1, "ild@10": 0.3, "calibration_kl@10": 0.9, "popularity_lift@10": 3.0}
SIGNALS = {"sequence_insensitivity": 1.0, "popularity_bias": 1.0}
"""Validation curves, metrics and signals under which every rule's precondition can hold (the cost is of the
edit, not of the evidence)."""


def parents() -> dict[str, dict[str, str]]:
    from offline_agent.edits import apply_change, parse_reply
    from offline_agent.rulebook.catalogue import RULES
    from offline_agent.rulebook.engine import RuleContext, reply_for
    from recsys.candidate import load_candidate

    seeds = {name: dict(load_candidate(SEEDS / name).sources) for name in ("sasrec_bce", "sasrec_ce", "mf_bpr")}
    sampled = next(rule for rule in RULES if rule.name == "sampled_softmax")
    bce = RuleContext(seeds["sasrec_bce"])
    return {
        "sasrec_bce": seeds["sasrec_bce"],
        "sasrec_ce": seeds["sasrec_ce"],
        "sasrec_sampled_softmax": apply_change(bce.sources, parse_reply(reply_for(sampled, bce))),
        "mf_bpr": seeds["mf_bpr"],
    }


def seconds_per_epoch(sources: dict[str, str], prepared: Any, epochs: int, work: Path) -> float:
    """Median wall time of the epochs after the first, validation included."""
    import numpy as np

    from recsys.candidate import Candidate, load_candidate
    from recsys.trainer import Trainer, TrainerConfig

    folder = Path(tempfile.mkdtemp(dir=work))
    Candidate("timed", "", sources, {}).write(folder)
    config = TrainerConfig(max_epochs=epochs + 1, progress=False)
    history = Trainer(load_candidate(folder), prepared, config).fit().history
    times = [0.0, *(line["seconds"] for line in history)]
    return float(np.median(np.diff(times)[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per model, after one warm-up epoch")
    parser.add_argument("--rules", nargs="+", help="time only these rules; the others keep their previous figures")
    args = parser.parse_args()

    from tqdm import tqdm

    from offline_agent.edits import apply_change, parse_reply
    from offline_agent.records import Epoch, Feedback
    from offline_agent.rulebook.catalogue import RULES
    from offline_agent.rulebook.engine import RuleContext, reply_for
    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings

    prepared = prepared_dataset(args.dataset, get_settings())
    work = Path(tempfile.mkdtemp(prefix="evorec-rule-costs-"))
    candidates = parents()
    histories = {
        curve: [
            Epoch(epoch=i + 1, loss=1.0, steps=1, valid_ndcg10=score, valid_hr10=score, seconds=i + 1.0,
                  best_epoch=1 + max(range(i + 1), key=curve.__getitem__))
            for i, score in enumerate(curve)
        ]
        for curve in (IMPROVING, OVERFIT)
    }  # fmt: skip
    costs: dict[str, dict[str, Any]] = {}
    result_name = f"rule_costs_{args.dataset.replace('-', '_')}"
    previous = json.loads((RESULTS / f"{result_name}.json").read_text()) if args.rules else {}
    run = f"{datetime.now(UTC).isoformat(timespec='seconds')}: python {' '.join(sys.argv)}"
    timed_in = {rule: previous.get("date", "") for rule in previous.get("epoch_costs", {})}
    timed_in = {**timed_in, **previous.get("timed_in", {})}
    for rule in tqdm([rule for rule in RULES if not args.rules or rule.name in args.rules], desc="rules"):
        found = next(
            (
                (name, ctx)
                for name, sources in candidates.items()
                for history in (histories[IMPROVING], histories[OVERFIT])
                if rule.applies(ctx := RuleContext(sources, METRICS, history, Feedback(signals=SIGNALS)))
            ),
            None,
        )
        if found is None or rule.name == "probe_for_complaint":  # a probe runs after training, not per epoch
            continue
        parent, ctx = found
        child = apply_change(ctx.sources, parse_reply(reply_for(rule, ctx)))
        parent_seconds = seconds_per_epoch(ctx.sources, prepared, args.epochs, work)
        child_seconds = seconds_per_epoch(child, prepared, args.epochs, work)
        costs[rule.name] = {
            "parent": parent,
            "parent_seconds_per_epoch": round(parent_seconds, 3),
            "child_seconds_per_epoch": round(child_seconds, 3),
            "measured_epoch_cost": round(child_seconds / parent_seconds, 2),
        }
        timed_in[rule.name] = run
    costs = {**previous.get("epoch_costs", {}), **costs}
    figures = {
        "epoch_costs": {rule.name: costs[rule.name] for rule in RULES if rule.name in costs},
        "timed_in": {rule.name: timed_in[rule.name] for rule in RULES if rule.name in costs},
        "not_timed": [rule.name for rule in RULES if rule.name not in costs],
        "timed_epochs": args.epochs,
        "num_items": prepared.num_items,
        "num_users": prepared.num_users,
    }
    print(write_result(result_name, figures, args.dataset).read_text())


if __name__ == "__main__":
    main()
