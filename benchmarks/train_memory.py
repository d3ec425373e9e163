"""Why a long CPU training's resident size grows, and what holding it down would cost.

PyTorch allocates CPU tensors through glibc's ``malloc``. Batches bucketed by history length come in
many shapes, so the blocks freed by one step rarely fit the next step's requests exactly; glibc keeps
them in its heap and returns only free memory at its top. glibc also gives a block a mapping of its own
(unmapped when freed) only above a threshold that it raises, up to 32 MiB, to the size of each mapped
block freed: after a few steps a training's activations all live in the heap. The ML-1M race's
optuna final 73e5691f (the seed ``sasrec_bce`` with :data:`RACE_FINAL`) stood at 6.8 GB in its sandbox;
``malloc_trim(0)``, called into it with gdb, brought it to 2.7 GB, and within a minute it was back at
6.9 GB. Another final was killed by its sandbox's 8 GiB limit after 128 epochs in one process.

The arms train that program on ML-1M from the same seed, one thread each, one after another (``--arms``):
``kept`` is the trainer as it is; ``released`` returns the heap's free pages after each epoch
(``malloc_trim(0)``); ``mapped`` also maps every block of :data:`LARGE_BLOCK_BYTES` or more apart
(``mallopt(M_MMAP_THRESHOLD)``); ``mapped_huge_pages`` also has PyTorch align those blocks to
transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``). A thread samples each arm's resident size every
0.2 s. Per arm and epoch: the resident size at the epoch's end (before that epoch's release), its peak
during the epoch, the epoch's seconds; against ``kept``, the ratios and whether the losses are
identical (the allocator must not change training).

    benchmarks/foreground.sh python benchmarks/train_memory.py [--epochs 6] [--arms kept mapped_huge_pages]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import write_result

SEED = Path(__file__).resolve().parent.parent / "offline_agent" / "seeds" / "sasrec_bce"
RACE_FINAL = {
    "model.DIM": 224,
    "model.BLOCKS": 4,
    "model.HEADS": 1,
    "model.DROPOUT": 0.4,
    "optim.LEARNING_RATE": 0.0001724,
    "optim.BATCH_SIZE": 128,
    "optim.WEIGHT_DECAY": 1e-06,
}
"""The ML-1M race's optuna final 73e5691f: the values its trial wrote into the seed."""

M_MMAP_THRESHOLD = -3
"""``mallopt``'s parameter for the size from which a block gets a mapping of its own (``malloc.h``)."""
LARGE_BLOCK_BYTES = 4 * 2**20
"""A step's activations (tens of MB on ML-1M) are above it; small layers' weights and batch indices below."""


@dataclass(frozen=True)
class Arm:
    """How an arm's process allocates: large blocks mapped apart from the heap, the heap's free pages released
    after each epoch, and PyTorch's own environment switches (read when it starts)."""

    mapped: bool
    released: bool
    environment: tuple[tuple[str, str], ...] = ()


ARMS = {
    "kept": Arm(mapped=False, released=False),
    "released": Arm(mapped=False, released=True),
    "mapped": Arm(mapped=True, released=True),
    "mapped_huge_pages": Arm(mapped=True, released=True, environment=(("THP_MEM_ALLOC_ENABLE", "1"),)),
}
SAMPLE_SECONDS = 0.2


class ResidentSampler:
    """The trainer's epoch log: the process's resident size, sampled in a thread, per epoch; after each epoch
    the heap's free pages are returned where ``release`` asks for it."""

    def __init__(self, libc: ctypes.CDLL, release: bool) -> None:
        import psutil

        self._process = psutil.Process()
        self._libc, self._release = libc, release
        self._peak = 0
        self._lock = threading.Lock()
        self.epochs: list[dict[str, float]] = []
        self._started = time.monotonic()
        threading.Thread(target=self._sample, daemon=True).start()

    def _resident(self) -> int:
        return int(self._process.memory_info().rss)

    def _sample(self) -> None:
        while True:
            resident = self._resident()
            with self._lock:
                self._peak = max(self._peak, resident)
            time.sleep(SAMPLE_SECONDS)

    def write(self, text: str) -> None:
        """The trainer's epoch log: each line ends an epoch."""
        for line in filter(None, text.splitlines()):
            now, resident = time.monotonic(), self._resident()
            with self._lock:
                peak, self._peak = max(self._peak, resident), 0
            self.epochs.append(
                {
                    "epoch": json.loads(line)["epoch"],
                    "seconds": round(now - self._started, 2),
                    "loss": json.loads(line)["loss"],
                    "resident_mb_at_end": round(resident / 2**20, 1),
                    "peak_resident_mb": round(peak / 2**20, 1),
                }
            )
            self._started = now  # the release counts in the next epoch's seconds
            if self._release:
                self._libc.malloc_trim(0)

    def flush(self) -> None:
        """Nothing is buffered."""


def train_arm(arm: str, dataset: str, epochs: int) -> dict[str, Any]:
    """Train :data:`RACE_FINAL` for ``epochs`` in this process, allocating as ``arm`` says."""
    from offline_agent.search_space import declared_space, with_values
    from recsys.candidate import Candidate, load_candidate
    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings
    from recsys.trainer import Trainer, TrainerConfig

    libc = ctypes.CDLL(None)  # glibc: the arms that change nothing run everywhere, the others need it
    if ARMS[arm].mapped and libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES) != 1:
        raise SystemExit("train_memory: mallopt refused the threshold")
    seed = load_candidate(SEED)
    space = declared_space(seed.sources)
    written = {t.key: t.domain.written(RACE_FINAL[t.key]) for t in space}
    folder = Path(tempfile.mkdtemp(prefix="evorec-train-memory-"))
    Candidate("race_final", "", with_values(seed.sources, space, written), {}).write(folder)
    sampler = ResidentSampler(libc, ARMS[arm].released)
    config = TrainerConfig(max_epochs=epochs, threads=1, progress=False)
    epoch_log = cast(TextIO, sampler)  # the trainer only writes and flushes it
    Trainer(load_candidate(folder), prepared_dataset(dataset, get_settings()), config, epoch_log).fit()
    return {"epochs": sampler.epochs}


def summary(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per arm the epochs and their extremes; each other arm against ``kept`` (the trainer as it is)."""
    arms: dict[str, Any] = {}
    for arm, run in runs.items():
        epochs = run["epochs"]
        later = [e["seconds"] for e in epochs[1:]] or [epochs[0]["seconds"]]
        arms[arm] = {
            "epochs": epochs,
            "max_peak_resident_mb": max(e["peak_resident_mb"] for e in epochs),
            "last_resident_mb_at_end": epochs[-1]["resident_mb_at_end"],
            "mean_seconds_per_epoch_after_first": round(sum(later) / len(later), 2),
        }
    kept = arms.get("kept")
    return {
        "program": {"seed": "sasrec_bce", "values": RACE_FINAL},
        "arms": arms,
        "against_kept": {
            arm: {
                "peak_ratio": round(figures["max_peak_resident_mb"] / kept["max_peak_resident_mb"], 3),
                "epoch_seconds_ratio": round(
                    figures["mean_seconds_per_epoch_after_first"] / kept["mean_seconds_per_epoch_after_first"], 3
                ),
                "losses_identical": [e["loss"] for e in figures["epochs"]] == [e["loss"] for e in kept["epochs"]],
            }
            for arm, figures in arms.items()
            if kept is not None and arm != "kept"
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=["kept", "mapped_huge_pages"])
    parser.add_argument("--arm", choices=list(ARMS), help=argparse.SUPPRESS)  # one arm, in a process of its own
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(train_arm(args.arm, args.dataset, args.epochs)))
        return
    command = [sys.executable, __file__, "--dataset", args.dataset, "--epochs", str(args.epochs), "--arm"]
    runs = {}
    for arm in args.arms:  # one after another: side by side, their footprints would add up
        environment = {**os.environ, **dict(ARMS[arm].environment)}
        process = subprocess.run([*command, arm], stdout=subprocess.PIPE, text=True, env=environment)
        if process.returncode:
            raise SystemExit(f"train_memory: the {arm} arm failed (exit {process.returncode}); its log is above")
        runs[arm] = json.loads(process.stdout.splitlines()[-1])
    print(write_result("train_memory", summary(runs), args.dataset).read_text())


if __name__ == "__main__":
    main()
