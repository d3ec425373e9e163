"""What judging outside the sandbox costs, and that honest candidates score the same.

Two evaluations of the same seed, same epochs, alternated in the same run so that load from other
work falls on both alike:

- ``judged``: ``evaluate_candidate`` as evolution runs it: the sandbox trains on a view of the data
  without the held-out targets and hands ranked lists to the judge in this process;
- ``in_sandbox``: the design before it, for comparison: the same cascade (smoke run, then training)
  where the sandboxed trainer holds the whole prepared dataset (copied into its work dir, as the judged
  path copies its view: the sandbox reaches nothing else) and computes its own metrics.

    python benchmarks/evaluation_integrity.py --dataset ml-latest-small --seed-candidate sasrec_bce --epochs 2
    python benchmarks/evaluation_integrity.py --dataset ml-1m --seed-candidate sasrec_bce --epochs 1

The result (``results/evaluation_integrity.json``) keeps one entry per dataset: seconds of each
path per evaluation, their ratio, and whether every validation and test metric agrees.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, write_result
from offline_agent.evaluator import EvaluationConfig, evaluate_candidate
from offline_agent.sandbox import SandboxLimits, run_sandboxed
from recsys.candidate import load_candidate
from recsys.compile_cache import CACHE_ENV, copy_cache, warm_cache

SEEDS = Path(__file__).resolve().parent.parent / "offline_agent" / "seeds"
IN_SANDBOX_ENTRY = """\
import json
from pathlib import Path

from recsys.candidate import load_candidate
from recsys.compile_cache import CACHE_ENV, copy_cache, warm_cache
from recsys.data.prepared import PreparedDataset
from recsys.trainer import Trainer, TrainerConfig

job = json.loads(Path("job.json").read_text())
prepared = PreparedDataset.open(Path("data"), verify=False)
result = Trainer(load_candidate(Path("candidate")), prepared, TrainerConfig(progress=False, **job)).fit()
Path("result.json").write_text(json.dumps(result.to_json()))
"""


def in_sandbox(sources: dict[str, str], config: EvaluationConfig) -> dict[str, Any]:
    """The earlier cascade: the sandboxed trainer reads the full dataset and reports its own metrics."""
    common = {"seed": config.seed, "threads": config.threads}
    stages = [
        ({**common, "max_users": config.smoke_users, "max_epochs": 1, "budget_seconds": config.smoke_seconds},
         config.smoke_seconds + config.overhead_seconds),
        ({**common, "max_epochs": config.max_epochs, "budget_seconds": config.train_seconds},
         config.train_seconds + config.overhead_seconds),
    ]  # fmt: skip
    output: dict[str, Any] = {}
    warm = warm_cache(config.threads)
    with tempfile.TemporaryDirectory(prefix="in-sandbox-") as root:
        for index, (job, wall) in enumerate(stages):
            work = Path(root) / f"stage-{index}"
            (work / "candidate").mkdir(parents=True)
            shutil.copytree(config.dataset, work / "data")
            env = {"OMP_NUM_THREADS": str(config.threads)}
            if warm is not None and copy_cache(warm, work / "compile-cache"):  # as the judged path's sandboxes
                env[CACHE_ENV] = str(work / "compile-cache")
            for block, source in sources.items():
                (work / "candidate" / f"{block}.py").write_text(source)
            (work / "job.json").write_text(json.dumps(job))
            limits = SandboxLimits(wall_seconds=wall, memory_bytes=int(config.memory_gib * 2**30))
            outcome = run_sandboxed(IN_SANDBOX_ENTRY, work, limits, env)
            if outcome.status != "ok" or outcome.output is None:
                raise SystemExit(f"the in-sandbox evaluation failed: {outcome.status}: {outcome.reason}")
            output = outcome.output
    return output


def agree(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-12) for k in a
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--seed-candidate", default="sasrec_bce", help="a seed under offline_agent/seeds")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="evaluations of each path, alternated")
    args = parser.parse_args()

    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings

    prepared = prepared_dataset(args.dataset, get_settings())
    sources = dict(load_candidate(SEEDS / args.seed_candidate).sources)
    seconds: dict[str, list[float]] = {"judged": [], "in_sandbox": []}
    agreement = []
    with tempfile.TemporaryDirectory(prefix="judged-") as work:
        config = EvaluationConfig(
            dataset=str(prepared.path), max_epochs=args.epochs, train_seconds=36_000, overhead_seconds=3_600,
            diagnose=False, work_dir=work,
        )  # fmt: skip
        for repeat in range(args.repeats):
            started = time.monotonic()
            judged = evaluate_candidate(sources, config)
            seconds["judged"].append(time.monotonic() - started)
            if judged.status != "evaluated" or judged.valid is None or judged.test is None:
                raise SystemExit(f"the judged evaluation failed: {judged.reason}")
            started = time.monotonic()
            own = in_sandbox(sources, config)
            seconds["in_sandbox"].append(time.monotonic() - started)
            agreement.append(agree(judged.valid, own["valid"]) and agree(judged.test, own["test"]))
            test_ndcg = judged.test["ndcg@10"]
            print(f"repeat {repeat}: judged {seconds['judged'][-1]:.1f} s, in sandbox {seconds['in_sandbox'][-1]:.1f} "
                  f"s, metrics agree: {agreement[-1]} (test ndcg@10 {test_ndcg:.4f})", flush=True)  # fmt: skip
    mean = {path: sum(values) / len(values) for path, values in seconds.items()}
    entry = {
        "seed_candidate": args.seed_candidate,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "judged_seconds_per_evaluation": round(mean["judged"], 2),
        "in_sandbox_seconds_per_evaluation": round(mean["in_sandbox"], 2),
        "judged_over_in_sandbox": round(mean["judged"] / mean["in_sandbox"], 3),
        "seconds": {path: [round(v, 2) for v in values] for path, values in seconds.items()},
        "metrics_agree": all(agreement),
        "test_ndcg10": test_ndcg,
    }
    previous = RESULTS / "evaluation_integrity.json"
    datasets = json.loads(previous.read_text()).get("datasets", {}) if previous.exists() else {}
    datasets[args.dataset] = entry
    path = write_result("evaluation_integrity", {"datasets": datasets}, ", ".join(sorted(datasets)))
    print(f"{path}: {json.dumps(entry)}")


if __name__ == "__main__":
    main()
