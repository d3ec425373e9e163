"""What every benchmark records beside its figures: the command, the date and the machine."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import threading
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = None
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "python": platform.python_version(),
        "torch": torch_version,
        "platform": platform.platform(),
        "cpu": cpu(),
        "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine while measuring
        "priority": priority(),
    }


def cpu() -> dict[str, str | None]:
    """The processor and the vector instructions PyTorch's kernels use on it: machines of one kind differ, and a
    CPU-second is only comparable with one spent on the same model (docs/benchmarks.md)."""
    model = None
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), None)
    except OSError:
        pass
    try:
        import torch

        capability: str | None = torch.backends.cpu.get_cpu_capability()
    except ImportError:
        capability = None
    return {"model": model or platform.processor() or None, "capability": capability}


def priority() -> dict[str, int | None]:
    """This process's scheduling weight: Linux shares the CPU between autogroups (sessions) by their nice value,
    so a benchmark at autogroup nice -10 beside other work at 19 gets nearly the whole machine even though the
    load average counts that work too."""
    return {"nice": os.nice(0), "autogroup_nice": autogroup_nice("self")}


def autogroup_nice(process: str) -> int | None:
    """The autogroup nice of a process (``/proc/<process>/autogroup`` reads ``/autogroup-<n> nice <value>``), or
    None where the kernel has no autogroups or does not show them (some sandboxes give an empty file)."""
    try:
        words = Path(f"/proc/{process}/autogroup").read_text().split()
    except OSError:
        return None
    if len(words) != 3 or words[1] != "nice":
        return None
    try:
        return int(words[2])
    except ValueError:
        return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(name: str, figures: dict[str, Any], dataset: str) -> Path:
    """Write ``results/<name>.json`` with the figures and how they were produced."""
    RESULTS.mkdir(exist_ok=True)
    payload = {
        **figures,
        "command": " ".join(["python", *sys.argv]),
        "dataset": dataset,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    path = RESULTS / f"{name}.json"
    write_json_atomically(path, payload)
    return path


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader (another thread, a killed invocation's successor) finds the old
    text or the new, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    partial.write_text(text)
    partial.replace(path)


def write_json_atomically(path: Path, record: dict[str, Any]) -> None:
    """``write_atomically`` for one JSON record."""
    write_atomically(path, json.dumps(record, indent=2) + "\n")
