"""Inner loop: candidates, program database, LLM proposers, sandboxed evaluation, diagnosis, critiques."""

from pathlib import Path

SEEDS = Path(__file__).resolve().parent / "seeds"  # the shipped seed candidates
