"""The edits behind the best published ML-1M results: their losses compute what the papers define, each rule
applies where its precondition holds and says why not elsewhere, and each child trains with the real trainer."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F

from offline_agent.edits import apply_change, parse_reply
from offline_agent.rulebook.catalogue import RULES
from offline_agent.rulebook.engine import RuleContext, RuleDoesNotApply, reply_for
from recsys.candidate import Candidate, load_candidate
from recsys.trainer import Trainer, TrainerConfig
from tests.offline_agent.rulebook.conftest import IMPROVING, NUM_ITEMS, OVERFIT, SPEC

BY_NAME = {rule.name: rule for rule in RULES}
SEEDS = Path(__file__).resolve().parents[3] / "offline_agent" / "seeds"
POPULAR = {"popularity_lift@10": 2.4}


def _seed(name: str) -> dict[str, str]:
    return dict(load_candidate(SEEDS / name).sources)


def _child(sources: dict[str, str], *rules: str, **evidence: object) -> dict[str, str]:
    """``sources`` after each rule in turn, with the same evidence."""
    for name in rules:
        ctx = RuleContext(sources, **evidence)  # type: ignore[arg-type]
        sources = apply_change(sources, parse_reply(reply_for(BY_NAME[name], ctx)))
    return sources


def _load(tmp_path: Path, sources: dict[str, str]) -> Candidate:
    folder = tmp_path / "child"
    Candidate("child", "", sources, {}).write(folder)
    return load_candidate(folder)


def _loss_module(tmp_path: Path, *rules: str) -> ModuleType:
    return _load(tmp_path, _child(_seed("sasrec_bce"), *rules, metrics=POPULAR)).modules["loss"]


def _states(rows: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, 8, generator=generator, requires_grad=True)
    table = torch.randn(NUM_ITEMS + 1, 8, generator=generator, requires_grad=True)
    positives = torch.randint(1, NUM_ITEMS + 1, (rows,), generator=generator)
    return hidden, table, positives


class _Table(torch.nn.Module):
    """A model whose item embeddings are a plain table: what the loss needs of a model."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def embed_items(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]


# the losses ------------------------------------------------------------------------------------------------
def test_gbce_at_calibration_zero_is_bce_and_at_one_weights_the_positive_by_the_sampling_rate(tmp_path):
    loss = _loss_module(tmp_path, "gbce")
    assert (loss.LOSS, loss.NEGATIVES, loss.CALIBRATION) == ("gbce", 256, 0.75)
    assert loss.gbce_beta(256, 3416, 0.0) == pytest.approx(1.0)
    assert loss.gbce_beta(256, 3416, 1.0) == pytest.approx(256 / 3415)
    assert 256 / 3415 < loss.gbce_beta(256, 3416, 0.75) < 1.0
    positive, negative = torch.randn(5), torch.randn(5, 3)
    bce = F.binary_cross_entropy_with_logits(positive, torch.ones(5), reduction="none") + (
        F.binary_cross_entropy_with_logits(negative, torch.zeros(5, 3), reduction="none").sum(1)
    )
    assert torch.allclose(loss.gbce_losses(positive, negative, 1.0), bce / 4)


def test_gbce_gradient_on_the_positive_is_beta_times_bce_gradient(tmp_path):
    loss = _loss_module(tmp_path, "gbce")
    positive = torch.tensor([0.3, -1.2], requires_grad=True)
    loss.gbce_losses(positive, torch.zeros(2, 3), 0.4).sum().backward()
    assert torch.allclose(positive.grad, -0.4 * torch.sigmoid(-positive.detach()) / 4)


def test_sampled_softmax_with_every_item_as_negative_is_full_cross_entropy(tmp_path):
    task = _loss_module(tmp_path, "sampled_softmax").build_train_task(SPEC)
    hidden, table, positives = _states()
    every_item = torch.arange(1, NUM_ITEMS + 1)  # the positive is among them and is left out of its row
    sampled = task.losses(_Table(table), hidden, positives, every_item)
    logits = hidden @ table.T
    logits[:, 0] = float("-inf")
    full = F.cross_entropy(logits, positives, reduction="none")
    assert torch.allclose(sampled, full, atol=1e-5)
    hidden_grad, table_grad = torch.autograd.grad(sampled.sum(), (hidden, table))
    assert torch.allclose(hidden_grad, torch.autograd.grad(full.sum(), hidden)[0], atol=1e-5)
    assert torch.isfinite(table_grad).all()


def test_logq_correction_shifts_every_logit_by_minus_log_q(tmp_path):
    module = _loss_module(tmp_path, "sampled_softmax", "logq_correction")
    assert (module.SAMPLER, module.LOGQ) == ("popularity", True)
    task = module.build_train_task(SPEC)
    q = task.probabilities
    assert q[0] == 0 and torch.allclose(q[1:], (SPEC.item_popularity[1:] + 1) / (SPEC.item_popularity[1:] + 1).sum())
    hidden, table, positives = _states()
    negatives = torch.tensor([3, 7, 7, 20])
    corrected = task.losses(_Table(table), hidden, positives, negatives)
    positive_logits = (hidden * table[positives]).sum(-1) - q[positives].log()
    negative_logits = (hidden @ table[negatives].T - q[negatives].log()).masked_fill(
        negatives[None, :] == positives[:, None], float("-inf")
    )
    assert torch.allclose(corrected, module.softmax_losses(positive_logits, negative_logits))
    module.LOGQ = False  # the same draw without the correction scores otherwise: the shift is not a constant
    assert not torch.allclose(corrected, task.losses(_Table(table), hidden, positives, negatives))


# preconditions -----------------------------------------------------------------------------------------------
def _refused(name: str, sources: dict[str, str], reason: str, **evidence: object) -> None:
    ctx = RuleContext(sources, **evidence)  # type: ignore[arg-type]
    assert reason in (BY_NAME[name].why_not(ctx) or ""), BY_NAME[name].why_not(ctx)
    with pytest.raises(RuleDoesNotApply, match=f"rule {name} does not apply"):
        reply_for(BY_NAME[name], ctx)


def test_the_losses_apply_to_bce_with_one_negative_only():
    bce, ce = _seed("sasrec_bce"), _seed("sasrec_ce")
    assert BY_NAME["gbce"].applies(RuleContext(bce)) and BY_NAME["sampled_softmax"].applies(RuleContext(bce))
    _refused("gbce", ce, "loss.py uses no binary_cross_entropy_with_logits")
    _refused("gbce", _seed("mf_bpr"), "loss.py uses no binary_cross_entropy_with_logits")  # BPR is not BCE
    gbce = _child(bce, "gbce")
    _refused("gbce", gbce, "loss.py samples NEGATIVES negatives already")
    _refused("sampled_softmax", gbce, "loss.py samples NEGATIVES negatives already")
    _refused("logq_correction", gbce, "loss.py: LOSS is 'gbce', not 'softmax'", metrics=POPULAR)
    assert BY_NAME["more_negatives"].applies(RuleContext(gbce))


def test_the_layer_rules_need_the_seeds_layers():
    bce = _seed("sasrec_bce")
    _refused("ligr_layers", _seed("mf_bpr"), "model.py defines no class SASRec")
    ligr = _child(bce, "ligr_layers")
    _refused("ligr_layers", ligr, "model.py defines no class PointWiseFeedForward")
    post_norm = bce["model"].replace(
        "x = x + self.dropout(self.attention(self.attention_norm(x)))",
        "x = self.attention_norm(x + self.dropout(self.attention(x)))",
    )
    _refused("ligr_layers", {**bce, "model": post_norm}, "adds no self.attention(norm(x)) to its input x (pre-norm)")
    hstu = _child(bce, "hstu_attention")
    _refused("hstu_attention", hstu, "model.py defines no class CausalSelfAttention")
    narrow = bce["model"].replace("def __init__(self, dim: int, heads: int, dropout: float)", "def __init__(self, dim)")
    _refused("hstu_attention", {**bce, "model": narrow}, "CausalSelfAttention.__init__() takes 2 parameters, not 4")
    assert BY_NAME["hstu_attention"].applies(RuleContext(ligr)) and BY_NAME["ligr_layers"].applies(RuleContext(hstu))


def test_the_dropout_rules_need_overfitting_and_add_their_rate_once():
    bce = _seed("sasrec_bce")
    for name in ("embedding_dropout", "attention_dropout"):
        _refused(name, bce, "the evidence does not show overfitting")
    _refused("embedding_dropout", _child(bce, "embedding_dropout", history=OVERFIT), "already has EMBEDDING_DROPOUT",
             history=OVERFIT)  # fmt: skip
    _refused(
        "attention_dropout", _child(bce, "hstu_attention"), "defines no class CausalSelfAttention", history=OVERFIT
    )


def test_every_rule_names_its_source_and_the_reply_shows_it_below_the_journal_line():
    assert all(rule.source for rule in RULES)
    reply = reply_for(BY_NAME["gbce"], RuleContext(_seed("sasrec_bce")))
    headline, source = reply.splitlines()[:2]
    assert headline.startswith("Rule gbce: ") and "Petrov & Macdonald, RecSys 2023" in source
    assert source.endswith("(prior +29%).")


# the children train ------------------------------------------------------------------------------------------
CHILDREN: dict[str, tuple[str, list[tuple[str, dict[str, object]]]]] = {
    "gbce": ("sasrec_bce", [("gbce", {}), ("more_negatives", {})]),
    "logq_correction": ("sasrec_bce", [("sampled_softmax", {}), ("logq_correction", {"metrics": POPULAR})]),
    "ligr_layers": ("sasrec_bce", [("ligr_layers", {})]),
    "hstu_attention": ("sasrec_bce", [("hstu_attention", {})]),
    "dropouts": (
        "sasrec_bce",
        [("embedding_dropout", {"history": OVERFIT}), ("attention_dropout", {"history": OVERFIT})],
    ),
    "adamw_warmup": (
        "sasrec_bce",
        [("adamw_weight_decay", {"history": OVERFIT}), ("warmup_cosine", {"history": IMPROVING})],
    ),
}


@pytest.mark.parametrize("case", CHILDREN)
def test_the_child_trains_with_the_real_trainer_on_movielens(tmp_path, prepared_small, case):
    seed, steps = CHILDREN[case]
    sources = _seed(seed)
    for rule, evidence in steps:
        sources = _child(sources, rule, **evidence)
    candidate = _load(tmp_path, sources)
    result = Trainer(candidate, prepared_small, TrainerConfig(max_epochs=2, max_users=30, progress=False)).fit()
    assert result.epochs == 2 and all(torch.isfinite(torch.tensor(line["loss"])) for line in result.history)
    assert 0.0 <= result.valid["ndcg@10"] <= 1.0


def test_the_docs_table_lists_every_rule_with_its_prior():
    page = (SEEDS.parents[1] / "docs" / "offline_agent.md").read_text()
    rows = {
        cells[0].strip("`"): cells[2]
        for line in page.splitlines()
        if line.startswith("| `") and len(cells := [cell.strip() for cell in line.strip("|").split("|")]) == 4
    }
    assert set(rows) == set(BY_NAME)
    for name, prior in rows.items():
        shown = BY_NAME[name].prior
        assert prior == "0" if shown == 0 else prior.startswith(f"{shown:+.0%}"), (name, prior)


def test_a_sampled_loss_child_declares_its_negatives_and_calibration_for_tuning():
    from offline_agent.search_space import current_values, declared_space

    child = _child(_seed("sasrec_bce"), "gbce", "more_negatives")
    space = declared_space(child)
    assert {"loss.NEGATIVES", "loss.CALIBRATION"} <= {tunable.key for tunable in space}
    values = current_values(child, space)
    assert values is not None and values["loss.NEGATIVES"] == 512 and values["loss.CALIBRATION"] == 0.75
