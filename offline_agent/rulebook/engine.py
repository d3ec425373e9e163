"""The rule engine: what a rule may look at, how its preconditions and edits are checked, how it is ranked
and how its edits become a reply.

A rule is data (:mod:`offline_agent.rulebook.catalogue`): preconditions on the parent's evidence and code,
and edits of the code's syntax tree (:mod:`offline_agent.rulebook.syntax`). Its reply is written in the
same SEARCH/REPLACE format an LLM would, computed from the edited blocks, so one path parses and applies
every proposal. A rule that does not apply says why (:meth:`Rule.why_not`) instead of doing nothing.
"""

from __future__ import annotations

import ast
import difflib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offline_agent.edits import Edit, EditError, ProposedChange, apply_change
from offline_agent.records import Epoch, Feedback
from offline_agent.rulebook.syntax import Code, ConstantValue, NotFound, keyword_of, lines_of, literal, load_template
from recsys.errors import EvorecError

IMPROVING_ELASTICITY = 0.1  # the best score still grew by at least 0.1% per 1% more training time
FEEDBACK_WEIGHT = 0.1
"""What answering a problem the feedback flags at full strength is worth, in the units of a rule's prior
(relative NDCG@10 gain): a severe diagnosis or a complaint of every simulated user counts like +10%."""


class RuleDoesNotApply(EvorecError):
    """A rule was asked for its edits where its precondition does not hold; the message says why."""


@dataclass(frozen=True)
class RuleContext:
    """What a rule may look at: the parent's code, metrics, training history and feedback."""

    sources: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    history: Sequence[Epoch] = ()
    feedback: Feedback = field(default_factory=Feedback)
    _parsed: dict[str, Code] = field(default_factory=dict, init=False, repr=False, compare=False)

    def code(self, block: str) -> Code:
        """The block's syntax tree (parsed once); raises :class:`NotFound` when it does not parse."""
        if block not in self._parsed:
            self._parsed[block] = Code(block, self.sources[block])
        return self._parsed[block]

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


class Draft:
    """The blocks as a rule's edits leave them. Each edit replaces one block's text with text that parses;
    a block replaced as a whole is a rewrite, the others become SEARCH/REPLACE edits of the parent."""

    def __init__(self, ctx: RuleContext) -> None:
        self.parent = dict(ctx.sources)
        self.sources = dict(ctx.sources)
        self.rewritten: set[str] = set()
        self._ctx = ctx
        self._parsed: dict[str, Code] = {}

    def code(self, block: str) -> Code:
        """The block's current text and tree."""
        if block not in self._parsed:
            self._parsed[block] = self._ctx.code(block)
        return self._parsed[block]

    def update(self, block: str, text: str) -> None:
        if text != self.sources[block]:
            self._parsed[block] = Code(block, text)  # raises NotFound when an edit left the block unparsable
            self.sources[block] = text

    def rewrite(self, block: str, text: str) -> None:
        self.update(block, text)
        self.rewritten.add(block)

    def reply(self) -> str:
        """The changes as a reply body: SEARCH/REPLACE edits, or a rewrite where edits would not apply."""
        parts = []
        for block, text in self.sources.items():
            if text == self.parent[block]:
                continue
            edits = None if block in self.rewritten else search_replace(block, self.parent[block], text)
            if edits is None:
                parts.append(f"```python {block}.py\n{text.rstrip(chr(10))}\n```\n")
            else:
                parts += [f"<<<<<<< SEARCH {block}.py\n{e.search}=======\n{e.replace}>>>>>>> REPLACE\n" for e in edits]
        return "".join(parts)


def search_replace(block: str, before: str, after: str) -> list[Edit] | None:
    """Edits that turn ``before`` into ``after``: each changed run of lines widened by context until its text
    is unique in the block, neighbours merged; None when that cannot be done (then the block is rewritten)."""
    old, new = lines_of(before), lines_of(after)
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    hunks = [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]
    while True:
        merged: list[tuple[int, int, int, int]] = []
        for hunk in hunks:
            if merged and hunk[0] <= merged[-1][1]:
                last = merged.pop()
                hunk = (last[0], max(last[1], hunk[1]), last[2], max(last[3], hunk[3]))
            merged.append(hunk)
        widened = [_widen(hunk, old, before) for hunk in merged]
        if widened == merged:
            break
        hunks = widened
    edits = [Edit(block, "".join(old[i1:i2]), "".join(new[j1:j2])) for i1, i2, j1, j2 in merged]
    if any(not e.search.strip() or not e.search.endswith("\n") or not e.replace.endswith("\n") for e in edits):
        return None
    try:
        if apply_change({block: before}, ProposedChange("", tuple(edits)))[block] == after:
            return edits
    except EditError:
        pass
    return None


def _widen(hunk: tuple[int, int, int, int], old: list[str], text: str) -> tuple[int, int, int, int]:
    """One more line of context on each side, unless the hunk's text is already non-blank and unique."""
    i1, i2, j1, j2 = hunk
    search = "".join(old[i1:i2])
    if search.strip() and text.count(search) == 1:
        return hunk
    before, after = int(i1 > 0), int(i2 < len(old))
    return i1 - before, i2 + after, j1 - before, j2 + after


Condition = Callable[[RuleContext], str | None]
"""A precondition: None when it holds, else what is missing (naming the block and the code or evidence)."""
Transform = Callable[[RuleContext, Draft], None]
"""An edit of the draft; raises :class:`NotFound` when the code lacks what it edits."""


@dataclass(frozen=True)
class Rule:
    """``prior``: the relative NDCG@10 gain the rule is known to bring where it applies, after training
    to convergence (from the literature it cites or this project's ML-1M runs); ``epoch_cost``: how many
    times longer an epoch takes after the edit (``python benchmarks/rule_costs.py``; edits within its
    ±10% noise count 1.0); ``addresses``: the diagnosis signals and complaints it answers; ``fixes``: whether
    its edit means to move them (False for an edit that only measures them, such as a new probe), so that its
    children are checked for having fixed them (:mod:`offline_agent.feedback_checks`).
    :meth:`expected_value` combines them into the order rules are tried in. ``requires``: the
    preconditions, on the evidence and the code; ``edits``: the changes, applied in order. ``source``: the
    publication (or this project's benchmark) the edit and its prior come from, shown with the rationale."""

    name: str
    prior: float
    why: str
    requires: tuple[Condition, ...]
    edits: tuple[Transform, ...]
    addresses: tuple[str, ...] = ()
    fixes: bool = True
    epoch_cost: float = 1.0
    source: str = ""

    def why_not(self, ctx: RuleContext) -> str | None:
        """None when the rule applies to the parent; otherwise every precondition that fails, or what its
        edits could not find in the code."""
        reasons = [reason for condition in self.requires if (reason := condition(ctx))]
        if not reasons:
            try:
                self.draft(ctx)
            except (NotFound, RuleDoesNotApply) as exc:
                reasons.append(str(exc))
        return "; ".join(dict.fromkeys(reasons)) or None  # each reason once, in order

    def applies(self, ctx: RuleContext) -> bool:
        return self.why_not(ctx) is None

    def draft(self, ctx: RuleContext) -> Draft:
        draft = Draft(ctx)
        for transform in self.edits:
            transform(ctx, draft)
        if draft.sources == draft.parent:
            raise RuleDoesNotApply("its edits would leave every block as it is")
        return draft

    def propose(self, ctx: RuleContext) -> str:
        """The rule's edits of the parent as reply text; raises :class:`RuleDoesNotApply` saying why not."""
        reason = self.why_not(ctx)
        if reason:
            raise RuleDoesNotApply(f"rule {self.name} does not apply: {reason}")
        return self.draft(ctx).reply()

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

    def expected_value(self, ctx: RuleContext, gains: Sequence[float] = (), checks: tuple[int, int] = (0, 0)) -> float:
        """The rule's expected relative gain plus the worth of the problem the feedback points at.

        The (budgeted) prior counts as one observation next to ``gains``, the relative fitness changes
        the rule brought its parents earlier in this run, so an edit that worked elsewhere is tried on
        the best too and one that kept failing sinks. Ranking by evidence alone let signals that every
        model shows (say, top-10 coverage on a small catalogue) crowd out the edits known to matter
        most; ranking by the gain alone would ignore the feedback.

        ``checks``: (fixed, checked) of the rule's earlier answers to flagged problems in this run
        (:mod:`offline_agent.feedback_checks`). The worth of the problem is weighed by ``(fixed + 1) /
        (checked + 1)``: full until the rule's fixes are seen not to fix, then falling towards zero.
        """
        fixed, checked = checks
        trust = (fixed + 1) / (checked + 1)
        return (self.budgeted_prior(ctx) + sum(gains)) / (1 + len(gains)) + FEEDBACK_WEIGHT * trust * self.evidence(ctx)


def applicable(rules: Sequence[Rule], ctx: RuleContext, tried: set[str]) -> list[Rule]:
    """Rules whose precondition holds and that were not yet tried on this parent, highest expected value first."""
    found = [rule for rule in rules if rule.name not in tried and rule.applies(ctx)]
    return sorted(found, key=lambda rule: -rule.expected_value(ctx))


def reply_for(rule: Rule, ctx: RuleContext) -> str:
    """The rule's proposal as a reply: the rule's name, rationale and the evidence it answers (the line the
    journal shows), its source and prior, then its edits."""
    evidence = ", ".join(f"{name} {ctx.signal(name):.2f}" for name in rule.addresses if ctx.signal(name))
    headline = f"Rule {rule.name}: {rule.why}{f' Evidence: {evidence}.' if evidence else ''}"
    return f"{headline}\nSource: {rule.source} (prior {rule.prior:+.0%}).\n\n{rule.propose(ctx)}"


# preconditions --------------------------------------------------------------------------------------------
def shows(description: str, test: Callable[[RuleContext], bool]) -> Condition:
    """A precondition on the evidence (metrics, history, feedback) described as what it must show."""
    return lambda ctx: None if test(ctx) else f"the evidence does not show {description}"


def in_code(block: str, test: Callable[[Code], str | None]) -> Condition:
    """A precondition on a block's syntax tree; ``test`` returns what is missing, or None."""

    def check(ctx: RuleContext) -> str | None:
        try:
            return test(ctx.code(block))
        except NotFound as exc:
            return str(exc)

    return check


def constant_below(block: str, name: str, bound: float) -> Condition:
    def test(code: Code) -> str | None:
        value = code.constant(name)
        if not isinstance(value, int | float):
            return f"{code.where} has no numeric module constant {name}"
        return None if value < bound else f"{code.where}: {name} = {value} is not below {bound}"

    return in_code(block, test)


def constant_is(block: str, name: str, expected: object) -> Condition:
    def test(code: Code) -> str | None:
        if code.constant_node(name) is None:
            return f"{code.where} has no module constant {name}"
        value = code.constant(name)
        return None if value == expected else f"{code.where}: {name} is {value!r}, not {expected!r}"

    return in_code(block, test)


def keyword_is(block: str, function: str, keyword: str, expected: object, call: str | None = None) -> Condition:
    """``function()`` passes ``keyword=expected`` to ``call(...)`` (by default: to the one call passing it),
    written as a literal or as the name of a module constant holding it."""

    def test(code: Code) -> str | None:
        node = code.the_call(function, call) if call else code.call_with_keyword(function, keyword)
        present = keyword_of(node, keyword)
        if present is None:
            return f"{code.where}: the {call}(...) call in {function}() does not state {keyword}="
        try:
            value = literal(code.bound_value(present.value))
        except ValueError:
            return f"{code.where}: {function}() passes {keyword}= a value that is not a literal"
        return None if value == expected else f"{code.where}: {function}() passes {keyword}={value!r}, not {expected!r}"

    return in_code(block, test)


def uses(block: str, *names: str) -> Condition:
    """The block uses (calls, references or defines) one of ``names``."""
    shown = " or ".join(names)
    return in_code(block, lambda code: None if any(map(code.uses, names)) else f"{code.where} uses no {shown}")


def lacks(block: str, name: str) -> Condition:
    return in_code(block, lambda code: f"{code.where} already has {name}" if code.uses(name) else None)


def takes(block: str, owner: str, method: str, parameters: int) -> Condition:
    """Class ``owner``'s ``method`` takes ``parameters`` positional parameters, ``self`` included: the shape a
    replacement written for its calls keeps."""

    def test(code: Code) -> str | None:
        found = code.classdef(owner)
        if found is None:
            return f"{code.where} defines no class {owner}"
        count = len(code.function(method, found).args.args)
        return (
            None
            if count == parameters
            else f"{code.where}: {owner}.{method}() takes {count} parameters, not {parameters}"
        )

    return in_code(block, test)


def defines_class(block: str, name: str) -> Condition:
    return in_code(block, lambda code: None if code.classdef(name) else f"{code.where} defines no class {name}")


def lacks_class(block: str, name: str) -> Condition:
    return in_code(block, lambda code: f"{code.where} already defines class {name}" if code.classdef(name) else None)


# edits ----------------------------------------------------------------------------------------------------
def set_constant(block: str, name: str, value: Callable[[Any], ConstantValue]) -> Transform:
    """The module constant ``name`` set to ``value(current value)``."""

    def transform(ctx: RuleContext, draft: Draft) -> None:
        code = draft.code(block)
        node = code.constant_node(name)
        if node is None:
            raise NotFound(f"{code.where} has no module constant {name}")
        draft.update(block, code.set_value(node, value(code.constant(name))))

    return transform


def set_keyword(block: str, function: str, call: str, keyword: str, value: ConstantValue) -> Transform:
    """``keyword=value`` in the one ``call(...)`` of ``function()``, added when absent."""

    def transform(ctx: RuleContext, draft: Draft) -> None:
        code = draft.code(block)
        draft.update(block, code.set_keyword(code.the_call(function, call), keyword, value))

    return transform


def set_keyword_value(block: str, function: str, keyword: str, value: ConstantValue) -> Transform:
    """``keyword=value`` in the one call of ``function()`` that passes ``keyword``."""

    def transform(ctx: RuleContext, draft: Draft) -> None:
        code = draft.code(block)
        draft.update(block, code.set_keyword(code.call_with_keyword(function, keyword), keyword, value))

    return transform


def rename_call(block: str, function: str, old: str, new: str) -> Transform:
    def transform(ctx: RuleContext, draft: Draft) -> None:
        code = draft.code(block)
        draft.update(block, code.rename_call(code.the_call(function, old), new))

    return transform


def add_template(block: str, template: Path) -> Transform:
    """The template's missing imports, constants and definitions added to the block."""

    def transform(ctx: RuleContext, draft: Draft) -> None:
        draft.update(block, load_template(template).add_to(draft.code(block)))

    return transform


def replace_class(block: str, old: str, template: Path) -> Transform:
    """Class ``old`` replaced by the template's class, which takes the same arguments, with the template's
    imports and constants; every use of ``old`` then names the new class."""

    def transform(ctx: RuleContext, draft: Draft) -> None:
        loaded = load_template(template)
        (new,) = [s for s in loaded.statements() if isinstance(s, ast.ClassDef)]
        code = Code(block, draft.code(block).add_imports(loaded.imports))
        found = code.classdef(old)
        if found is None:
            raise NotFound(f"{code.where} defines no class {old}")
        code = Code(block, code.replace_statement(found, loaded.text_of([new])))
        constants = [s for s in loaded.statements() if isinstance(s, ast.Assign | ast.AnnAssign)]
        if constants:
            code = Code(block, code.add_constants(loaded.text_of(constants)))
        draft.update(block, code.rename(old, new.name))

    return transform


def rewrite(block: str, path: Path) -> Transform:
    """The block replaced by the file at ``path`` (a seed's block or a template)."""
    return lambda ctx, draft: draft.rewrite(block, path.read_text())
