"""Provider name → implementation; new providers register here."""

from __future__ import annotations

from collections.abc import Callable

from offline_agent.llm.base import LLM, LLMConfig
from offline_agent.llm.gemini import GeminiLLM
from offline_agent.llm.openai_compat import OpenAICompatibleLLM
from offline_agent.llm.redacted import RedactedLLM
from offline_agent.llm.replay import ReplayLLM

PROVIDERS: dict[str, Callable[[LLMConfig], LLM]] = {
    "gemini": GeminiLLM,
    "openai": OpenAICompatibleLLM,
    "replay": ReplayLLM,
}


def build_llm(config: LLMConfig) -> LLM:
    """The configured provider behind the redactor (:mod:`offline_agent.llm.redacted`)."""
    return RedactedLLM(PROVIDERS[config.provider](config))
