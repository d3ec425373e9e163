"""The LLM critic and aggregator through the real google-genai client against a local stub server."""

from __future__ import annotations

import json
import re

import pytest

from offline_agent.llm.base import BudgetExhausted, LLMConfig, Spend
from offline_agent.llm.gemini import GeminiLLM
from offline_agent.llm.registry import build_llm
from offline_agent.simulator.aggregate import LLMAggregator, assess_critiques, measured_assessment
from offline_agent.simulator.cache import ReplyCache
from offline_agent.simulator.critiques import LLMCritic, critique_users, measured_critique
from offline_agent.simulator.personas import Persona, ShownItem
from tests.offline_agent.llm.stub_server import (
    drop,
    gemini_blocked_prompt,
    gemini_blocked_reply,
    gemini_body,
    gemini_empty,
    hang,
    raw,
)

PERSONA = Persona(
    user_idx=7,
    user_id="u7",
    events=80,
    activity="medium",
    genre_taste={"Film-Noir": 0.5, "Drama": 0.3, "Crime": 0.2},
    diversity=0.4,
    conformity=0.2,
    era=1955,
    era_spread=8.0,
    favourites=["Double Indemnity"],
    catalogue_genres=19,
)
SHOWN = [
    ShownItem(
        item_idx=11,
        title="Double Indemnity",
        genres=["Crime", "Film-Noir"],
        year=1944,
        popularity=3,
        popularity_percentile=0.4,
    ),
    ShownItem(
        item_idx=12, title="Titanic", genres=["Drama", "Romance"], year=1997, popularity=90, popularity_percentile=0.99
    ),
]
VALID = {
    "aligned": [{"item_idx": 11, "title": "Double Indemnity", "reason": "classic noir, my era"}],
    "misaligned": [{"item_idx": 12, "title": "Titanic", "reason": "a 1997 blockbuster; I watch 1950s noir"}],
    "over_weighted": ["popularity"],
    "under_weighted": ["genre:Film-Noir"],
    "summary": "one of two is a 1990s blockbuster; I mostly watch 1950s film-noir",
}
ASSESSMENT = {
    "status": "NEEDS_IMPROVEMENT",
    "failure_modes": [{"name": "blockbusters", "share": 0.5, "description": "half the users get blockbusters"}],
    "signals_to_track": ["popularity"],
    "summary": "Too many blockbusters for offbeat users.",
}


@pytest.fixture
def llm(stub, monkeypatch) -> GeminiLLM:
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    return GeminiLLM(LLMConfig(base_url=stub.url, backoff_seconds=0.01, max_attempts=1))


@pytest.fixture
def cache(tmp_path) -> ReplyCache:
    return ReplyCache(tmp_path / "replies.sqlite")


def prompt_of(request: dict) -> str:
    return request["body"]["contents"][0]["parts"][0]["text"]


def test_a_valid_reply_is_validated_cached_and_charged(stub, llm, cache, tmp_path):
    stub.script.append((200, gemini_body("Here you go:\n```json\n" + json.dumps(VALID) + "\n```", 300, 90)))
    spend = Spend()
    critique = LLMCritic(llm, cache, spend).critique(PERSONA, SHOWN)
    assert (critique.user_idx, critique.source) == (7, "llm")
    assert [v.item_idx for v in critique.misaligned] == [12] and critique.under_weighted == ["genre:Film-Noir"]
    assert (spend.tokens, spend.calls) == (390, 1)
    prompt = prompt_of(stub.requests[0])
    assert PERSONA.describe() in prompt and "Titanic (1997); Drama, Romance; popularity: top 1%" in prompt
    assert '"summary"' in prompt and "user_idx" not in prompt and "genre:<Name>" in prompt
    assert "You play one real viewer" in json.dumps(stub.requests[0]["body"]["systemInstruction"])
    again = LLMCritic(llm, ReplyCache(tmp_path / "replies.sqlite"), spend).critique(PERSONA, SHOWN)
    assert again == critique and len(stub.requests) == 1 and spend.calls == 1


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("I think the list is fine.", "the reply is not JSON"),
        (
            json.dumps({**VALID, "over_weighted": ["blockbusters"]}),
            "unknown signal 'blockbusters'; allowed: popularity",
        ),
        (json.dumps({**VALID, "mood": "grumpy"}), "mood: Extra inputs are not permitted"),
        (json.dumps({**VALID, "aligned": []}), r"not judged \[11\]"),
        (json.dumps([VALID]), "not an object"),
    ],
)
def test_an_unusable_reply_falls_back_to_the_measured_critique_with_the_reason(stub, llm, cache, reply, reason):
    stub.script.append((200, gemini_body(reply)))
    critiques, failures = critique_users([PERSONA], [SHOWN], LLMCritic(llm, cache))
    assert critiques == [measured_critique(PERSONA, SHOWN)] and critiques[0].source == "measured"
    assert len(failures) == 1 and failures[0].startswith("critique of user u7: ")
    assert re.search(reason, failures[0])


def test_an_unusable_reply_is_not_cached_so_the_next_run_asks_again(stub, llm, cache):
    stub.script.extend([(200, gemini_body("not json")), (200, gemini_body(json.dumps(VALID)))])
    critic = LLMCritic(llm, cache)
    assert critique_users([PERSONA], [SHOWN], critic)[0][0].source == "measured"
    critiques, failures = critique_users([PERSONA], [SHOWN], critic)
    assert critiques[0].source == "llm" and failures == [] and len(stub.requests) == 2


def test_a_service_failure_falls_back_too(stub, llm, cache):
    stub.script.append((400, {"error": {"code": 400, "message": "bad request", "status": "INVALID_ARGUMENT"}}))
    critiques, failures = critique_users([PERSONA], [SHOWN], LLMCritic(llm, cache))
    assert critiques[0].source == "measured" and "400 INVALID_ARGUMENT" in failures[0]


def test_the_budget_is_checked_before_a_call_and_cached_replies_stay_free(stub, llm, cache):
    stub.script.append((200, gemini_body(json.dumps(VALID), 100, 20)))
    spend = Spend()
    critic = LLMCritic(llm, cache, spend)
    critic.critique(PERSONA, SHOWN)
    assert spend.tokens == 120
    spend.max_tokens = 120  # all spent
    assert critic.critique(PERSONA, SHOWN).source == "llm"
    with pytest.raises(BudgetExhausted):
        critic.critique(PERSONA, SHOWN[:1])
    assert len(stub.requests) == 1


def test_the_aggregator_validates_caches_and_falls_back(stub, llm, cache):
    critiques = [measured_critique(PERSONA, SHOWN), measured_critique(PERSONA, SHOWN[:1])]
    stub.script.append((200, gemini_body(json.dumps(ASSESSMENT), 500, 60)))
    spend = Spend()
    assessment, failures = assess_critiques(critiques, LLMAggregator(llm, cache, spend))
    assert (assessment.status, assessment.source, failures) == ("NEEDS_IMPROVEMENT", "llm", [])
    assert spend.tokens == 560
    prompt = prompt_of(stub.requests[0])
    assert critiques[0].summary in prompt and "at least 70% of the films are misaligned" in prompt
    assert assess_critiques(critiques, LLMAggregator(llm, cache, spend))[0] == assessment
    assert len(stub.requests) == 1

    stub.script.append((200, gemini_body(json.dumps({**ASSESSMENT, "status": "FINE"}))))
    fallback, failures = assess_critiques(critiques[:1], LLMAggregator(llm, cache, spend))
    assert fallback == measured_assessment(critiques[:1])
    assert len(failures) == 1 and failures[0].startswith("assessment: ") and "status" in failures[0]


def test_a_spent_budget_falls_back_to_measured_critiques_with_the_reason(stub, llm, cache):
    spend = Spend(max_tokens=10)
    critiques, failures = critique_users([PERSONA], [SHOWN], LLMCritic(llm, cache, spend))
    assert critiques[0].source == "measured" and "token budget; the next call may take" in failures[0]
    assessment, failures = assess_critiques(critiques, LLMAggregator(llm, cache, spend))
    assert assessment.source == "measured" and "token budget" in failures[0]
    assert stub.requests == []


@pytest.mark.parametrize(
    ("script", "reason", "billed"),
    [
        ([raw(200, b'{"candidates": [')], "not a response: JSONDecodeError", 0),
        ([hang(1.5)], "gave up after 1 attempt: ReadTimeout", 0),
        ([drop], "RemoteProtocolError", 0),
        ([(200, gemini_blocked_prompt(70))], r"the prompt was blocked \(SAFETY\)", 70),
        ([(200, gemini_blocked_reply(80))], r"finish reason SAFETY", 80),
        ([(200, gemini_empty(90))], "no candidates", 90),
    ],
)
def test_a_faulting_critic_falls_back_with_the_reason_and_billed_usage_is_charged(stub, cache, script, reason, billed):
    stub.script.extend(script)
    spend = Spend()
    llm = build_llm(LLMConfig(base_url=stub.url, backoff_seconds=0.01, max_attempts=1, timeout_seconds=0.5))
    critiques, failures = critique_users([PERSONA], [SHOWN], LLMCritic(llm, cache, spend))
    assert critiques[0].source == "measured" and re.search(reason, failures[0])
    assert spend.tokens == billed
