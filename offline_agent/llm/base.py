"""The protocol every language model implements, the spend budget, and retrying.

Providers raise :class:`LLMError` when the service fails for good (after retries) or answers
something unusable; the evolution loop records the reason and goes on. :class:`Spend` makes a call
only when the budget holds the most it may cost, charges what the provider reports it billed (for
a refused or empty reply too), and ends a run cleanly with :class:`BudgetExhausted`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from tenacity import Retrying, before_sleep_log, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from recsys.errors import ConfigError, EvorecError
from recsys.redaction import remember

T = TypeVar("T")
log = logging.getLogger(__name__)
PROVIDER_KEYS = {"gemini": "GEMINI_API_KEY", "openai": "OPENAI_API_KEY"}  # for the provider's own service only
BYTES_PER_TOKEN = 3  # a generous estimate: tokenizers give about four bytes of English or three of code per token


@dataclass(frozen=True)
class LLMReply:
    text: str
    model: str
    prompt_tokens: int
    output_tokens: int
    cost_usd: float


class LLMError(EvorecError):
    """The model service failed or replied with nothing usable. ``billed``: what the provider reported
    charging for the call all the same (a refused or empty reply bills its prompt), if it did."""

    def __init__(self, message: str, billed: LLMReply | None = None) -> None:
        super().__init__(message)
        self.billed = billed


class BudgetExhausted(EvorecError):
    """The run's token or dollar budget is spent."""


class LLMConfig(BaseModel):
    """Which model to call and how. Prices are USD per million tokens (list prices; override them).

    A key goes only where it was configured to go: ``api_key_env`` defaults to the provider's own
    variable (``GEMINI_API_KEY``, ``OPENAI_API_KEY``) only when ``base_url`` is left to the provider's
    own service; any other ``base_url`` gets no key unless ``api_key_env`` names one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["gemini", "openai", "replay"] = "gemini"
    model: str = "gemini-2.5-flash"
    base_url: str | None = None
    api_key_env: str | None = Field(
        default=None,
        description="the environment variable holding the key; default: the provider's own when base_url is "
        "its own service, none for any other base_url",
    )
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_output_tokens: int = Field(default=8192, ge=1)
    timeout_seconds: float = Field(default=120, gt=0)
    max_attempts: int = Field(default=6, ge=1)
    backoff_seconds: float = Field(default=2.0, ge=0)
    usd_per_million_input: float = Field(default=0.30, ge=0)
    usd_per_million_output: float = Field(default=2.50, ge=0)
    replay_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _provider_key(cls, data: Any) -> Any:
        """The provider's own key variable, for the provider's own service only."""
        if isinstance(data, dict) and data.get("api_key_env") is None and not data.get("base_url"):
            variable = PROVIDER_KEYS.get(str(data.get("provider", "gemini")))
            if variable is not None:
                return {**data, "api_key_env": variable}
        return data

    def api_key(self) -> str | None:
        """The key from the variable this config names (None when it names none), read when a provider
        is built and redacted by value from then on (:mod:`recsys.redaction`); never logged."""
        if self.api_key_env is None:
            return None
        key = remember(self.api_key_env)
        if not key:
            raise ConfigError(f"the {self.provider} model {self.model} needs an API key in ${self.api_key_env}")
        return key.strip()

    def gave_up(self) -> str:
        """How a failure that outlasted every retry begins its reason."""
        return f"gave up after {self.max_attempts} attempt{'s' if self.max_attempts > 1 else ''}"

    def cost(self, prompt_tokens: int, output_tokens: int) -> float:
        return (prompt_tokens * self.usd_per_million_input + output_tokens * self.usd_per_million_output) / 1e6

    def most_a_call_costs(self, system: str, prompt: str) -> tuple[int, float]:
        """Tokens and dollars one call may spend at most: its prompt (estimated generously from its
        bytes) and the longest reply it allows."""
        prompt_tokens = math.ceil(len((system + prompt).encode()) / BYTES_PER_TOKEN)
        return prompt_tokens + self.max_output_tokens, self.cost(prompt_tokens, self.max_output_tokens)


class LLM(Protocol):
    name: str
    config: LLMConfig

    def generate(self, system: str, prompt: str) -> LLMReply: ...


@dataclass
class Spend:
    """Tokens and dollars spent so far against hard limits (None: unlimited)."""

    max_usd: float | None = None
    max_tokens: int | None = None
    usd: float = 0.0
    tokens: int = 0
    calls: int = 0

    def check(self, tokens_ahead: int = 0, usd_ahead: float = 0.0) -> None:
        """Raise unless the budget holds what is spent plus what the next call may cost."""
        if self.max_usd is not None and (self.usd >= self.max_usd or self.usd + usd_ahead > self.max_usd):
            ahead = f"; the next call may cost ${usd_ahead:.4f}" if usd_ahead else ""
            raise BudgetExhausted(f"spent ${self.usd:.4f} of the ${self.max_usd:.2f} budget{ahead}")
        limit = self.max_tokens
        if limit is not None and (self.tokens >= limit or self.tokens + tokens_ahead > limit):
            ahead = f"; the next call may take {tokens_ahead}" if tokens_ahead else ""
            raise BudgetExhausted(f"spent {self.tokens} of the {self.max_tokens} token budget{ahead}")

    def charge(self, reply: LLMReply) -> None:
        self.usd += reply.cost_usd
        self.tokens += reply.prompt_tokens + reply.output_tokens
        self.calls += 1

    def ask(self, llm: LLM, system: str, prompt: str) -> LLMReply:
        """One call within the budget: made only when the budget holds the most it may cost, and charged
        what the provider reports, for a reply that is refused or empty too."""
        self.check(*llm.config.most_a_call_costs(system, prompt))
        try:
            reply = llm.generate(system, prompt)
        except LLMError as exc:
            if exc.billed is not None:
                self.charge(exc.billed)
            raise
        self.charge(reply)
        return reply


def with_retries(call: Callable[[], T], retryable: Callable[[BaseException], bool], config: LLMConfig) -> T:
    """``call()``, retried on ``retryable`` errors with exponential backoff and full jitter."""
    retrying = Retrying(
        stop=stop_after_attempt(config.max_attempts),
        wait=wait_exponential_jitter(initial=config.backoff_seconds, max=60, jitter=config.backoff_seconds),
        retry=retry_if_exception(retryable),
        before_sleep=before_sleep_log(log, logging.INFO),
        reraise=True,
    )
    return retrying(call)
