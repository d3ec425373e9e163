"""Load test of ``evorec serve`` with wrk on the ML-1M SASRec model, and a hot swap under load.

The served model is the ML-1M ``sasrec_ce`` trained by ``benchmarks/reproduce_ml1m.py`` (its best
checkpoint), exported for serving; the swapped-in model is ``sasrec_bce`` from the same run. The
server runs as its own process (``evorec serve``); wrk (Debian package ``wrk``) sends
``GET /recommend`` for random ML-1M users. The baseline is a bare top-k per request in this
process (the exported program, masking and ``torch.topk``, no HTTP), measured in the same run.

    python benchmarks/serving.py --concurrency 16 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import write_result

ROOT = Path(__file__).resolve().parent
CHECKPOINTS = ROOT / "state" / "reproduce_ml1m"
SEEDS = ROOT.parent / "offline_agent" / "seeds"
WRK_SCRIPT = """
math.randomseed(7)
local users = {{{users}}}
request = function()
  return wrk.format("GET", "/recommend?user_id=" .. users[math.random(#users)] .. "&k=10")
end
done = function(summary, latency, requests)
  local parts = {{}}
  for _, p in ipairs({{50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100}}) do
    parts[#parts + 1] = string.format("%g=%d", p, latency:percentile(p))
  end
  io.write("latency_us " .. table.concat(parts, " ") .. "\\n")
end
"""
SERVER_HISTOGRAMS = (
    "evorec_request_seconds",
    "evorec_batch_wait_seconds",
    "evorec_batch_scoring_seconds",
    "evorec_batch_size",
    "evorec_event_loop_lag_seconds",
    "evorec_gc_pause_seconds",
)


def export_checkpoint(name: str, prepared: Any, out: Path) -> Path:
    """The reproduce_ml1m best checkpoint of seed ``name`` as a serving artifact."""
    import torch

    from recsys.artifacts import ArtifactManifest, export_scorer, write_artifact
    from recsys.candidate import load_candidate
    from recsys.trainer import Trainer

    candidate = load_candidate(SEEDS / name)
    trainer = Trainer(candidate, prepared)
    model = candidate.function("model", "build_model")(trainer.spec)
    copy = out / f"{name}-best.pt"
    shutil.copy(CHECKPOINTS / name / "best.pt", copy)  # the training run may rewrite it meanwhile
    model.load_state_dict(torch.load(copy, weights_only=True))
    program = export_scorer(model, prepared.num_items, trainer.plan.max_len)
    manifest = ArtifactManifest(name, candidate.content_hash, prepared.name, prepared.num_items, trainer.plan.max_len)
    return write_artifact(out / name, program, manifest)


def baseline(artifact: Path, prepared: Any, requests: int) -> dict[str, float]:
    """Bare top-k per request: the exported program on one user's history, masking, torch.topk."""
    import torch

    from serving.artifacts import load_artifact
    from serving.batcher import rank
    from serving.catalog import ServingCatalog

    model = load_artifact(str(artifact))
    catalog = ServingCatalog.build(prepared)
    rng = np.random.default_rng(7)
    users = rng.integers(0, catalog.sequences.num_users, size=requests)
    rank(model, users[:1], [catalog.sequences.events(int(users[0]))[0]], [10])  # warm-up
    latencies = []
    started = time.perf_counter()
    for user in users:
        begin = time.perf_counter()
        with torch.no_grad():
            rank(model, np.array([user]), [catalog.sequences.events(int(user))[0]], [10])
        latencies.append(time.perf_counter() - begin)
    seconds = time.perf_counter() - started
    return {
        "qps": round(requests / seconds, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2),
    }


def _milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/sec, latency percentiles and failures (non-2xx and socket errors) from ``wrk --latency``."""
    figures = {"qps": float(re.search(r"Requests/sec:\s+([0-9.]+)", output)[1])}  # type: ignore[index]
    for percentile in ("50", "90", "99"):
        figures[f"p{percentile}_ms"] = round(_milliseconds(re.search(rf"\s{percentile}%\s+(\S+)", output)[1]), 2)  # type: ignore[index]
    figures["requests"] = int(re.search(r"(\d+) requests in", output)[1])  # type: ignore[index]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    figures["failed"] = (int(non_2xx[1]) if non_2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    return figures


def wrk_distribution(output: str) -> dict[str, float]:
    """The latency percentiles (ms) the script's ``done`` hook prints, 50 to 100 (the maximum)."""
    line = re.search(r"latency_us (.*)", output)[1]  # type: ignore[index]
    return {f"p{name}_ms": round(int(value) / 1000, 2) for name, value in (pair.split("=") for pair in line.split())}


def scrape_histograms(url: str) -> dict[str, dict[str, float]]:
    """Cumulative bucket counts, count and sum of the server's histograms, one entry per label set."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        if family.name not in SERVER_HISTOGRAMS:
            continue
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            key = family.name + "".join(f"{{{k}={v}}}" for k, v in sorted(labels.items()))
            suffix = sample.name.removeprefix(family.name)
            entry = found.setdefault(key, {})
            entry[f"le_{sample.labels['le']}" if suffix == "_bucket" else suffix.lstrip("_")] = sample.value
    return found


def histogram_delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, Any]:
    """What the server observed between two scrapes, with the share of observations above each bucket."""
    delta: dict[str, Any] = {}
    for key, values in after.items():
        counts = {name: value - before.get(key, {}).get(name, 0.0) for name, value in values.items()}
        total = counts.get("count", 0.0)
        if not total:
            continue
        delta[key] = {
            "count": int(total),
            "sum_seconds": round(counts["sum"], 4),
            "cumulative": {name.removeprefix("le_"): int(v) for name, v in counts.items() if name.startswith("le_")},
        }
    return delta


def run_wrk(url: str, script: Path, concurrency: int, seconds: int) -> tuple[subprocess.Popen[str], list[str]]:
    command = ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True), command


def wait_healthy(url: str, version: int | None = None, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{url}/health", timeout=5)
            if answer.status_code == 200 and (version is None or version in answer.json()["arms"].values()):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become healthy (version {version})")


def promote(registry: Any, artifact: Path, name: str) -> int:
    version = registry.register(candidate_id=name, content_hash=name, artifact_uri=str(artifact), metrics={},
                                actor="benchmark", reason="serving benchmark")  # fmt: skip
    for state in ("queued", "experimenting", "awaiting_approval"):
        registry.transition(version.id, state, actor="benchmark", reason="serving benchmark")
    registry.approve(version.id, actor="benchmark", reason="serving benchmark")
    return int(version.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--baseline-requests", type=int, default=500)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings
    from serving.registry import Registry

    load_start = os.getloadavg()[0]
    prepared = prepared_dataset("ml-1m", get_settings())
    work = Path(tempfile.mkdtemp(prefix="evorec-serving-bench-"))
    served, swapped = export_checkpoint("sasrec_ce", prepared, work), export_checkpoint("sasrec_bce", prepared, work)
    registry_url = f"sqlite:///{work / 'registry.db'}"
    registry = Registry(registry_url)
    first = promote(registry, served, "sasrec_ce")
    script = work / "recommend.lua"
    script.write_text(WRK_SCRIPT.format(users=", ".join(f'"{user}"' for user in prepared.users["user_id"])))
    config = work / "serve.yaml"
    config.write_text(f"serve:\n  registry_url: {registry_url}\n  dataset: ml-1m\n  reload_seconds: 1.0\n")
    url = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "evorec", "serve", "--config", str(config), "--port", str(args.port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_healthy(url, first)
        run_wrk(url, script, args.concurrency, 3)[0].communicate()  # warm-up
        before = scrape_histograms(url)
        process, command = run_wrk(url, script, args.concurrency, args.seconds)
        load_output = process.communicate()[0]
        load = parse_wrk(load_output)
        server_side = histogram_delta(before, scrape_histograms(url))
        process, _ = run_wrk(url, script, args.concurrency, args.seconds)
        time.sleep(args.seconds / 3)
        second = promote(registry, swapped, "sasrec_bce")
        swap_output = process.communicate()[0]
        wait_healthy(url, second, timeout=30)
        swap = parse_wrk(swap_output)
    finally:
        server.terminate()
        server.wait(timeout=30)
    base = baseline(served, prepared, args.baseline_requests)
    figures = {
        "qps": load["qps"],
        "p50_ms": load["p50_ms"],
        "p90_ms": load["p90_ms"],
        "p99_ms": load["p99_ms"],
        "requests": load["requests"],
        "failed_requests": load["failed"],
        "concurrency": args.concurrency,
        "duration_seconds": args.seconds,
        "baseline_qps": base["qps"],
        "baseline_p50_ms": base["p50_ms"],
        "baseline_p99_ms": base["p99_ms"],
        "qps_ratio_to_baseline": round(load["qps"] / base["qps"], 3),
        "hot_swap_failed_requests": swap["failed"],
        "hot_swap_requests": swap["requests"],
        "hot_swap_qps": swap["qps"],
        "model": "sasrec_ce (ML-1M, reproduce_ml1m best checkpoint), swapped for sasrec_bce",
        "load_generator": " ".join(command[:-3]) + " -s recommend.lua URL (random users, k=10)",
        "load_average_1m_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }
    tail = {
        "client_latency_percentiles": wrk_distribution(load_output),
        "server_histograms": server_side,
        "load_generator": figures["load_generator"],
        "note": "cumulative counts per upper bucket bound (seconds; batch size in requests), from the server's "
        "/metrics, scraped before and after the measured wrk run",
    }
    write_result("serving_tail", tail, "ml-1m")
    print(write_result("serving", figures, "ml-1m").read_text())
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
