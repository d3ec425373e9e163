"""Any OpenAI-compatible chat endpoint: vLLM, Ollama, llama.cpp server, or a hosted API.

Without ``base_url`` the calls go to OpenAI with ``$OPENAI_API_KEY``; any other ``base_url`` gets a
key only from a variable ``api_key_env`` names. Redirects are not followed, so a key never goes on
to another host. Failures end in :class:`LLMError` with their reason, as for Gemini.
"""

from __future__ import annotations

from typing import Any

import requests

from offline_agent.llm.base import LLMConfig, LLMError, LLMReply, with_retries

OPENAI_URL = "https://api.openai.com/v1"
STOPPED = {"length", "content_filter"}  # cut at the token limit, or filtered


class _Retryable(Exception):
    pass


class OpenAICompatibleLLM:
    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self.name = f"openai:{config.model}"
        self.url = f"{(config.base_url or OPENAI_URL).rstrip('/')}/chat/completions"
        self.key = config.api_key()

    def generate(self, system: str, prompt: str) -> LLMReply:
        body = {
            "model": self.config.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_output_tokens,
        }
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}

        def call() -> dict[str, Any]:
            try:
                response = requests.post(
                    self.url, json=body, headers=headers, timeout=self.config.timeout_seconds, allow_redirects=False
                )
            except requests.RequestException as exc:  # timeouts, refused or dropped connections, bodies cut short
                raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
            if response.status_code == 429 or response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code}: {response.text[:200]}")
            if response.is_redirect:
                where = response.headers.get("Location", "?")
                raise LLMError(f"{self.name}: HTTP {response.status_code} to {where}: redirects are not followed")
            if response.status_code >= 400:
                raise LLMError(f"{self.name}: HTTP {response.status_code}: {response.text[:300]}")
            try:
                payload = response.json()
            except ValueError as exc:
                raise LLMError(f"{self.name}: the reply is not JSON: {response.text[:200]!r}") from exc
            if not isinstance(payload, dict):
                raise LLMError(f"{self.name}: the reply is JSON but not an object")
            return payload

        try:
            payload = with_retries(call, lambda e: isinstance(e, _Retryable), self.config)
        except _Retryable as exc:
            raise LLMError(f"{self.name}: {self.config.gave_up()}: {exc}") from exc
        return self._reply(payload)

    def _reply(self, payload: dict[str, Any]) -> LLMReply:
        """The reply's text, or LLMError saying why there is none (carrying the usage the reply reports)."""
        usage = payload.get("usage")
        try:
            prompt_tokens = int((usage or {}).get("prompt_tokens") or 0)
            output_tokens = int((usage or {}).get("completion_tokens") or 0)
        except (AttributeError, TypeError, ValueError) as exc:
            raise LLMError(f"{self.name}: the reply's usage is not a mapping of token counts") from exc
        cost = self.config.cost(prompt_tokens, output_tokens)
        billed = LLMReply("", self.config.model, prompt_tokens, output_tokens, cost) if usage else None
        try:
            choice = payload["choices"][0]
            text, finish = choice["message"]["content"], choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LLMError(f"{self.name}: the reply has no choices[0].message.content", billed) from exc
        if finish in STOPPED:
            raise LLMError(f"{self.name}: the reply was stopped (finish reason {finish})", billed)
        if not isinstance(text, str) or not text.strip():
            raise LLMError(f"{self.name}: the reply's text is empty", billed)
        return LLMReply(text, self.config.model, prompt_tokens, output_tokens, cost)
