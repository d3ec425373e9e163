"""Inner loop: candidates, program database, LLM proposers, sandboxed evaluation, diagnosis, critiques."""
