"""The real google-genai client and an OpenAI-compatible client against a local stub server."""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from offline_agent.llm.base import BudgetExhausted, LLMConfig, LLMError, Spend
from offline_agent.llm.registry import build_llm


def gemini_body(text: str, prompt_tokens: int = 120, output_tokens: int = 40) -> dict:
    return {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
        },
        "modelVersion": "gemini-2.5-flash",
    }


def openai_body(text: str) -> dict:
    return {
        "choices": [{"message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 10},
    }


class StubServer:
    """Answers each POST with the next scripted (status, JSON body) and records the requests."""

    def __init__(self) -> None:
        self.script: deque[tuple[int, object]] = deque()
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                stub.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": json.loads(self.rfile.read(length))}
                )
                status, body = stub.script.popleft()
                payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def stub():
    server = StubServer()
    yield server
    server.server.shutdown()


@pytest.fixture
def gemini(stub, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "test-key-123")
    return build_llm(LLMConfig(provider="gemini", base_url=stub.url, backoff_seconds=0.01, max_attempts=3))


RATE_LIMITED = {"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}
SERVER_ERROR = {"error": {"code": 500, "message": "internal", "status": "INTERNAL"}}


def test_gemini_sends_the_wire_format_and_counts_tokens_and_cost(stub, gemini):
    stub.script.append((200, gemini_body("<<<<<<< SEARCH ...")))
    reply = gemini.generate("You improve recommenders.", "Improve this.")
    assert reply.text == "<<<<<<< SEARCH ..." and (reply.prompt_tokens, reply.output_tokens) == (120, 40)
    assert reply.cost_usd == pytest.approx((120 * 0.30 + 40 * 2.50) / 1e6)
    request = stub.requests[0]
    assert re.fullmatch(r"/v1(beta)?/models/gemini-2\.5-flash:generateContent", request["path"]), request["path"]
    assert request["headers"]["x-goog-api-key"] == "test-key-123"
    assert request["body"]["contents"][0]["parts"][0]["text"] == "Improve this."
    assert "You improve recommenders." in json.dumps(request["body"]["systemInstruction"])


def test_gemini_retries_a_429_and_a_500_then_succeeds(stub, gemini):
    stub.script.extend([(429, RATE_LIMITED), (500, SERVER_ERROR), (200, gemini_body("ok"))])
    assert gemini.generate("s", "p").text == "ok"
    assert len(stub.requests) == 3


def test_gemini_gives_up_after_its_attempts_with_the_reason(stub, gemini):
    stub.script.extend([(429, RATE_LIMITED)] * 3)
    with pytest.raises(LLMError, match="429 RESOURCE_EXHAUSTED"):
        gemini.generate("s", "p")
    assert len(stub.requests) == 3


def test_gemini_client_errors_are_not_retried(stub, gemini):
    stub.script.append((400, {"error": {"code": 400, "message": "bad request", "status": "INVALID_ARGUMENT"}}))
    with pytest.raises(LLMError, match="400 INVALID_ARGUMENT"):
        gemini.generate("s", "p")
    assert len(stub.requests) == 1


def test_a_malformed_gemini_reply_is_an_llm_error(stub, gemini):
    stub.script.append((200, {"candidates": [], "usageMetadata": {"promptTokenCount": 1}}))
    with pytest.raises(LLMError, match="holds no text"):
        gemini.generate("s", "p")


def test_the_key_is_required_and_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    with pytest.raises(Exception, match=r"needs an API key in \$GEMINI_API_KEY"):
        build_llm(LLMConfig(provider="gemini"))


def test_openai_compatible_endpoint_with_retry_and_malformed_reply(stub):
    llm = build_llm(LLMConfig(provider="openai", model="qwen", base_url=stub.url + "/v1", backoff_seconds=0.01))
    stub.script.extend([(503, "busy"), (200, openai_body("edit"))])
    reply = llm.generate("s", "p")
    assert reply.text == "edit" and reply.prompt_tokens == 50
    assert stub.requests[-1]["path"] == "/v1/chat/completions"
    assert stub.requests[-1]["body"]["messages"][0] == {"role": "system", "content": "s"}
    stub.script.append((200, {"choices": []}))
    with pytest.raises(LLMError, match="no choices"):
        llm.generate("s", "p")


def test_replay_returns_recorded_replies_in_order(tmp_path):
    path = tmp_path / "replies.jsonl"
    path.write_text(json.dumps({"text": "one", "prompt_tokens": 10}) + "\n" + json.dumps({"text": "two"}) + "\n")
    llm = build_llm(LLMConfig(provider="replay", replay_file=str(path)))
    assert [llm.generate("s", "p").text for _ in range(2)] == ["one", "two"]
    with pytest.raises(LLMError, match="all 2 recorded replies are used"):
        llm.generate("s", "p")


def test_the_spend_budget_ends_a_run():
    spend = Spend(max_usd=0.001)
    spend.check()
    from offline_agent.llm.base import LLMReply

    spend.charge(LLMReply("x", "m", 1000, 1000, 0.002))
    with pytest.raises(BudgetExhausted, match=r"spent \$0.0020 of the \$0.00 budget"):
        spend.check()
