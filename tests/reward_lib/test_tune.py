"""Tuning: better alignment on the logs it searched, within the ranges, the monotonicity and the guardrails."""

from __future__ import annotations

import pytest

from recsys.event_table import from_interactions
from reward_lib.errors import RewardError
from reward_lib.report import write_tune_report
from reward_lib.spec import parse_spec
from reward_lib.store import RewardStore, resolve_reward
from reward_lib.tune import tune


def test_tuning_the_default_reward_raises_its_alignment_within_the_declared_ranges(aligned, prepared_small, tmp_path):
    clicks = resolve_reward("clicks").spec
    training = ("training events", from_interactions(prepared_small.interactions, prepared_small.items))
    result = tune(clicks, aligned[:1], trials=25, seed=0, holdout=aligned[1:], probes=[training])
    assert result.alignment_after.score > result.alignment_before.score
    assert result.trials[0].weights == {c.label: c.weight for c in clicks.components if c.label in result.searched}
    assert max(t.score for t in result.trials if t.feasible) == pytest.approx(result.alignment_after.score, abs=2e-3)
    assert result.kept == {"click": "no range declared", "rating": "the tuning logs lack rating"}
    for component in result.after.components:
        assert component.range is None or component.range[0] <= component.weight <= component.range[1]
    assert result.after.tuned_from == "clicks@1" and result.holdout_after is not None
    saved, path = RewardStore(tmp_path).save_new_version(result.after)
    paths = write_tune_report(result.__class__(**{**result.__dict__, "after": saved}), path)
    assert paths["html"].read_text().count("data:image/png;base64,") == 3
    markdown = paths["md"].read_text()
    assert "# Reward tuning: clicks@1 -> clicks@2" in markdown and "| held-out logs | alignment |" in markdown


def test_a_declared_monotonicity_keeps_tuning_off_weights_that_break_it(aligned):
    spec = parse_spec(
        "name: watched\nversion: 1\ncomponents:\n  - {signal: click, weight: 1}\n"
        "  - {signal: completion, weight: 0.5, range: [-2, 2]}\nmonotone: {watch_fraction: increasing}\n",
        "watched.yaml",
    )
    result = tune(spec, aligned[:1], trials=20, seed=1)
    assert any(not t.feasible and t.weights["completion"] < 0 for t in result.trials)
    assert all(t.weights["completion"] >= 0 for t in result.trials if t.feasible)
    assert result.after.components[1].weight >= 0


def test_guardrails_no_weights_can_meet_are_reported_with_what_the_current_weights_break(aligned):
    spec = resolve_reward("clicks").spec
    guardrail = spec.tuning.guardrails[0].model_copy(update={"at_least": 2.0})
    impossible = spec.model_copy(update={"tuning": spec.tuning.model_copy(update={"guardrails": (guardrail,)})})
    with pytest.raises(RewardError, match=r"clicks@1: no trial met the guardrails; the current weights break: "
                                          r"guardrail: arm_agreement 1 < 2"):  # fmt: skip
        tune(impossible, aligned[:1], trials=3)
