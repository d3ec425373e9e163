"""Any OpenAI-compatible chat endpoint: vLLM, Ollama, llama.cpp server, or a hosted API."""

from __future__ import annotations

from typing import Any

import requests

from offline_agent.llm.base import LLMConfig, LLMError, LLMReply, with_retries


class _Retryable(Exception):
    pass


class OpenAICompatibleLLM:
    def __init__(self, config: LLMConfig) -> None:
        if not config.base_url:
            raise LLMError("the openai provider needs base_url, e.g. http://localhost:8000/v1")
        self.config = config
        self.name = f"openai:{config.model}"
        self.key = config.api_key(required=False)

    def generate(self, system: str, prompt: str) -> LLMReply:
        body = {
            "model": self.config.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_output_tokens,
        }
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        url = f"{self.config.base_url.rstrip('/')}/chat/completions"  # type: ignore[union-attr]

        def call() -> dict[str, Any]:
            try:
                response = requests.post(url, json=body, headers=headers, timeout=self.config.timeout_seconds)
            except requests.RequestException as exc:
                raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
            if response.status_code == 429 or response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code}: {response.text[:200]}")
            if response.status_code >= 400:
                raise LLMError(f"{self.name}: HTTP {response.status_code}: {response.text[:300]}")
            try:
                payload: dict[str, Any] = response.json()
            except ValueError as exc:
                raise LLMError(f"{self.name}: the reply is not JSON") from exc
            return payload

        try:
            payload = with_retries(call, lambda e: isinstance(e, _Retryable), self.config)
        except _Retryable as exc:
            raise LLMError(f"{self.name}: gave up after {self.config.max_attempts} attempts: {exc}") from exc
        try:
            text = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"{self.name}: the reply has no choices[0].message.content") from exc
        if not isinstance(text, str) or not text.strip():
            raise LLMError(f"{self.name}: the reply's text is empty")
        usage = payload.get("usage") or {}
        prompt_tokens, output_tokens = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        return LLMReply(
            text, self.config.model, prompt_tokens, output_tokens, self.config.cost(prompt_tokens, output_tokens)
        )
