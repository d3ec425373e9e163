"""Every provider seen through the redactor: no secret value goes out in a prompt or comes back in a
reply or an error, and no failure of a provider's client reaches the loop as anything but LLMError."""

from __future__ import annotations

import dataclasses

from offline_agent.llm.base import LLM, LLMError, LLMReply
from recsys.redaction import redact


class RedactedLLM:
    def __init__(self, llm: LLM) -> None:
        self.llm = llm
        self.name = llm.name
        self.config = llm.config

    def generate(self, system: str, prompt: str) -> LLMReply:
        try:
            reply = self.llm.generate(redact(system), redact(prompt))
        except LLMError as exc:  # the original, whose cause may quote a body, stays here
            raise LLMError(redact(str(exc)), exc.billed) from None
        except Exception as exc:  # a client's own failure: recorded as the call's reason, the run goes on
            raise LLMError(redact(f"{self.name}: {type(exc).__name__}: {exc}")[:400]) from None
        return dataclasses.replace(reply, text=redact(reply.text))
