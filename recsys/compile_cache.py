"""A warm ``torch.compile`` cache for sandboxed trainings, built by trusted code and copied into each sandbox.

The trainer's fast path compiles its cross-entropy kernels (:mod:`recsys.fast_losses`). A sandbox starts
with an empty cache, so every evaluation paid that compile again (tens of seconds; as much as a short
training on ML-1M). Here the kernels are compiled once per machine and torch version, in a process of
their own that runs only this module (never candidate code), into the user's cache folder (beside pip's:
``$XDG_CACHE_HOME/evorec-compile``, shared by every data dir; sandboxes never see it); each sandbox
gets a private copy (``TORCHINDUCTOR_CACHE_DIR``), so nothing one
candidate writes there reaches another. The kernels are compiled with dynamic shapes: one warm-up
serves other embedding sizes and catalogues too.

    python -m recsys.compile_cache FOLDER     # what :func:`warm_cache` runs
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
WARM_SECONDS = 600  # the compile takes about a minute on two loaded cores


def cache_folder(threads: int) -> Path:
    """Where this machine's warm cache lives: one per torch version, interpreter and thread count (the
    compiled kernels depend on it, so the cache only hits for sandboxes with as many threads)."""
    import torch

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "evorec-compile"
    key = hashlib.sha256(f"{torch.__version__}|{sys.version}|{sys.executable}".encode()).hexdigest()[:16]
    return root / f"{key}-{threads}-threads"


def warm_cache(threads: int) -> Path | None:
    """The warm cache folder for sandboxes running ``threads`` threads, compiled first if missing; None
    where compiling fails (the sandboxes then compile for themselves)."""
    folder = cache_folder(threads)
    if (folder / ".complete").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".warming-", dir=folder.parent))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "recsys.compile_cache", str(scratch)],
            env={
                **os.environ,
                CACHE_ENV: str(scratch),
                "OMP_NUM_THREADS": str(threads),
                "MKL_NUM_THREADS": str(threads),
            },
            capture_output=True,
            timeout=WARM_SECONDS,
            check=False,
        )
        if done.returncode != 0 or not (scratch / ".complete").exists():
            return None
        with contextlib.suppress(OSError):  # another process finished first: its cache serves as well
            scratch.replace(folder)
        return folder if (folder / ".complete").exists() else None
    except subprocess.TimeoutExpired:
        return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def copy_cache(folder: Path, target: Path) -> bool:
    """A sandbox's private copy of the warm cache; False where it could not be made (the folder was
    removed meanwhile: the sandbox compiles for itself)."""
    try:
        shutil.copytree(folder, target, symlinks=True)
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        return False
    return True


def _compile_kernels() -> None:
    """Run the fast path's cross-entropy forward and backward under bfloat16 as a trainer's step does: several
    full chunks and a short one. (Toy sizes compile graphs the trainer's sizes do not hit in the cache.)"""
    import torch

    from recsys.fast_losses import CHUNK_ROWS, full_softmax_cross_entropy

    generator = torch.Generator().manual_seed(0)
    for rows in (CHUNK_ROWS + 904, 3 * CHUNK_ROWS + 17):
        hidden = torch.randn(rows, 64, generator=generator, requires_grad=True)
        table = torch.randn(3417, 64, generator=generator, requires_grad=True)
        targets = torch.randint(1, 3417, (rows,), generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = full_softmax_cross_entropy(hidden, table, targets, torch.ones(rows))
        loss.backward()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    _compile_kernels()
    from recsys.fast_losses import compile_failure

    if compile_failure() is None:
        (Path(sys.argv[1]) / ".complete").write_text("")
