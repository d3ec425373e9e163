"""Known recommender improvements, each a code transform with a precondition.

A rule looks at the parent: its blocks, its validation metrics, its training history and the
directional feedback (diagnosis signals, simulator critiques). When its precondition holds it
writes a reply in the same SEARCH/REPLACE format an LLM would, so one path parses and applies
every proposal. The rationale names the evidence, so the journal shows why each edit was tried.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from offline_agent import SEEDS
from offline_agent.records import Epoch, Feedback
from recsys.candidate import parse_block

TEMPLATES = Path(__file__).parent / "templates"
PROBE_TEMPLATES = {
    "era_mismatch": "era_gap_probe.py",
    "obscure_lists": "obscurity_probe.py",
    "scattered_lists": "genre_focus_probe.py",
}
"""Complaints the built-in probes do not measure, and the probe the rulebook adds for each."""
COMPLAINT_SHARE = 0.3  # share of simulated users raising a complaint before it counts
IMPROVING_ELASTICITY = 0.1  # the best score still grew by at least 0.1% per 1% more training time


@dataclass(frozen=True)
class RuleContext:
    """What a rule may look at: the parent's code, metrics, training history and feedback."""

    sources: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    history: Sequence[Epoch] = ()
    feedback: Feedback = field(default_factory=Feedback)

    def has(self, block: str, text: str) -> bool:
        return text in self.sources[block]

    def metric(self, name: str, default: float = float("nan")) -> float:
        return float(self.metrics.get(name, default))

    def signal(self, name: str) -> float | None:
        """How strongly the feedback points at ``name`` (e.g. ``popularity_bias``): the diagnosis
        probe's signal or the share of simulated users complaining of it, whichever is larger.
        ``undertrained`` comes from the training history: :attr:`time_elasticity`."""
        if name == "undertrained":
            return self.time_elasticity if self.history else None
        values = [self.feedback.signals.get(name), self.feedback.complaints.get(name)]
        present = [float(v) for v in values if v is not None]
        return max(present) if present else None

    def unmeasured_complaint(self) -> str | None:
        """The most raised frequent simulator complaint that no probe measures and for which a probe template
        exists (ties in the order of :data:`PROBE_TEMPLATES`): one probe per proposal, the loudest first."""
        complaints = self.feedback.complaints
        unmeasured = [
            complaint
            for complaint, template in PROBE_TEMPLATES.items()
            if complaints.get(complaint, 0.0) >= COMPLAINT_SHARE
            and complaint not in self.feedback.signals
            and f'measures="{complaint}"' not in self.sources["diagnosis"]
            and (TEMPLATES / template).exists()
        ]
        return max(unmeasured, key=lambda complaint: complaints[complaint], default=None)

    def constant(self, block: str, name: str) -> float | None:
        match = re.search(rf"^{name} = ([0-9.e-]+)$", self.sources[block], re.MULTILINE)
        return float(match[1]) if match else None

    @property
    def overfitting(self) -> bool:
        """Validation peaked and then fell for several epochs while training went on."""
        if len(self.history) < 4:
            return False
        best = max(range(len(self.history)), key=lambda i: self.history[i].valid_ndcg10)
        return best <= len(self.history) - 4

    @property
    def time_budgeted(self) -> bool:
        """Training ended on its time budget (not on its epoch cap or patience)."""
        return self.feedback.stopped == "budget"

    @property
    def time_elasticity(self) -> float:
        """How much the best validation score still grew with training time when training ended, in [0, 1]:
        the log-log slope of the best-so-far score between half the time and the end. Near 1 the score was
        still growing in proportion to the time spent (the budget cut training short); near 0 it had
        levelled off."""
        if len(self.history) < 2:
            return 0.0
        times = [epoch.seconds for epoch in self.history]
        best = list(itertools.accumulate((epoch.valid_ndcg10 for epoch in self.history), max))
        middle = max((i for i, t in enumerate(times) if t <= times[-1] / 2), default=0)
        if times[middle] <= 0 or times[-1] <= times[middle]:
            return 0.0
        if best[middle] <= 0:
            return 1.0 if best[-1] > 0 else 0.0
        slope = math.log(best[-1] / best[middle]) / math.log(times[-1] / times[middle])
        return min(max(slope, 0.0), 1.0)

    @property
    def still_improving(self) -> bool:
        """The best validation score still grew with training time when training ended: it was cut short.
        Judged on the trend (:attr:`time_elasticity`), so one noisy last epoch, such as one the budget cut
        part-way, does not hide it."""
        return self.time_elasticity >= IMPROVING_ELASTICITY


FEEDBACK_WEIGHT = 0.1
"""What answering a problem the feedback flags at full strength is worth, in the units of a rule's prior
(relative NDCG@10 gain): a severe diagnosis or a complaint of every simulated user counts like +10%."""


@dataclass(frozen=True)
class Rule:
    """``prior``: the relative NDCG@10 gain the rule is known to bring where it applies, after training
    to convergence (from the literature it cites or this project's ML-1M runs); ``epoch_cost``: how many
    times longer an epoch takes after the edit (``python benchmarks/rule_costs.py``; edits within its
    ±10% noise count 1.0); ``addresses``: the
    diagnosis signals and complaints it answers. :meth:`expected_value` combines them into the order
    rules are tried in."""

    name: str
    prior: float
    why: str
    applies: Callable[[RuleContext], bool]
    propose: Callable[[RuleContext], str]
    addresses: tuple[str, ...] = ()
    epoch_cost: float = 1.0

    def evidence(self, ctx: RuleContext) -> float:
        return max((ctx.signal(name) or 0.0 for name in self.addresses), default=0.0)

    def budgeted_prior(self, ctx: RuleContext) -> float:
        """The prior where training time is fixed: a child whose epochs cost ``epoch_cost`` times more
        gets that many times fewer of them, and a parent whose score still grew with elasticity ``e``
        loses a factor ``epoch_cost ** -e`` of its score to that. At ``e = 0`` (converged) the prior
        holds as it is; at ``e = 1`` full cross-entropy (+35%, 1.9 times the epoch time) expects -29%,
        which is what it did on a 45-second budget (-42%). Under an epoch cap slower epochs cost no score."""
        elasticity = ctx.time_elasticity if ctx.time_budgeted else 0.0
        return (1 + self.prior) * self.epoch_cost**-elasticity - 1

    def expected_value(self, ctx: RuleContext, gains: Sequence[float] = ()) -> float:
        """The rule's expected relative gain plus the worth of the problem the feedback points at.

        The (budgeted) prior counts as one observation next to ``gains``, the relative fitness changes
        the rule brought its parents earlier in this run, so an edit that worked elsewhere is tried on
        the best too and one that kept failing sinks. Ranking by evidence alone let signals that every
        model shows (say, top-10 coverage on a small catalogue) crowd out the edits known to matter
        most; ranking by the gain alone would ignore the feedback.
        """
        return (self.budgeted_prior(ctx) + sum(gains)) / (1 + len(gains)) + FEEDBACK_WEIGHT * self.evidence(ctx)


def edit(block: str, search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH {block}.py\n{search}=======\n{replace}>>>>>>> REPLACE\n"


def edit_line(ctx: RuleContext, block: str, old: str, new: str) -> str:
    """Replace ``old`` by ``new`` within the one line of ``block`` that contains ``old``."""
    line = next(line for line in ctx.sources[block].splitlines(keepends=True) if old in line)
    return edit(block, line, line.replace(old, new))


def rewrite(block: str, source: str) -> str:
    return f"```python {block}.py\n{source}```\n"


def _set_constant(block: str, name: str, old: float, new: float | int) -> str:
    shown_old = int(old) if float(old).is_integer() and not isinstance(new, float) else old
    return edit(block, f"{name} = {shown_old}\n", f"{name} = {new}\n")


def _is_bce(ctx: RuleContext) -> bool:
    return ctx.has("loss", "binary_cross_entropy_with_logits")


def _is_sasrec(ctx: RuleContext) -> bool:
    return ctx.has("model", "class SASRec(")


SCORE_LINE = "        return last @ self.embed_items(every_item).T\n"
LOSS_RETURN = "        return (losses * weights).sum() / weights.sum().clamp(min=1e-12)\n"
INIT_END = "        self.final_norm = nn.LayerNorm(DIM)\n"
GENRES = '        self.register_buffer("item_genres", torch.as_tensor(spec.item_genres, dtype=torch.float32))\n'


def _after_init(ctx: RuleContext, *lines: str, genres: bool = False) -> str:
    """One edit appending ``lines`` to SASRec's ``__init__``, with the genre buffer when needed."""
    wants_genres = genres or any("item_genres" in line for line in lines)
    added = (GENRES if wants_genres and not ctx.has("model", "item_genres") else "") + "".join(lines)
    return edit("model", INIT_END, INIT_END + added) if added else ""


def _sasrec_scoring_without(ctx: RuleContext, marker: str) -> bool:
    """SASRec whose scoring line is still the plain dot product and lacks ``marker``."""
    return _is_sasrec(ctx) and ctx.has("model", SCORE_LINE) and not ctx.has("model", marker)


def _probes_module(source: str) -> tuple[list[str], str, list[str]] | None:
    """A diagnosis module as its header lines (docstring and imports), the code between them and the
    ``PROBES = [...]`` it ends with, and the entries of that list; None when it parses otherwise or not at all."""
    try:
        body = parse_block(source).body
    except SyntaxError:
        return None
    last = body[-1] if body else None
    if not (
        isinstance(last, ast.Assign)
        and isinstance(last.value, ast.List)
        and [ast.unparse(target) for target in last.targets] == ["PROBES"]
    ):
        return None
    header: list[ast.stmt] = [node for node in body if isinstance(node, ast.Import | ast.ImportFrom)]
    if not header and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        header = body[:1]  # a docstring and no imports
    end = max((node.end_lineno or node.lineno for node in header), default=0)
    lines = source.splitlines(keepends=True)
    return lines[:end], "".join(lines[end : last.lineno - 1]).strip(), [ast.unparse(e) for e in last.value.elts]


def _with_probe(diagnosis: str, template: str) -> str:
    """``diagnosis`` with the template's probe added to its own, so probes accumulate over generations: the
    template's import lines it lacks after its imports, the template's code before ``PROBES``, the template's
    probes appended to ``PROBES``. A module without probes yet becomes the template."""
    ours, theirs = _probes_module(diagnosis), _probes_module(template)
    if ours is None or theirs is None:
        raise ValueError("a diagnosis module and a probe template must end with PROBES = [...]")
    (header, code, probes), (template_header, template_code, template_probes) = ours, theirs
    if not probes:
        return template
    present = {line.strip() for line in header}
    imports = [
        line for line in template_header if line.startswith(("import ", "from ")) and line.strip() not in present
    ]
    blocks = "\n\n\n".join(block for block in (code, template_code) if block)
    return f"{''.join(header + imports)}\n\n{blocks}\n\n\nPROBES = [{', '.join(probes + template_probes)}]\n"


RULES: tuple[Rule, ...] = (
    Rule(
        "full_cross_entropy",
        prior=0.35,
        why="Full softmax cross-entropy over the catalogue beats BCE with one negative (SASRec+, RecSys 2023).",
        applies=lambda c: _is_bce(c),
        propose=lambda c: rewrite("loss", (SEEDS / "sasrec_ce" / "loss.py").read_text()),
        addresses=("weak_ranking_margin",),
        epoch_cost=1.9,
    ),
    Rule(
        "sampled_softmax",
        prior=0.25,
        why="Sampled softmax with many negatives approaches full cross-entropy at a fraction of its cost.",
        applies=lambda c: _is_bce(c) or c.has("loss", "def logsigmoid") or c.has("loss", "F.logsigmoid(margin)"),
        propose=lambda c: rewrite("loss", (TEMPLATES / "sampled_softmax_loss.py").read_text()),
        addresses=("weak_ranking_margin",),
    ),
    Rule(
        "more_negatives",
        prior=0.08,
        why="More sampled negatives give a less biased softmax estimate (gSASRec, SASRec+ 3000).",
        applies=lambda c: (c.constant("loss", "NEGATIVES") or 1e9) < 4096,
        propose=lambda c: _set_constant(
            "loss", "NEGATIVES", c.constant("loss", "NEGATIVES") or 0, int(2 * (c.constant("loss", "NEGATIVES") or 0))
        ),
        addresses=("weak_ranking_margin",),
    ),
    Rule(
        "logq_correction",
        prior=0.03,
        why="Popularity-sampled negatives with logQ correction counter popularity bias (Yi et al. 2019).",
        applies=lambda c: (
            c.has("loss", 'SAMPLER = "uniform"')
            and (c.metric("popularity_lift@10", 0) > 1.5 or (c.signal("popularity_bias") or 0) > 0.5)
        ),
        propose=lambda c: edit("loss", 'SAMPLER = "uniform"\nLOGQ = False\n', 'SAMPLER = "popularity"\nLOGQ = True\n'),
        addresses=("popularity_bias",),
        epoch_cost=1.2,
    ),
    Rule(
        "uniformity_regularizer",
        prior=0.03,
        why="A uniformity term spreads collapsed item embeddings over the sphere (Wang & Isola 2020).",
        applies=lambda c: (
            c.has("loss", LOSS_RETURN)
            and not c.has("loss", "UNIFORMITY_WEIGHT")
            and ((c.signal("embedding_collapse") or 0) > 0.5 or c.metric("coverage@10", 1) < 0.25)
        ),
        propose=lambda c: (
            edit(
                "loss",
                "from recsys.batches import Batch\n",
                "from recsys.batches import Batch\n\nUNIFORMITY_WEIGHT = 0.1\n\n\n"
                "def uniformity(embeddings: torch.Tensor) -> torch.Tensor:\n"
                "    normed = F.normalize(embeddings, dim=-1)\n"
                "    return torch.pdist(normed).pow(2).mul(-2).exp().mean().log()\n",
            )
            + edit(
                "loss",
                LOSS_RETURN,
                "        loss = (losses * weights).sum() / weights.sum().clamp(min=1e-12)\n"
                "        sample = torch.unique(batch.targets[present])[:512]\n"
                "        return loss + UNIFORMITY_WEIGHT * uniformity(model.embed_items(sample))\n",
            )
        ),
        addresses=("embedding_collapse", "low_coverage"),
    ),
    Rule(
        "more_dropout",
        prior=0.04,
        why="Validation fell while training went on: more dropout regularises the network.",
        applies=lambda c: c.overfitting and (c.constant("model", "DROPOUT") or 1) < 0.5,
        propose=lambda c: _set_constant(
            "model",
            "DROPOUT",
            c.constant("model", "DROPOUT") or 0,
            round((c.constant("model", "DROPOUT") or 0) + 0.1, 2),
        ),
    ),
    Rule(
        "adamw_weight_decay",
        prior=0.03,
        why="Decoupled weight decay (AdamW) regularises embeddings that overfit rare items.",
        applies=lambda c: c.has("optim", "torch.optim.Adam(") and c.overfitting,
        propose=lambda c: edit_line(
            c, "optim", "torch.optim.Adam(params, ", "torch.optim.AdamW(params, weight_decay=0.01, "
        ),
    ),
    Rule(
        "warmup_cosine",
        prior=0.05,
        why="Linear warm-up then cosine decay stabilises attention training and ends at a lower loss.",
        # the schedule spans the plan's epochs: a time budget would stop training inside the warm-up
        applies=lambda c: not c.has("optim", "def build_scheduler") and c.still_improving and not c.time_budgeted,
        propose=lambda c: (
            edit("optim", "import torch\n", "import math\n\nimport torch\n")
            + edit(
                "optim",
                "def build_optimizer(params):\n",
                (TEMPLATES / "warmup_cosine.py.txt").read_text() + "def build_optimizer(params):\n",
            )
        ),
        addresses=("undertrained",),
    ),
    Rule(
        "deeper",
        prior=0.03,
        why="One more self-attention block captures longer-range item transitions.",
        applies=lambda c: _is_sasrec(c) and (c.constant("model", "BLOCKS") or 9) < 4,
        propose=lambda c: _set_constant(
            "model", "BLOCKS", c.constant("model", "BLOCKS") or 0, int((c.constant("model", "BLOCKS") or 0) + 1)
        ),
        epoch_cost=1.5,
    ),
    Rule(
        "more_heads",
        prior=0.02,
        why="More attention heads attend to several aspects of the history at once.",
        applies=lambda c: _is_sasrec(c) and (c.constant("model", "HEADS") or 9) < 4,
        propose=lambda c: _set_constant(
            "model", "HEADS", c.constant("model", "HEADS") or 0, int(2 * (c.constant("model", "HEADS") or 0))
        ),
        epoch_cost=1.7,
    ),
    Rule(
        "wider",
        prior=0.05,
        why="Wider embeddings hold more item distinctions when the model underfits.",
        applies=lambda c: (c.constant("model", "DIM") or 1e9) < 256 and not c.overfitting,
        propose=lambda c: _set_constant(
            "model", "DIM", c.constant("model", "DIM") or 0, int(2 * (c.constant("model", "DIM") or 0))
        ),
        epoch_cost=1.7,
    ),
    Rule(
        "smaller_batches",
        prior=0.06,
        why="Training stopped while still improving: smaller batches take more optimiser steps per epoch.",
        applies=lambda c: c.still_improving and c.has("optim", "batch_size=128"),
        propose=lambda c: edit_line(c, "optim", "batch_size=128", "batch_size=64"),
        addresses=("undertrained",),
    ),
    Rule(
        "higher_learning_rate",
        prior=0.06,
        why="Training stopped while still improving: a higher learning rate converges in fewer epochs.",
        applies=lambda c: c.still_improving and c.has("optim", "lr=1e-3"),
        propose=lambda c: edit_line(c, "optim", "lr=1e-3", "lr=2e-3"),
        addresses=("undertrained",),
    ),
    Rule(
        "genre_side_features",
        prior=0.03,
        why="Genre side information added to item embeddings helps lists match users' genre mix.",
        applies=lambda c: (
            _is_sasrec(c)
            and not c.has("model", "genre_projection")
            and (c.metric("calibration_kl@10", 0) > 0.5 or (c.signal("genre_calibration") or 0) > 0.5)
        ),
        propose=lambda c: (
            _after_init(c, "        self.genre_projection = nn.Linear(self.item_genres.shape[1], DIM, bias=False)\n")
            + edit(
                "model",
                "        return self.item_table(kjt)[ITEM_FEATURE].values().reshape(*ids.shape, DIM)\n",
                "        table = self.item_table(kjt)[ITEM_FEATURE].values().reshape(*ids.shape, DIM)\n"
                "        return table + self.genre_projection(self.item_genres[ids])\n",
            )
            + edit(
                "model",
                "        items = self.item_table(batch.history)[ITEM_FEATURE].to_padded_dense(length)\n",
                "        items = self.item_table(batch.history)[ITEM_FEATURE].to_padded_dense(length)\n"
                "        ids = batch.history[ITEM_FEATURE].to_padded_dense(length)\n"
                "        items = items + self.genre_projection(self.item_genres[ids])\n",
            )
        ),
        addresses=("genre_calibration",),
    ),
    Rule(
        "mmr_reranking",
        prior=0.0,
        why="Maximal marginal relevance re-ranks the top of the list for genre diversity (Carbonell & Goldstein 1998).",
        applies=lambda c: (
            _sasrec_scoring_without(c, "MMR_LAMBDA")
            and (c.metric("ild@10", 1) < 0.6 or (c.signal("low_diversity") or 0) > 0.5)
        ),
        propose=lambda c: (
            _after_init(c, genres=True)
            + edit(
                "model",
                "class SASRec(nn.Module):\n",
                (TEMPLATES / "mmr_rerank.py.txt").read_text() + "class SASRec(nn.Module):\n",
            )
            + edit(
                "model",
                SCORE_LINE,
                "        return mmr_rerank(last @ self.embed_items(every_item).T, self.item_genres)\n",
            )
        ),
        addresses=("low_diversity",),
        epoch_cost=1.1,
    ),
    Rule(
        "popularity_penalty",
        prior=0.0,
        why="Recommendations far more popular than users' histories: subtract a log-popularity penalty at scoring.",
        applies=lambda c: _sasrec_scoring_without(c, "POPULARITY_PENALTY") and c.metric("popularity_lift@10", 0) > 2.0,
        propose=lambda c: (
            _after_init(
                c,
                "        popularity = torch.as_tensor(spec.item_popularity, dtype=torch.float32)\n"
                '        self.register_buffer("log_popularity", torch.log1p(popularity))\n',
            )
            + edit_line(c, "model", "DROPOUT = ", "POPULARITY_PENALTY = 0.1\nDROPOUT = ")
            + edit(
                "model",
                SCORE_LINE,
                "        return last @ self.embed_items(every_item).T - POPULARITY_PENALTY * self.log_popularity\n",
            )
        ),
        addresses=("popularity_bias", "low_coverage"),
    ),
    Rule(
        "probe_for_complaint",
        prior=0.0,
        why="Simulated users raise a complaint no probe measures: add a probe for it, kept only if verified.",
        applies=lambda c: c.unmeasured_complaint() is not None and _probes_module(c.sources["diagnosis"]) is not None,
        propose=lambda c: rewrite(
            "diagnosis",
            _with_probe(
                c.sources["diagnosis"], (TEMPLATES / PROBE_TEMPLATES[str(c.unmeasured_complaint())]).read_text()
            ),
        ),
        addresses=tuple(PROBE_TEMPLATES),
    ),
    Rule(
        "sequential_model",
        prior=0.3,
        why="The lists ignore the order of the history: model it with causal self-attention (SASRec).",
        applies=lambda c: not _is_sasrec(c) and (c.signal("sequence_insensitivity") or 0) >= 0.5,
        propose=lambda c: rewrite("model", (SEEDS / "sasrec_bce" / "model.py").read_text()),
        addresses=("sequence_insensitivity",),
        epoch_cost=50.0,
    ),
    Rule(
        "rating_weighted_positives",
        prior=0.02,
        why="Weight positives by their rating: strongly liked items teach more than lukewarm ones.",
        applies=lambda c: c.has("reward", 'REWARD_SPEC = "clicks@1"'),
        propose=lambda c: rewrite(
            "reward",
            '"""Positives weighted by their rating (mean 1); a click without a rating counts as three stars."""\n\n'
            "from reward_lib import training_weights\n\n"
            'REWARD_SPEC = """\n'
            "name: rating_weighted\n"
            "version: 1\n"
            "description: Clicks weighted by their rating.\n"
            "components:\n"
            "  - signal: rating\n"
            "    weight: 1.0\n"
            "    transforms: [{clip: [0.0, 5.0]}]\n"
            '    when: ["click > 0"]\n'
            "    fill: 3.0\n"
            "monotone: {rating: increasing}\n"
            '"""\n\n\n'
            "def event_weights(events):\n"
            "    return training_weights(REWARD_SPEC, events)\n",
        ),
    ),
)


def applicable(ctx: RuleContext, tried: set[str]) -> list[Rule]:
    """Rules whose precondition holds and that were not yet tried on this parent, highest expected value first."""
    rules = [rule for rule in RULES if rule.name not in tried and rule.applies(ctx)]
    return sorted(rules, key=lambda rule: -rule.expected_value(ctx))


def reply_for(rule: Rule, ctx: RuleContext) -> str:
    """The rule's proposal as a reply: the rule's name, rationale and the evidence it answers, then its edits."""
    evidence = ", ".join(f"{name} {ctx.signal(name):.2f}" for name in rule.addresses if ctx.signal(name))
    return f"Rule {rule.name}: {rule.why}{f' Evidence: {evidence}.' if evidence else ''}\n\n{rule.propose(ctx)}"
