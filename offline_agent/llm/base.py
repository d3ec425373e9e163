"""The protocol every language model implements, the spend budget, and retrying.

Providers raise :class:`LLMError` when the service fails for good (after retries) or answers
something unusable; the evolution loop records the reason and goes on. :class:`Spend` ends a run
cleanly with :class:`BudgetExhausted` once its token or dollar budget is used.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from recsys.errors import ConfigError, EvorecError

T = TypeVar("T")


class LLMError(EvorecError):
    """The model service failed or replied with nothing usable."""


class BudgetExhausted(EvorecError):
    """The run's token or dollar budget is spent."""


@dataclass(frozen=True)
class LLMReply:
    text: str
    model: str
    prompt_tokens: int
    output_tokens: int
    cost_usd: float


class LLM(Protocol):
    name: str

    def generate(self, system: str, prompt: str) -> LLMReply: ...


class LLMConfig(BaseModel):
    """Which model to call and how. Prices are USD per million tokens (list prices; override them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["gemini", "openai", "replay"] = "gemini"
    model: str = "gemini-2.5-flash"
    base_url: str | None = None
    api_key_env: str = Field(default="GEMINI_API_KEY", description="the environment variable holding the key")
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_output_tokens: int = Field(default=8192, ge=1)
    timeout_seconds: float = Field(default=120, gt=0)
    max_attempts: int = Field(default=6, ge=1)
    backoff_seconds: float = Field(default=2.0, ge=0)
    usd_per_million_input: float = Field(default=0.30, ge=0)
    usd_per_million_output: float = Field(default=2.50, ge=0)
    replay_file: str | None = None

    def api_key(self, required: bool = True) -> str | None:
        """The key, read from the environment only when a provider needs it; never logged."""
        key = os.environ.get(self.api_key_env)
        if required and not key:
            raise ConfigError(f"the {self.provider} proposer needs an API key in ${self.api_key_env}")
        return key

    def cost(self, prompt_tokens: int, output_tokens: int) -> float:
        return (prompt_tokens * self.usd_per_million_input + output_tokens * self.usd_per_million_output) / 1e6


@dataclass
class Spend:
    """Tokens and dollars spent so far against hard limits (None: unlimited)."""

    max_usd: float | None = None
    max_tokens: int | None = None
    usd: float = 0.0
    tokens: int = 0
    calls: int = 0

    def check(self) -> None:
        if self.max_usd is not None and self.usd >= self.max_usd:
            raise BudgetExhausted(f"spent ${self.usd:.4f} of the ${self.max_usd:.2f} budget")
        if self.max_tokens is not None and self.tokens >= self.max_tokens:
            raise BudgetExhausted(f"spent {self.tokens} of the {self.max_tokens} token budget")

    def charge(self, reply: LLMReply) -> None:
        self.usd += reply.cost_usd
        self.tokens += reply.prompt_tokens + reply.output_tokens
        self.calls += 1


def with_retries(call: Callable[[], T], retryable: Callable[[BaseException], bool], config: LLMConfig) -> T:
    """``call()``, retried on ``retryable`` errors with exponential backoff and full jitter."""
    retrying = Retrying(
        stop=stop_after_attempt(config.max_attempts),
        wait=wait_exponential_jitter(initial=config.backoff_seconds, max=60, jitter=config.backoff_seconds),
        retry=retry_if_exception(retryable),
        reraise=True,
    )
    return retrying(call)
