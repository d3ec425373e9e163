"""Recorded replies, returned in order: deterministic proposers for tests and demonstrations."""

from __future__ import annotations

import json
from pathlib import Path

from offline_agent.llm.base import LLMConfig, LLMError, LLMReply


class ReplayLLM:
    """Reads a JSON Lines file of ``{"text": ..., "prompt_tokens": ..., "output_tokens": ...}``."""

    def __init__(self, config: LLMConfig) -> None:
        if not config.replay_file:
            raise LLMError("the replay provider needs replay_file")
        path = Path(config.replay_file)
        try:
            self.replies = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, json.JSONDecodeError) as exc:
            raise LLMError(f"{path}: cannot read recorded replies: {exc}") from exc
        self.config = config
        self.name = f"replay:{path.name}"
        self.position = 0

    def generate(self, system: str, prompt: str) -> LLMReply:
        if self.position >= len(self.replies):
            raise LLMError(f"{self.name}: all {len(self.replies)} recorded replies are used")
        record = self.replies[self.position]
        self.position += 1
        prompt_tokens, output_tokens = int(record.get("prompt_tokens", 0)), int(record.get("output_tokens", 0))
        cost = self.config.cost(prompt_tokens, output_tokens)
        return LLMReply(str(record["text"]), self.config.model, prompt_tokens, output_tokens, cost)
