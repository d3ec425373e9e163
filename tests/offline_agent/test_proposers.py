from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from offline_agent.api_text import candidate_api_text
from offline_agent.bandit import Pull
from offline_agent.diagnosis.report import DiagnosisReport, Finding
from offline_agent.llm.base import BudgetExhausted, LLMConfig, Spend
from offline_agent.llm.registry import build_llm
from offline_agent.program_db import Program
from offline_agent.proposers import (
    LLMProposer,
    MixedProposer,
    NoProposal,
    ProposalRequest,
    RulebookProposer,
    build_prompt,
    system_prompt,
)
from offline_agent.records import Feedback
from offline_agent.rulebook.catalogue import RULES
from offline_agent.rulebook.engine import RuleContext
from recsys import candidate_api
from recsys.candidate import load_candidate
from tests.offline_agent.histories import history

DIAGNOSIS = DiagnosisReport(
    [
        Finding("embedding_collapse", "embedding_collapse", {"effective_rank": 3.0}, 0.9, "severe",
                "item embeddings collapsed: effective rank 3 of 64", "builtin"),
        Finding("repetition", "repetition", {"consumed_share_unmasked": 0.0}, 0.0, "none", "healthy probe", "builtin"),
    ]
).to_json()  # fmt: skip


def _parent(seeds_dir, seed="sasrec_bce", **feedback):
    blocks = dict(load_candidate(seeds_dir / seed).sources)
    metrics = {"ndcg@10": 0.05, "coverage@10": 0.1, "popularity_lift@10": 2.5}
    return Program("abc@0", "abc", 0, None, 0, 0, "initial", blocks, "evaluated", 0.05, metrics, Feedback(**feedback))


def test_the_prompt_shows_code_metrics_feedback_journal_and_rejections_but_never_test_metrics(seeds_dir):
    parent = _parent(
        seeds_dir,
        test_metrics={"ndcg@10": 0.987654},
        history=history([0.04, 0.05]),
        best_epoch=2,
        diagnosis=DIAGNOSIS,
        critiques={
            "assessment": {"status": "NEEDS_IMPROVEMENT"},
            "markdown": "six of ten are 1990s blockbusters; I mostly watch 1950s film-noir",
        },
    )
    request = ProposalRequest(
        parent, [], ["Rule deeper -> ndcg@10 0.0600 (+0.0100)"], ["edit 1: SEARCH text not found"]
    )
    prompt = build_prompt(request)
    assert "class SASRec(" in prompt and "binary_cross_entropy_with_logits" in prompt
    assert "- coverage@10: 0.1000" in prompt and "effective rank 3" in prompt and "film-noir" in prompt
    assert "healthy probe" not in prompt  # only mild and severe findings are shown
    assert "Rule deeper -> ndcg@10 0.0600" in prompt and "SEARCH text not found" in prompt
    assert "0.987654" not in prompt and "0.9877" not in prompt
    scalar = build_prompt(ProposalRequest(parent, [], [], [], directional=False))
    assert "class SASRec(" in scalar and "- ndcg@10: 0.0500" in scalar
    assert "coverage@10" not in scalar and "effective rank" not in scalar and "film-noir" not in scalar


def test_the_prompt_shows_the_candidate_api_as_the_module_documents_it_now(seeds_dir, monkeypatch):
    parent = _parent(seeds_dir)
    for directional in (True, False):  # the contract is no feedback: the scalar ablation sees it too
        prompt = build_prompt(ProposalRequest(parent, [], [], [], directional=directional))
        assert "# The candidate API you must keep\n" + candidate_api_text() in prompt
    assert "def score(self, batch: Batch) -> torch.Tensor:" in prompt and "B X (N+1)" in prompt
    monkeypatch.setattr(candidate_api.RecModel.score, "__doc__", "Scores: B X (N+1), column 0 never recommended.")
    assert "column 0 never recommended" in build_prompt(ProposalRequest(parent, [], [], []))


def test_the_rulebook_follows_evidence_and_runs_out_of_untried_rules(seeds_dir):
    parent = _parent(seeds_dir)
    proposer = RulebookProposer(explore=0.0)
    first = proposer.propose(ProposalRequest(parent, [], [], []), random.Random(0))
    assert first.rule == "full_cross_entropy" and "Rule full_cross_entropy" in first.text
    every_rule = {rule.name for rule in RULES}
    with pytest.raises(NoProposal, match="no rule applies"):
        proposer.propose(ProposalRequest(parent, [], [], [], tried_rules=every_rule), random.Random(0))


def test_a_known_large_gain_outranks_problems_every_model_shows_but_strong_feedback_outranks_small_gains(seeds_dir):
    saturated = {"signals": {"low_coverage": 1.0, "segment_gap": 1.0, "genre_calibration": 0.3}}
    proposer = RulebookProposer(explore=0.0)
    seed = proposer.propose(ProposalRequest(_parent(seeds_dir, **saturated), [], [], []), random.Random(0))
    assert seed.rule == "full_cross_entropy"  # +35% known gain against a coverage signal at its ceiling
    ce_parent = _parent(seeds_dir, "sasrec_ce", **saturated)
    assert proposer.propose(ProposalRequest(ce_parent, [], [], []), random.Random(0)).rule in {
        "uniformity_regularizer",
        "popularity_penalty",
    }  # once the large known gain is taken, the flagged coverage problem leads
    improving = _parent(seeds_dir, "sasrec_ce", **saturated, history=history([0.01, 0.02]))
    gains = {"smaller_batches": (0.98,), "uniformity_regularizer": (0.0,)}  # what each did to the seed in this run
    learned = proposer.propose(ProposalRequest(improving, [], [], [], rule_gains=gains), random.Random(0))
    assert learned.rule == "smaller_batches"  # the edit that doubled the seed's score is tried on the best next


def test_the_llm_proposer_charges_its_spend_and_stops_at_the_budget(seeds_dir, tmp_path):
    replies = tmp_path / "replies.jsonl"
    replies.write_text(
        "\n".join(json.dumps({"text": "idea", "prompt_tokens": 900, "output_tokens": 100}) for _ in range(3))
    )
    config = LLMConfig(provider="replay", replay_file=str(replies), max_output_tokens=100)
    request = ProposalRequest(_parent(seeds_dir), [], [], [])
    ahead, _ = config.most_a_call_costs(system_prompt(), build_prompt(request))  # its prompt, estimated, + 100
    spend = Spend(max_tokens=2000 + ahead - 1)  # room for two calls of 1000 tokens, not for a third that may cost more
    proposer = LLMProposer(build_llm(config), spend)
    assert proposer.propose(request, random.Random(0)).text == "idea"
    assert (spend.tokens, spend.calls) == (1000, 1)
    proposer.propose(request, random.Random(0))
    with pytest.raises(BudgetExhausted, match=f"2000 of the {2000 + ahead - 1} token budget; the next call may take"):
        proposer.propose(request, random.Random(0))
    assert spend.tokens <= spend.max_tokens


def test_the_rulebook_sees_only_the_fitness_when_feedback_is_scalar(seeds_dir):
    parent = _parent(seeds_dir, "sasrec_ce", signals={"low_diversity": 0.9}, history=history([0.05]))
    directional = ProposalRequest(parent, [], [], []).context()
    scalar = ProposalRequest(parent, [], [], [], directional=False).context()
    assert directional.signal("low_diversity") == 0.9 and directional.metric("coverage@10") == 0.1
    assert scalar.signal("low_diversity") is None and scalar.metrics == {"ndcg@10": 0.05} and not scalar.history
    proposer = RulebookProposer(explore=0.0)
    assert proposer.propose(ProposalRequest(parent, [], [], []), random.Random(0)).rule == "mmr_reranking"
    assert (
        proposer.propose(ProposalRequest(parent, [], [], [], directional=False), random.Random(0)).rule
        != "mmr_reranking"
    )


def test_the_rulebook_learns_which_rules_improve_their_parents_in_this_run(seeds_dir):
    parent = _parent(seeds_dir, "sasrec_ce")
    proposer = RulebookProposer(explore=0.0)
    fresh = proposer.propose(ProposalRequest(parent, [], [], []), random.Random(0)).rule
    gains = {fresh: (-0.1,) * 6, "deeper": (0.1,) * 3}  # the first choice kept failing, deeper kept improving
    others = {rule.name: (-0.05,) * 3 for rule in RULES if rule.name not in gains}  # every other rule failed thrice
    learned = proposer.propose(ProposalRequest(parent, [], [], [], rule_gains={**others, **gains}), random.Random(0))
    assert fresh != "deeper" and learned.rule == "deeper"


def _history(scores):
    return history(scores, seconds_per_epoch=4.0)


def test_time_elasticity_is_how_much_the_best_score_still_grew_with_training_time():
    def elasticity(history):
        return RuleContext({}, history=history).time_elasticity

    assert elasticity(_history([0.01 * (i + 1) for i in range(10)])) == pytest.approx(1.0)  # score ∝ time
    assert elasticity(_history([0.02, 0.04, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05])) == 0.0  # levelled off
    assert elasticity(_history([0.02, 0.05, 0.04, 0.03, 0.02, 0.01])) == 0.0  # best-so-far, not the last epoch
    assert 0.2 < elasticity(_history([0.04, 0.045, 0.05, 0.055])) < 0.6  # still growing, more slowly than time
    assert elasticity(_history([0.03])) == 0.0 and elasticity([]) == 0.0
    assert RuleContext({}).signal("undertrained") is None  # no history (scalar feedback): no evidence either way


def test_under_a_time_budget_a_slower_edit_loses_its_known_gain_but_not_under_an_epoch_cap(seeds_dir):
    saturated = {"low_coverage": 1.0, "segment_gap": 1.0, "popularity_bias": 0.86}
    proposer = RulebookProposer(explore=0.0)
    steep = _history([0.001 * 1.5**i for i in range(11)])
    cut_short = _parent(seeds_dir, signals=saturated, history=steep, stopped="budget")
    converged = _parent(seeds_dir, signals=saturated, history=_history([0.02, 0.04, *[0.05] * 9]), stopped="budget")
    epoch_capped = _parent(seeds_dir, signals=saturated, history=steep, stopped="epochs")
    full_ce = next(rule for rule in RULES if rule.name == "full_cross_entropy")
    budgeted = [full_ce.budgeted_prior(ProposalRequest(p, [], [], []).context()) for p in (cut_short, converged)]
    assert budgeted[0] < 0 < budgeted[1] == pytest.approx(0.35)
    assert full_ce.budgeted_prior(ProposalRequest(epoch_capped, [], [], []).context()) == pytest.approx(0.35)
    first = proposer.propose(ProposalRequest(cut_short, [], [], []), random.Random(0)).rule
    assert first in {"higher_learning_rate", "smaller_batches", "sampled_softmax", "gbce"}  # no slower edit
    ranked = [rule.name for rule, _ in proposer.ranked(ProposalRequest(cut_short, [], [], []))]
    assert ranked.index("higher_learning_rate") < ranked.index("full_cross_entropy")
    assert ranked.index("higher_learning_rate") < ranked.index("uniformity_regularizer")
    assert proposer.propose(ProposalRequest(converged, [], [], []), random.Random(0)).rule == "full_cross_entropy"


def test_exploration_draws_near_ties_far_more_often_than_edits_expected_to_lose(seeds_dir):
    cut_short = _parent(seeds_dir, history=_history([0.001 * 1.5**i for i in range(11)]), stopped="budget")
    request = ProposalRequest(cut_short, [], [], [])
    values = dict((rule.name, value) for rule, value in RulebookProposer.ranked(request))
    assert values["wider"] < values["full_cross_entropy"] < 0 < values["higher_learning_rate"]
    rng = random.Random(0)
    drawn = Counter(RulebookProposer(explore=1.0).propose(request, rng).rule for _ in range(400))
    top = max(values, key=values.__getitem__)
    assert drawn[top] == 0  # exploring means another rule than the greedy choice
    assert drawn["higher_learning_rate"] > 10 * max(drawn["wider"], 1)
    assert len(drawn) >= 5  # yet exploration reaches many rules


def test_a_mixed_run_draws_each_edit_from_the_origin_that_improved_most_per_cpu_second(seeds_dir, tmp_path):
    replies = tmp_path / "replies.jsonl"
    replies.write_text("\n".join(json.dumps({"text": f"idea {i}\nTargets: low_coverage"}) for i in range(3)))
    llm = LLMProposer(build_llm(LLMConfig(provider="replay", replay_file=str(replies))), Spend())
    found: list[Pull] = []
    mixed = MixedProposer(RulebookProposer(explore=0.0), llm, lambda: found)
    request = ProposalRequest(_parent(seeds_dir), [], [], [])
    assert mixed.propose(request, random.Random(0)).proposer == "rulebook"  # cold start, in order
    found.append(Pull("rulebook", 0.0, 100.0))
    assert mixed.propose(request, random.Random(0)).text.startswith("idea 0")  # cold start of the model
    found += [Pull(llm.name, 0.02, 10.0), Pull("rulebook", 0.0, 100.0)] * 3  # the model's edits paid, the rules' not
    assert mixed.propose(request, random.Random(0)).proposer == llm.name
    found += [Pull(llm.name, 0.0, 50.0), Pull("rulebook", 0.1, 10.0)] * 10  # now the rules pay more per CPU-second
    assert mixed.propose(request, random.Random(0)).proposer == "rulebook"
    every_rule = ProposalRequest(request.parent, [], [], [], tried_rules={rule.name for rule in RULES})
    assert mixed.propose(every_rule, random.Random(0)).text.startswith("idea 2")  # no rule left: the model
    with pytest.raises(NoProposal, match=r"rulebook: no rule applies.*all 3 recorded replies are used"):
        mixed.propose(every_rule, random.Random(0))
