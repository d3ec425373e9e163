"""Gemini through the google-genai client (any ``base_url``, e.g. a proxy or a local stub).

Every way a call can fail ends in :class:`LLMError` with its reason: an HTTP error, a transport
failure (timeout, refused or dropped connection, a body cut short: retried with backoff first), a
body that is not a response (a redirect among them: none is followed, so the key stays with
``base_url``), a prompt or reply blocked for safety, a reply with no text or cut at its token
limit. A blocked or empty reply that reports usage carries it, so that it is charged.
"""

from __future__ import annotations

import httpx
import httpx2
from google import genai
from google.genai import errors, types

from offline_agent.llm.base import LLMConfig, LLMError, LLMReply, with_retries

NO_KEY = "none"  # the client insists on a key; a base_url configured without one gets this placeholder
TRANSIENT = (
    httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError,
    httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError,
)  # fmt: skip  # google-genai sends with httpx2 when installed, else httpx
TRANSPORT = (httpx.TransportError, httpx2.TransportError)
FINISHED = {None, "STOP", "FINISH_REASON_UNSPECIFIED"}


def _retryable(error: BaseException) -> bool:
    return isinstance(error, (errors.ServerError, *TRANSIENT)) or (
        isinstance(error, errors.ClientError) and error.code == 429
    )


def _label(value: object) -> str | None:
    """An enum member's value (``SAFETY``), a plain string as it is."""
    return None if value is None else str(getattr(value, "value", value))


class GeminiLLM:
    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self.name = f"gemini:{config.model}"
        options = types.HttpOptions(
            base_url=config.base_url,
            timeout=int(config.timeout_seconds * 1000),
            client_args={"follow_redirects": False},  # the client would follow, sending the key to wherever it leads
        )
        # never None: the client would read $GEMINI_API_KEY itself and send it to any base_url
        self.client = genai.Client(api_key=config.api_key() or NO_KEY, http_options=options)

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
        except TRANSPORT as exc:
            raise LLMError(f"{self.name}: {self.config.gave_up()}: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # JSONDecodeError, UnknownApiResponseError, pydantic's ValidationError
            raise LLMError(f"{self.name}: the reply is not a response: {type(exc).__name__}: {exc}"[:400]) from exc
        return self._reply(response)

    def _reply(self, response: types.GenerateContentResponse) -> LLMReply:
        """The reply's text, or LLMError saying why there is none (carrying the usage the reply reports)."""
        usage = response.usage_metadata
        prompt_tokens = (usage.prompt_token_count or 0) if usage else 0
        output_tokens = ((usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)) if usage else 0
        cost = self.config.cost(prompt_tokens, output_tokens)
        billed = LLMReply("", self.config.model, prompt_tokens, output_tokens, cost) if usage else None
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            why = f": {feedback.block_reason_message}" if feedback.block_reason_message else ""
            raise LLMError(f"{self.name}: the prompt was blocked ({_label(feedback.block_reason)}{why})", billed)
        candidates = response.candidates or []
        if not candidates:
            raise LLMError(f"{self.name}: the reply holds no candidates", billed)
        first = candidates[0]
        parts = first.content.parts if first.content is not None and first.content.parts else []
        text = "".join(part.text or "" for part in parts)
        finish = _label(first.finish_reason)
        if finish not in FINISHED:
            raise LLMError(f"{self.name}: the reply was stopped (finish reason {finish})", billed)
        if not text.strip():
            raise LLMError(f"{self.name}: the reply holds no text (finish reason {finish})", billed)
        return LLMReply(text, self.config.model, prompt_tokens, output_tokens, cost)
