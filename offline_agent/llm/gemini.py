"""Gemini through the google-genai client (any ``base_url``, e.g. a proxy or a local stub)."""

from __future__ import annotations

from google import genai
from google.genai import errors, types

from offline_agent.llm.base import LLMConfig, LLMError, LLMReply, with_retries


def _retryable(error: BaseException) -> bool:
    return isinstance(error, errors.ServerError) or (isinstance(error, errors.ClientError) and error.code == 429)


class GeminiLLM:
    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self.name = f"gemini:{config.model}"
        options = types.HttpOptions(timeout=int(config.timeout_seconds * 1000))
        if config.base_url:
            options = types.HttpOptions(base_url=config.base_url, timeout=int(config.timeout_seconds * 1000))
        self.client = genai.Client(api_key=config.api_key(), http_options=options)

    def generate(self, system: str, prompt: str) -> LLMReply:
        settings = types.GenerateContentConfig(
            system_instruction=system,
            temperature=self.config.temperature,
            max_output_tokens=self.config.max_output_tokens,
        )

        def call() -> types.GenerateContentResponse:
            return self.client.models.generate_content(model=self.config.model, contents=prompt, config=settings)

        try:
            response = with_retries(call, _retryable, self.config)
        except errors.APIError as exc:
            raise LLMError(f"{self.name}: {exc.code} {exc.status or ''} {exc.message or ''}".strip()) from exc
        text = _text_of(response)
        usage = response.usage_metadata
        prompt_tokens = (usage.prompt_token_count or 0) if usage else 0
        output_tokens = (usage.candidates_token_count or 0) if usage else 0
        return LLMReply(
            text, self.config.model, prompt_tokens, output_tokens, self.config.cost(prompt_tokens, output_tokens)
        )


def _text_of(response: types.GenerateContentResponse) -> str:
    candidates = response.candidates or []
    if not candidates or candidates[0].content is None or not candidates[0].content.parts:
        reason = candidates[0].finish_reason if candidates else "no candidates"
        raise LLMError(f"the reply holds no text (finish reason: {reason})")
    text = "".join(part.text or "" for part in candidates[0].content.parts)
    if not text.strip():
        raise LLMError("the reply's text is empty")
    return text
