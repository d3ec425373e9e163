"""A candidate killed on cue for tests: its sandbox stops at a limit after it has saved some epochs."""

from __future__ import annotations

from pathlib import Path

from recsys.candidate import load_candidate


def stalling_candidate(seeds_dir: Path, saved_epochs: int) -> dict[str, str]:
    """mf_bpr that, in the first invocation of its training only, hangs before a batch once it has saved
    ``saved_epochs`` epochs: as a sandbox stopped at a limit (wall clock, memory) is killed."""
    sources = dict(load_candidate(seeds_dir / "mf_bpr").sources)
    sources["loss"] = (
        "import json as _json, pathlib as _pathlib, time as _time\n"
        "_NOTE = _pathlib.Path('checkpoint/saved_epoch.json')\n"
        "_START = _json.loads(_NOTE.read_text())['epoch'] if _NOTE.exists() else 0\n"
        "def _stall():\n"
        "    saved = _json.loads(_NOTE.read_text())['epoch'] if _NOTE.exists() else 0\n"
        f"    if _START == 0 and saved >= {saved_epochs}:\n"
        "        _time.sleep(3600)\n"
    ) + sources["loss"].replace("states = model(batch)", "_stall()\n        states = model(batch)")
    return sources
