"""The real google-genai client and an OpenAI-compatible client against local stub servers: replies,
every fault a service can answer with, where keys go, and what a call may spend."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import yaml

from offline_agent.llm.base import BudgetExhausted, LLMConfig, LLMError, LLMReply, Spend
from offline_agent.llm.registry import build_llm
from recsys.errors import ConfigError
from tests.offline_agent.llm.stub_server import (
    cut_short,
    drop,
    gemini_blocked_prompt,
    gemini_blocked_reply,
    gemini_body,
    gemini_empty,
    hang,
    openai_body,
    raw,
)

GEMINI_KEY = "AIzaSy-test-gemini-key-0123456789"
OPENAI_KEY = "sk-test-openai-key-9876543210"
FAST = {"backoff_seconds": 0.01, "timeout_seconds": 0.5}


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)


@pytest.fixture
def gemini(stub, keys):
    config = LLMConfig(provider="gemini", base_url=stub.url, api_key_env="GEMINI_API_KEY", max_attempts=3, **FAST)
    return build_llm(config)


@pytest.fixture
def openai(stub, keys):
    return build_llm(LLMConfig(provider="openai", model="qwen", base_url=stub.url + "/v1", max_attempts=3, **FAST))


RATE_LIMITED = {"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}
SERVER_ERROR = {"error": {"code": 500, "message": "internal", "status": "INTERNAL"}}


def test_gemini_sends_the_wire_format_and_counts_tokens_and_cost(stub, gemini):
    stub.script.append((200, gemini_body("<<<<<<< SEARCH ...")))
    reply = gemini.generate("You improve recommenders.", "Improve this.")
    assert reply.text == "<<<<<<< SEARCH ..." and (reply.prompt_tokens, reply.output_tokens) == (120, 40)
    assert reply.cost_usd == pytest.approx((120 * 0.30 + 40 * 2.50) / 1e6)
    request = stub.requests[0]
    assert re.fullmatch(r"/v1(beta)?/models/gemini-2\.5-flash:generateContent", request["path"]), request["path"]
    assert request["headers"]["x-goog-api-key"] == GEMINI_KEY  # configured for this base_url
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


def test_a_read_timeout_is_retried_with_backoff_and_the_call_goes_on(stub, gemini):
    stub.script.extend([hang(1.5), (200, gemini_body("after the timeout"))])
    assert gemini.generate("s", "p").text == "after the timeout"
    assert len(stub.requests) == 2


GEMINI_FAULTS = [  # (script, reason, requests made, tokens billed)
    ([raw(200, b'{"candidates": [ {"content": ')], r"not a response: JSONDecodeError", 1, 0),
    ([raw(200, b"<html>502 from a proxy</html>", {"Content-Type": "text/html"})], r"not a response", 1, 0),
    ([hang(1.5)] * 3, r"gave up after 3 attempts: ReadTimeout", 3, 0),
    ([drop] * 3, r"gave up after 3 attempts: RemoteProtocolError: Server disconnected", 3, 0),
    ([cut_short(gemini_body("x" * 300))] * 3, r"gave up after 3 attempts: RemoteProtocolError: peer closed", 3, 0),
    ([(200, gemini_blocked_prompt(70))], r"the prompt was blocked \(SAFETY\)", 1, 70),
    ([(200, gemini_blocked_reply(80))], r"the reply was stopped \(finish reason SAFETY\)", 1, 80),
    ([(200, gemini_empty(90))], r"the reply holds no candidates", 1, 90),
    ([(200, gemini_body("half an ed", 100, 8192, finish="MAX_TOKENS"))], r"finish reason MAX_TOKENS", 1, 8292),
    ([(200, gemini_body("   "))], r"the reply holds no text", 1, 160),
]


@pytest.mark.parametrize(("script", "reason", "requests", "billed"), GEMINI_FAULTS)
def test_every_gemini_fault_is_an_llm_error_with_its_reason_and_billed_usage_is_charged(
    stub, gemini, script, reason, requests, billed
):
    stub.script.extend(script)
    spend = Spend()
    with pytest.raises(LLMError, match=reason):
        spend.ask(gemini, "s", "p")
    assert len(stub.requests) == requests
    assert spend.tokens == billed and spend.calls == (1 if billed else 0)


def test_a_refused_connection_is_retried_then_an_llm_error(keys):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens once the socket closes
    for provider in ("gemini", "openai"):
        config = LLMConfig(provider=provider, base_url=f"http://127.0.0.1:{port}", max_attempts=2, **FAST)
        with pytest.raises(LLMError, match=r"gave up after 2 attempts: Connect.*refused"):
            build_llm(config).generate("s", "p")


def test_a_named_key_is_required_and_read_from_the_environment(monkeypatch):
    for variable in ("GEMINI_API_KEY", "OPENAI_API_KEY", "EXAMPLE_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError, match=r"needs an API key in \$GEMINI_API_KEY"):
        build_llm(LLMConfig(provider="gemini"))
    with pytest.raises(ConfigError, match=r"gpt-4.1-mini needs an API key in \$OPENAI_API_KEY"):
        build_llm(LLMConfig(provider="openai", model="gpt-4.1-mini"))  # OpenAI's own service
    with pytest.raises(ConfigError, match=r"needs an API key in \$EXAMPLE_API_KEY"):
        build_llm(LLMConfig(provider="openai", base_url="https://api.example.com/v1", api_key_env="EXAMPLE_API_KEY"))


def test_each_provider_names_its_own_key_and_a_custom_base_url_none():
    assert LLMConfig(provider="gemini").api_key_env == "GEMINI_API_KEY"
    assert LLMConfig(provider="openai").api_key_env == "OPENAI_API_KEY"
    assert LLMConfig(provider="replay").api_key_env is None
    assert LLMConfig(provider="openai", base_url="http://localhost:8000/v1").api_key_env is None
    assert LLMConfig(provider="gemini", base_url="http://proxy:8080").api_key_env is None
    assert LLMConfig(provider="openai", base_url="https://x/v1", api_key_env="X_KEY").api_key_env == "X_KEY"


def test_openai_without_base_url_is_openais_own_service_with_its_own_key(keys):
    llm = build_llm(LLMConfig(provider="openai", model="gpt-4.1-mini")).llm
    assert llm.url == "https://api.openai.com/v1/chat/completions" and llm.key == OPENAI_KEY


def _carries(request: dict, value: str) -> bool:
    return value in json.dumps(request["headers"]) or value.encode() in request["raw"] or value in request["path"]


def test_the_docs_openai_compatible_example_sends_no_key(stub, keys):
    """The example of docs/offline_agent.md for a server on this machine, pointed at the stub."""
    page = (Path(__file__).resolve().parents[3] / "docs" / "offline_agent.md").read_text()
    line = next(line for line in page.splitlines() if line.startswith("llm: {provider: openai, model: qwen"))
    example = yaml.safe_load(line)["llm"]
    assert example["base_url"] == "http://localhost:8000/v1" and "api_key_env" not in example
    llm = build_llm(LLMConfig(**{**example, "base_url": stub.url + "/v1"}))
    stub.script.append((200, openai_body("edit")))
    assert llm.generate("s", "p").text == "edit"
    request = stub.requests[0]
    assert "Authorization" not in request["headers"] and "authorization" not in request["headers"]
    assert not _carries(request, GEMINI_KEY) and not _carries(request, OPENAI_KEY)


def test_gemini_through_an_unconfigured_base_url_sends_no_key(stub, keys, monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", "AIzaSy-another-google-key-555")  # the client would read either itself
    llm = build_llm(LLMConfig(provider="gemini", base_url=stub.url))
    stub.script.append((200, gemini_body("ok")))
    assert llm.generate("s", "p").text == "ok"
    request = stub.requests[0]
    assert request["headers"]["x-goog-api-key"] == "none"
    assert not any(_carries(request, key) for key in (GEMINI_KEY, OPENAI_KEY, "AIzaSy-another-google-key-555"))


def test_a_configured_key_goes_to_its_base_url_and_no_further(keys, stub_servers):
    first, second = stub_servers(), stub_servers()
    config = LLMConfig(provider="openai", model="m", base_url=first.url + "/v1", api_key_env="OPENAI_API_KEY")
    llm = build_llm(config)
    first.script.append((200, openai_body("ok")))
    assert llm.generate("s", "p").text == "ok"
    assert first.requests[0]["headers"]["Authorization"] == f"Bearer {OPENAI_KEY}"
    first.script.append(raw(307, b"", {"Location": second.url + "/v1/chat/completions"}))
    with pytest.raises(LLMError, match=r"307 to http://127\.0\.0\.1:.*redirects are not followed"):
        llm.generate("s", "p")
    gemini = build_llm(LLMConfig(provider="gemini", base_url=first.url, api_key_env="GEMINI_API_KEY", **FAST))
    first.script.append(raw(307, b"", {"Location": second.url + "/v1beta/models/x:generateContent"}))
    with pytest.raises(LLMError):
        gemini.generate("s", "p")
    assert first.requests[-1]["headers"]["x-goog-api-key"] == GEMINI_KEY and second.requests == []


def test_openai_compatible_endpoint_with_retry_and_malformed_reply(stub, openai):
    stub.script.extend([(503, "busy"), (200, openai_body("edit"))])
    reply = openai.generate("s", "p")
    assert reply.text == "edit" and reply.prompt_tokens == 50
    assert stub.requests[-1]["path"] == "/v1/chat/completions"
    assert stub.requests[-1]["body"]["messages"][0] == {"role": "system", "content": "s"}
    stub.script.append((200, {"choices": []}))
    with pytest.raises(LLMError, match="no choices"):
        openai.generate("s", "p")


OPENAI_FAULTS = [  # (script, reason, requests made, tokens billed)
    ([raw(200, b'{"choices": [{"mess')], r"the reply is not JSON", 1, 0),
    ([hang(1.5)] * 3, r"gave up after 3 attempts: ReadTimeout", 3, 0),
    ([drop] * 3, r"gave up after 3 attempts: ConnectionError", 3, 0),
    ([cut_short(openai_body("x" * 300))] * 3, r"gave up after 3 attempts: ChunkedEncodingError", 3, 0),
    ([(200, openai_body(None, "content_filter", 60, 0))], r"stopped \(finish reason content_filter\)", 1, 60),
    ([(200, openai_body("half", "length", 60, 8192))], r"stopped \(finish reason length\)", 1, 8252),
    ([(200, {"choices": [], "usage": {"prompt_tokens": 40}})], r"no choices", 1, 40),
    ([(200, openai_body("  ", "stop", 30, 1))], r"text is empty", 1, 31),
]


@pytest.mark.parametrize(("script", "reason", "requests", "billed"), OPENAI_FAULTS)
def test_every_openai_fault_is_an_llm_error_with_its_reason_and_billed_usage_is_charged(
    stub, openai, script, reason, requests, billed
):
    stub.script.extend(script)
    spend = Spend()
    with pytest.raises(LLMError, match=reason):
        spend.ask(openai, "s", "p")
    assert len(stub.requests) == requests
    assert spend.tokens == billed


def test_secret_values_never_go_out_in_a_prompt_nor_come_back_in_a_reply_or_an_error(stub, gemini, openai):
    leak = f"os.environ: {{'GEMINI_API_KEY': '{GEMINI_KEY}', 'OPENAI_API_KEY': '{OPENAI_KEY}'}}"
    stub.script.extend([(200, gemini_body(f"echo: {leak}")), (400, {"error": {"code": 400, "message": leak}})])
    reply = gemini.generate(f"system {GEMINI_KEY}", f"a failure reason: {leak}")
    with pytest.raises(LLMError) as error:
        gemini.generate("s", "p")
    stub.script.extend([(200, openai_body(leak)), (401, leak)])
    openai_reply = openai.generate("s", leak)
    with pytest.raises(LLMError) as openai_error:
        openai.generate("s", "p")
    for text in (reply.text, str(error.value), openai_reply.text, str(openai_error.value)):
        assert GEMINI_KEY not in text and OPENAI_KEY not in text and "[REDACTED $GEMINI_API_KEY]" in text
    for request in stub.requests:
        assert GEMINI_KEY.encode() not in request["raw"] and OPENAI_KEY.encode() not in request["raw"]
    assert "[REDACTED $OPENAI_API_KEY]" in json.dumps(stub.requests[0]["body"])


def test_a_call_is_made_only_when_the_budget_holds_the_most_it_may_cost(stub, keys):
    config = LLMConfig(provider="gemini", base_url=stub.url, max_output_tokens=100, **FAST)
    llm = build_llm(config)
    prompt = "x" * 600  # at most 600 / 3 = 200 prompt tokens by the estimate, plus 100 of reply
    spend = Spend(max_tokens=1000)
    while True:
        stub.script.append((200, gemini_body("ok", 150, 100)))
        try:
            spend.ask(llm, "", prompt)
        except BudgetExhausted as exc:
            assert "the next call may take 300" in str(exc)
            break
    assert spend.tokens == 750 <= spend.max_tokens and len(stub.requests) == 3  # a fourth could reach 1050
    dollars = Spend(max_usd=config.cost(200, 100) * 0.99)
    with pytest.raises(BudgetExhausted, match="the next call may cost"):
        dollars.ask(llm, "", prompt)
    assert len(stub.requests) == 3


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
    spend.charge(LLMReply("x", "m", 1000, 1000, 0.002))
    with pytest.raises(BudgetExhausted, match=r"spent \$0.0020 of the \$0.00 budget"):
        spend.check()
