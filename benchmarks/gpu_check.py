"""Train sasrec_ce for a few epochs on a CUDA GPU and report epoch seconds and validation NDCG@10.

It checks that the trainer's device path works end to end on a GPU: the candidate's TorchRec
``EmbeddingCollection`` and ``KeyedJaggedTensor`` ops on CUDA (fbgemm-gpu's CUDA kernels),
bfloat16 autocast, the chunked cross-entropy and evaluation. Where CUDA is absent it says so and
exits 0, so it is safe anywhere; the result goes to the JSON file named on the command line (the
lead merges it into ``benchmarks/results/train_speed.json`` under ``gpu``).

One command on the GPU machine, from the repository root, once the environment is installed:

    .venv/bin/python benchmarks/gpu_check.py gpu_check.json [--epochs 5] [--dataset ml-1m]

Installing on a GPU machine without internet. The CPU environment of this project uses
``fbgemm-gpu-cpu``; a GPU needs the CUDA build ``fbgemm-gpu`` of the same version as the CPU one,
built for the same torch: torch 2.13.0 pairs with fbgemm-gpu 1.8.0 and torchrec 1.8.0 (the pins in
``requirements/``; fbgemm-gpu 1.9.0 pairs with torch 2.14). PyPI's ``torch==2.13.0`` wheel for
Linux x86-64 is a CUDA build and pulls its ``nvidia-*`` libraries; PyPI's ``fbgemm-gpu`` wheel is
the CUDA build. fbgemm-gpu's CUDA version must match torch's; this script checks a fbgemm CUDA
kernel before it trains and names the mismatch if there is one.

1. On a machine with internet, from the repository root (Linux x86-64, CPython 3.11):
   ``bash benchmarks/gpu_wheels.sh`` downloads every wheel into ``wheels/gpu/`` (several GB: torch's
   CUDA libraries; do not commit it). Carry the repository with ``wheels/gpu/`` to the GPU machine.
2. On the GPU machine (CUDA driver new enough for torch's CUDA, Python 3.11)::

       python3.11 -m venv .venv
       .venv/bin/pip install --no-index --find-links wheels/gpu -r requirements/lock.txt
       .venv/bin/pip install --no-index --find-links wheels/gpu --no-deps fbgemm-gpu==1.8.0 torchrec==1.8.0
       .venv/bin/pip install --no-index --no-deps --no-build-isolation -e .

3. The prepared ML-1M folder (``~/.cache/evorec/prepared/ml-1m``, made by ``evorec data prepare``)
   is carried along too, or made there from a carried download; ``EVOREC_DATA_DIR`` points at it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SEED = Path(__file__).resolve().parent.parent / "offline_agent" / "seeds" / "sasrec_ce"


def fbgemm_on_cuda() -> str | None:
    """None when fbgemm's jagged kernels run on the GPU, else what is wrong."""
    try:
        import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)

        values = torch.arange(6.0, device="cuda")[:, None]
        offsets = torch.tensor([0, 2, 6], device="cuda")
        dense = torch.ops.fbgemm.jagged_to_padded_dense(values, [offsets], [4])
        return None if dense.shape == (2, 4, 1) else f"unexpected jagged_to_padded_dense shape {tuple(dense.shape)}"
    except Exception as exc:  # the message names the missing kernel or library
        return f"fbgemm-gpu has no working CUDA kernels here ({type(exc).__name__}: {exc}); install the CUDA build"


def run(dataset: str, epochs: int) -> dict[str, Any]:
    from recsys.candidate import load_candidate
    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings
    from recsys.trainer import Trainer, TrainerConfig

    prepared = prepared_dataset(dataset, get_settings())
    trainer = Trainer(load_candidate(SEED), prepared, TrainerConfig(max_epochs=epochs, device="cuda", progress=False))
    started = time.perf_counter()
    result = trainer.fit()
    seconds = [line["seconds"] for line in result.history]
    return {
        "device": torch.cuda.get_device_name(),
        "precision": trainer.precision.describe(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "dataset": dataset,
        "epochs": result.epochs,
        "epoch_seconds": [round(b - a, 2) for a, b in zip([0.0, *seconds], seconds, strict=False)],
        "note": "epoch seconds include each epoch's validation pass; the first includes warm-up",
        "valid_ndcg10": [line["valid_ndcg@10"] for line in result.history],
        "best_valid_ndcg10": round(result.valid["ndcg@10"], 5),
        "test_ndcg10": round(result.test["ndcg@10"], 5),
        "total_seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="where to write the JSON result")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--dataset", default="ml-1m")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        result: dict[str, Any] = {"skipped": "no CUDA device on this machine (torch sees none)"}
        print(result["skipped"])
    elif (problem := fbgemm_on_cuda()) is not None:
        print(problem, file=sys.stderr)
        sys.exit(1)
    else:
        result = run(args.dataset, args.epochs)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
