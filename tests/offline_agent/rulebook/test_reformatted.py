"""Every rule applies to its parent however the parent is written, and the child loads with the intended value.

Each parent is taken as written, through ``ast.unparse``, restyled (one argument a line, keywords reversed and
spaced, comments between arguments, annotated constants, parenthesised returns) and with the project's names
used through a module alias and the loss written through a ``weighted_mean`` helper.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from offline_agent.edits import apply_change, parse_reply
from offline_agent.records import Feedback
from offline_agent.rulebook.catalogue import RULES
from offline_agent.rulebook.engine import RuleContext, reply_for
from recsys.batches import make_batch
from recsys.candidate import Candidate, load_candidate
from tests.offline_agent.rulebook.conftest import IMPROVING, OVERFIT, SPEC, trains
from tests.offline_agent.rulebook.reformat import VARIANTS

BY_NAME = {rule.name: rule for rule in RULES}
BATCH = make_batch(np.array([0, 1]), [np.array([1, 2, 3]), np.array([4, 5])], [np.array([2, 3, 4]), np.array([5, 6])])


def _seed(name: str) -> Callable[[Path], dict[str, str]]:
    return lambda seeds: dict(load_candidate(seeds / name).sources)


def _typed(evidence: dict[str, Any]) -> dict[str, Any]:
    """The cases' feedback written as plain mappings, read as the loop's typed record."""
    if isinstance(evidence.get("feedback"), dict):
        return {**evidence, "feedback": Feedback.model_validate(evidence["feedback"])}
    return evidence


def _child(seed: str, rule: str, **evidence: Any) -> Callable[[Path], dict[str, str]]:
    def build(seeds: Path) -> dict[str, str]:
        ctx = RuleContext(_seed(seed)(seeds), **_typed(evidence))
        return apply_change(ctx.sources, parse_reply(reply_for(BY_NAME[rule], ctx)))

    return build


def _model(candidate: Candidate) -> nn.Module:
    torch.manual_seed(0)
    return candidate.function("model", "build_model")(SPEC).eval()


def _dot_product_scores(model: nn.Module) -> torch.Tensor:
    states = model(BATCH)
    last = states[torch.arange(2), BATCH.lengths - 1]
    return last @ model.embed_items(torch.arange(SPEC.num_items + 1)).T


def _loss(candidate: Candidate, model: nn.Module) -> torch.Tensor:
    torch.manual_seed(1)  # the same sampled negatives for parent and child
    return candidate.function("loss", "build_train_task")(SPEC)(model, BATCH)


def _constant(block: str, name: str, value: object) -> Callable[[Candidate, Candidate], None]:
    def check(child: Candidate, parent: Candidate) -> None:
        assert getattr(child.modules[block], name) == value

    return check


def _uniformity_added(child: Candidate, parent: Candidate) -> None:
    model = _model(parent)
    with torch.no_grad():
        difference = _loss(child, model) - _loss(parent, model)
        assert torch.isclose(difference, child.function("loss", "uniformity_term")(model, BATCH))
    assert child.modules["loss"].UNIFORMITY_WEIGHT == 0.1


def _adamw(child: Candidate, parent: Candidate) -> None:
    optimizer = child.function("optim", "build_optimizer")(_model(child).parameters())
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.param_groups[0]["weight_decay"] == 0.01 and optimizer.param_groups[0]["lr"] == 1e-3


def _warmup(child: Candidate, parent: Candidate) -> None:
    optimizer = child.function("optim", "build_optimizer")(_model(child).parameters())
    scheduler = child.function("optim", "build_scheduler")(optimizer, 100)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 / 5)  # step 0 of a 5-step warm-up
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def _plan(name: str, value: object) -> Callable[[Candidate, Candidate], None]:
    def check(child: Candidate, parent: Candidate) -> None:
        assert getattr(child.function("optim", "training_plan")(), name) == value

    return check


def _learning_rate(child: Candidate, parent: Candidate) -> None:
    optimizer = child.function("optim", "build_optimizer")(_model(child).parameters())
    assert optimizer.param_groups[0]["lr"] == 2e-3


def _blocks(child: Candidate, parent: Candidate) -> None:
    assert child.modules["model"].BLOCKS == 3 and len(_model(child).blocks) == 3


def _wider(child: Candidate, parent: Candidate) -> None:
    assert _model(child).embed_items(torch.tensor([1, 2])).shape == (2, 128)


def _genres(child: Candidate, parent: Candidate) -> None:
    model = _model(child)
    assert isinstance(model.genre_projection, nn.Linear)
    with torch.no_grad():
        before = (model(BATCH), model.embed_items(torch.tensor([1, 2])))
        model.genre_projection.weight.add_(1.0)  # the projection reaches the states and the item embeddings
        after = (model(BATCH), model.embed_items(torch.tensor([1, 2])))
    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])


def _mmr(child: Candidate, parent: Candidate) -> None:
    model = _model(child)
    with torch.no_grad():
        expected = child.function("model", "mmr_rerank")(_dot_product_scores(model), model.item_genres)
        assert torch.equal(model.score(BATCH), expected)
    assert child.modules["model"].MMR_LAMBDA == 0.8


def _popularity(child: Candidate, parent: Candidate) -> None:
    model = _model(child)
    with torch.no_grad():
        penalty = 0.1 * torch.log1p(SPEC.item_popularity)
        assert torch.allclose(model.score(BATCH), _dot_product_scores(model) - penalty)


def _probes(*names: str) -> Callable[[Candidate, Candidate], None]:
    def check(child: Candidate, parent: Candidate) -> None:
        assert [probe.name for probe in child.function("diagnosis", "PROBES")] == list(names)

    return check


def _class(block: str, builder: str, name: str) -> Callable[[Candidate, Candidate], None]:
    def check(child: Candidate, parent: Candidate) -> None:
        assert type(child.function(block, builder)(SPEC)).__name__ == name

    return check


def _ligr(child: Candidate, parent: Candidate) -> None:
    block = _model(child).blocks[0]
    assert type(block.feed_forward).__name__ == "SwiGLUFeedForward"
    with torch.no_grad():  # a closed attention gate leaves only the feed-forward update
        before = block(torch.ones(1, 3, 64))
        block.attention_gate.bias.fill_(-1e4)
        assert not torch.allclose(before, block(torch.ones(1, 3, 64)))


def _hstu(child: Candidate, parent: Candidate) -> None:
    assert {type(block.attention).__name__ for block in _model(child).blocks} == {"PointwiseAttention"}


def _embedding_dropout(child: Candidate, parent: Candidate) -> None:
    assert _model(child).input_dropout.p == 0.5 and child.modules["model"].DROPOUT == 0.2


def _rating_reward(child: Candidate, parent: Candidate) -> None:
    assert "signal: rating" in child.modules["reward"].REWARD_SPEC


SAMPLED = _child("sasrec_bce", "sampled_softmax")
ERA_PROBE = _child("sasrec_ce", "probe_for_complaint", feedback={"complaints": {"era_mismatch": 0.5}})
CASES: list[tuple[str, Callable[[Path], dict[str, str]], dict[str, Any], Callable[[Candidate, Candidate], None]]] = [
    ("full_cross_entropy", _seed("sasrec_bce"), {}, _class("loss", "build_train_task", "FullCrossEntropy")),
    ("sampled_softmax", _seed("sasrec_bce"), {}, _constant("loss", "NEGATIVES", 256)),
    ("sampled_softmax", _seed("mf_bpr"), {}, _class("loss", "build_train_task", "SampledLoss")),
    ("gbce", _seed("sasrec_bce"), {}, _constant("loss", "LOSS", "gbce")),
    ("more_negatives", SAMPLED, {}, _constant("loss", "NEGATIVES", 512)),
    ("logq_correction", SAMPLED, {"metrics": {"popularity_lift@10": 2.4}}, _constant("loss", "SAMPLER", "popularity")),
    ("uniformity_regularizer", _seed("sasrec_ce"), {"metrics": {"coverage@10": 0.1}}, _uniformity_added),
    ("uniformity_regularizer", _seed("mf_bpr"), {"metrics": {"coverage@10": 0.1}}, _uniformity_added),
    ("more_dropout", _seed("sasrec_ce"), {"history": OVERFIT}, _constant("model", "DROPOUT", 0.3)),
    ("embedding_dropout", _seed("sasrec_ce"), {"history": OVERFIT}, _embedding_dropout),
    ("attention_dropout", _seed("sasrec_bce"), {"history": OVERFIT}, _constant("model", "ATTENTION_DROPOUT", 0.3)),
    ("ligr_layers", _seed("sasrec_ce"), {}, _ligr),
    ("hstu_attention", _seed("sasrec_bce"), {}, _hstu),
    ("adamw_weight_decay", _seed("sasrec_ce"), {"history": OVERFIT}, _adamw),
    ("warmup_cosine", _seed("sasrec_ce"), {"history": IMPROVING}, _warmup),
    ("deeper", _seed("sasrec_ce"), {}, _blocks),
    ("more_heads", _seed("sasrec_ce"), {}, _constant("model", "HEADS", 4)),
    ("wider", _seed("mf_bpr"), {}, _wider),
    ("smaller_batches", _seed("sasrec_bce"), {"history": IMPROVING}, _plan("batch_size", 64)),
    ("higher_learning_rate", _seed("sasrec_bce"), {"history": IMPROVING}, _learning_rate),
    ("genre_side_features", _seed("sasrec_ce"), {"metrics": {"calibration_kl@10": 0.9}}, _genres),
    ("mmr_reranking", _seed("sasrec_ce"), {"metrics": {"ild@10": 0.3}}, _mmr),
    ("popularity_penalty", _seed("sasrec_ce"), {"metrics": {"popularity_lift@10": 3.0}}, _popularity),
    (
        "probe_for_complaint",
        _seed("sasrec_ce"),
        {"feedback": {"complaints": {"era_mismatch": 0.5}}},
        _probes("era_gap"),
    ),
    (
        "probe_for_complaint",
        ERA_PROBE,
        {"feedback": {"complaints": {"era_mismatch": 0.5, "scattered_lists": 0.4}, "signals": {"era_mismatch": 0.2}}},
        _probes("era_gap", "off_taste_share"),
    ),
    (
        "sequential_model",
        _seed("mf_bpr"),
        {"feedback": {"signals": {"sequence_insensitivity": 0.9}}},
        _class("model", "build_model", "SASRec"),
    ),
    ("rating_weighted_positives", _seed("sasrec_ce"), {}, _rating_reward),
]


def test_every_rule_of_the_catalogue_is_exercised():
    assert {case[0] for case in CASES} == set(BY_NAME)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    ("name", "parent", "evidence", "check"), CASES, ids=[f"{case[0]}-{i}" for i, case in enumerate(CASES)]
)
def test_a_rule_applies_however_its_parent_is_written_and_the_child_has_the_intended_value(
    tmp_path, seeds_dir, variant, name, parent, evidence, check
):
    sources = {block: VARIANTS[variant](text) for block, text in parent(seeds_dir).items()}
    ctx = RuleContext(sources, **_typed(evidence))
    rule = BY_NAME[name]
    assert rule.why_not(ctx) is None
    child = apply_change(sources, parse_reply(reply_for(rule, ctx)))
    if variant == "as_written":
        check(trains(tmp_path, child), _load(tmp_path / "parent", sources))
    else:  # the same edit as above, found in other text: loading and the intended value suffice
        check(_load(tmp_path / "child", child), _load(tmp_path / "parent", sources))


def _load(folder: Path, sources: dict[str, str]) -> Candidate:
    Candidate(folder.name, "", sources, {}).write(folder)
    return load_candidate(folder)
