"""Known recommender improvements: each rule's source, prior, preconditions and edits of the syntax tree.

A rule looks at the parent: its blocks, its validation metrics, its training history and the
directional feedback (diagnosis signals, simulator critiques). It finds what it edits by structure and
name (a module constant, a keyword of a named call, the return statement of a named method), so a
reformatted parent takes the same edit. Code it adds comes from the files in ``templates/``; the
one-line expressions it wraps around existing code are patterns whose upper-case holes stand for the
names the parent uses. The rationale names the evidence, so the journal shows why each edit was tried.
"""

from __future__ import annotations

import ast
import copy

from offline_agent import SEEDS
from offline_agent.rulebook.engine import (
    Draft,
    Rule,
    RuleContext,
    Transform,
    add_template,
    constant_below,
    constant_is,
    defines_class,
    in_code,
    keyword_is,
    lacks,
    lacks_class,
    rename_call,
    replace_class,
    rewrite,
    set_constant,
    set_keyword,
    set_keyword_value,
    shows,
    takes,
    uses,
)
from offline_agent.rulebook.syntax import (
    Code,
    Function,
    NotFound,
    callee,
    expression,
    keyword_of,
    load_template,
    statement,
)

TEMPLATES = SEEDS.parent / "rulebook" / "templates"
PROBE_TEMPLATES = {
    "era_mismatch": "era_gap_probe.py",
    "obscure_lists": "obscurity_probe.py",
    "scattered_lists": "genre_focus_probe.py",
}
"""Complaints the built-in probes do not measure, and the probe the rulebook adds for each."""
COMPLAINT_SHARE = 0.3  # share of simulated users raising a complaint before it counts
MODEL_IMPORTS = [
    node
    for node in ast.parse("import torch\nfrom torch import nn").body
    if isinstance(node, ast.Import | ast.ImportFrom)
]
"""What the patterns added to a model's methods refer to."""


# the model: SASRec's __init__, embed_items, forward and score ------------------------------------------------
def _class(code: Code, name: str) -> ast.ClassDef:
    found = code.classdef(name)
    if found is None:
        raise NotFound(f"{code.where} defines no class {name}")
    return found


def _sasrec(code: Code) -> ast.ClassDef:
    return _class(code, "SASRec")


def _method(code: Code, name: str, least: int, owner: str = "SASRec") -> tuple[Function, list[str]]:
    """Class ``owner``'s method ``name`` and its parameter names (``self`` first), at least ``least`` of them."""
    method = code.function(name, _class(code, owner))
    parameters = [argument.arg for argument in method.args.args]
    if len(parameters) < least:
        raise NotFound(f"{code.where}: {owner}.{name}() takes fewer than {least} parameters")
    return method, parameters


def _dot_product_score(code: Code) -> str | None:
    """SASRec's ``score`` still returns a plain dot product (``@``): no scoring rule changed it yet."""
    score, _ = _method(code, "score", 1)
    value = code.final_return(score, "SASRec.")
    if isinstance(value, ast.BinOp) and isinstance(value.op, ast.MatMult):
        return None
    return f"{code.where}: SASRec.score() does not return a plain dot product (its scoring was changed already)"


def _registers(function: Function, name: str) -> bool:
    """``function`` registers or assigns the attribute ``name`` (``self.register_buffer("name", ...)``)."""
    return any(
        (isinstance(node, ast.Constant) and node.value == name)
        or (isinstance(node, ast.Attribute) and node.attr == name and isinstance(node.ctx, ast.Store))
        for node in ast.walk(function)
    )


def _with_imports(draft: Draft) -> Code:
    """The model block with the imports its added statements refer to."""
    return Code("model", draft.code("model").add_imports(MODEL_IMPORTS))


def register_buffer(name: str, value: str) -> Transform:
    """``self.register_buffer(name, value)`` at the end of SASRec's ``__init__`` unless it registers ``name``
    already; SPEC in ``value`` stands for ``__init__``'s spec parameter."""

    def transform(ctx: RuleContext, draft: Draft) -> None:
        code = _with_imports(draft)
        init, (self_name, spec) = _method(code, "__init__", 2)
        if not _registers(init, name):
            register = statement(f"SELF.register_buffer({name!r}, {value})", SELF=self_name, SPEC=spec)
            code = Code("model", code.append_to(init, [register]))
        draft.update("model", code.text)

    return transform


def genre_projection(ctx: RuleContext, draft: Draft) -> None:
    """``self.genre_projection``, genres to DIM, added to the item embeddings of ``embed_items`` and of the
    item-table lookup in ``forward``."""
    code = _with_imports(draft)
    if code.constant("DIM") is None:
        raise NotFound(f"{code.where} has no module constant DIM (the embedding width)")
    init, (self_name, _) = _method(code, "__init__", 2)
    layer = statement("SELF.genre_projection = nn.Linear(SELF.item_genres.shape[1], DIM, bias=False)", SELF=self_name)
    draft.update("model", code.append_to(init, [layer]))

    code = draft.code("model")
    embed, (self_name, ids) = _method(code, "embed_items", 2)
    value = code.final_return(embed, "SASRec.")
    added = expression(
        "EMBEDDED + SELF.genre_projection(SELF.item_genres[IDS])", EMBEDDED=value, SELF=self_name, IDS=ids
    )
    draft.update("model", code.replace(value, added))

    code = draft.code("model")
    forward, (self_name, _) = _method(code, "forward", 2)
    lookup = _item_table_lookup(forward, self_name)
    if lookup is None:
        if not code.calls(forward, "embed_items"):
            raise NotFound(f"{code.where}: SASRec.forward() looks items up neither by self.item_table nor embed_items")
        return  # forward embeds through embed_items, which adds the genres already
    assignment, call = lookup
    add = statement(
        "TARGET = TARGET + SELF.genre_projection(SELF.item_genres[IDS])",
        TARGET=assignment.targets[0],
        SELF=self_name,
        IDS=_without_call(assignment.value, call),
    )
    draft.update("model", code.insert_after(assignment, [add]))


def _without_call(value: ast.expr, call: ast.Call) -> ast.expr:
    """A copy of ``value`` with ``call`` replaced by its one argument: the ids an embedding lookup reads."""

    class Unwrap(ast.NodeTransformer):
        def visit_Call(self, node: ast.Call) -> ast.expr:
            same = all(getattr(node, at) == getattr(call, at) for at in ("lineno", "col_offset", "end_col_offset"))
            return node.args[0] if same else self.generic_visit(node)  # type: ignore[return-value]

    return Unwrap().visit(copy.deepcopy(value))


def _item_table_lookup(forward: Function, self_name: str) -> tuple[ast.Assign, ast.Call] | None:
    """The assignment in ``forward`` that looks items up in ``self.item_table(history)``, and that call."""
    for line in forward.body:
        if not (isinstance(line, ast.Assign) and len(line.targets) == 1):
            continue
        for node in ast.walk(line.value):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "item_table"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == self_name
                and len(node.args) == 1
            ):
                return line, node
    return None


def wrap_score(pattern: str) -> Transform:
    """SASRec's score expression put into ``pattern`` as SCORES (SELF: the method's ``self``)."""

    def transform(ctx: RuleContext, draft: Draft) -> None:
        code = draft.code("model")
        score, parameters = _method(code, "score", 1)
        value = code.final_return(score, "SASRec.")
        draft.update("model", code.replace(value, expression(pattern, SCORES=value, SELF=parameters[0])))

    return transform


def add_model_template(name: str) -> Transform:
    """A template added to the model block, its definitions right before class SASRec."""

    def transform(ctx: RuleContext, draft: Draft) -> None:
        draft.update("model", load_template(TEMPLATES / name).add_to(draft.code("model"), before=_sasrec))

    return transform


# the layers: LiGR's gated residuals, the dropout of the input embeddings and of the attention weights ----------
RESIDUAL_GATES = {"attention": "attention_gate", "feed_forward": "feed_forward_gate"}
"""SASRecBlock's sublayers and the gate LiGR puts on each one's residual update."""


def _sublayer_call(node: ast.AST, self_name: str, sublayer: str) -> ast.Call | None:
    """The call ``self.<sublayer>(...)`` inside ``node``, if any."""
    return next(
        (
            call
            for call in ast.walk(node)
            if isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == sublayer
            and isinstance(call.func.value, ast.Name)
            and call.func.value.id == self_name
        ),
        None,
    )


def _residual(code: Code, sublayer: str) -> tuple[ast.BinOp, str]:
    """The residual sum ``x + ...self.<sublayer>(norm(x))...`` in SASRecBlock.forward, and forward's ``self``:
    the block must be pre-norm (the sublayer reads a normalised copy of the stream it adds to)."""
    forward, (self_name, *_) = _method(code, "forward", 2, "SASRecBlock")
    for node in ast.walk(forward):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and isinstance(node.left, ast.Name):
            call = _sublayer_call(node.right, self_name, sublayer)
            if call is not None and call.args and isinstance(call.args[0], ast.Call):
                return node, self_name
    raise NotFound(f"{code.where}: SASRecBlock.forward() adds no self.{sublayer}(norm(x)) to its input x (pre-norm)")


def pre_norm_residuals(code: Code) -> str | None:
    for sublayer in RESIDUAL_GATES:
        _residual(code, sublayer)
    return None


def gate_residuals(ctx: RuleContext, draft: Draft) -> None:
    """Each residual update of SASRecBlock scaled by a learned gate of the stream it is added to, as LiGR
    does: ``x + sigmoid(W x + b) * update``."""
    for sublayer, gate in RESIDUAL_GATES.items():
        code = _with_imports(draft)
        init, (self_name, dim, *_) = _method(code, "__init__", 2, "SASRecBlock")
        layer = statement(f"SELF.{gate} = nn.Linear(DIM, DIM)", SELF=self_name, DIM=dim)
        draft.update("model", code.append_to(init, [layer]))
        code = draft.code("model")
        residual, self_name = _residual(code, sublayer)
        gated = expression(
            f"STREAM + torch.sigmoid(SELF.{gate}(STREAM)) * UPDATE",
            STREAM=residual.left,
            SELF=self_name,
            UPDATE=residual.right,
        )
        draft.update("model", code.replace(residual, gated))


def _dropout_layer(code: Code) -> ast.expr:
    """The rate of ``self.input_dropout = nn.Dropout(rate)`` in SASRec's ``__init__``."""
    init, (self_name, *_) = _method(code, "__init__", 1)
    for line in ast.walk(init):
        if (
            isinstance(line, ast.Assign)
            and [ast.unparse(target) for target in line.targets] == [f"{self_name}.input_dropout"]
            and isinstance(line.value, ast.Call)
            and callee(line.value) == "Dropout"
            and len(line.value.args) == 1
        ):
            return line.value.args[0]
    raise NotFound(f"{code.where}: SASRec.__init__() sets no self.input_dropout = nn.Dropout(rate)")


def embedding_dropout_rate(ctx: RuleContext, draft: Draft) -> None:
    code = draft.code("model")
    draft.update("model", code.replace(_dropout_layer(code), "EMBEDDING_DROPOUT"))


def attention_dropout_rate(ctx: RuleContext, draft: Draft) -> None:
    """``dropout_p=ATTENTION_DROPOUT`` while training in CausalSelfAttention's attention call."""
    code = draft.code("model")
    forward, (self_name, *_) = _method(code, "forward", 1, "CausalSelfAttention")
    calls = [call for call in ast.walk(forward) if isinstance(call, ast.Call) and keyword_of(call, "dropout_p")]
    if len(calls) != 1:
        raise NotFound(f"{code.where}: CausalSelfAttention.forward() makes {len(calls)} calls with dropout_p=, not one")
    rate = expression("ATTENTION_DROPOUT if SELF.training else 0.0", SELF=self_name)
    draft.update("model", code.replace(keyword_of(calls[0], "dropout_p").value, rate))  # type: ignore[union-attr]


# the loss: the return of the train task's forward -------------------------------------------------------------
def add_uniformity_term(ctx: RuleContext, draft: Draft) -> None:
    """The train task's loss plus ``uniformity_term(model, batch)`` (``templates/uniformity.py``)."""
    code = draft.code("loss")
    task = code.returned_class("build_train_task")
    forward = code.function("forward", task)
    parameters = [argument.arg for argument in forward.args.args]
    if len(parameters) != 3:
        raise NotFound(f"{code.where}: {task.name}.forward() does not take (self, model, batch)")
    value = code.final_return(forward, f"{task.name}.")
    term = expression("LOSS + uniformity_term(MODEL, BATCH)", LOSS=value, MODEL=parameters[1], BATCH=parameters[2])
    draft.update("loss", code.replace(value, term))


# the diagnosis: probes for complaints no probe measures ---------------------------------------------------------
def _measured(ctx: RuleContext) -> set[str]:
    """What the diagnosis module's own probes declare they measure (``@probe(..., measures="...")``)."""
    try:
        tree = ctx.code("diagnosis").tree
    except NotFound:
        return set()
    return {
        keyword.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for keyword in node.keywords
        if keyword.arg == "measures"
        and isinstance(keyword.value, ast.Constant)
        and isinstance(keyword.value.value, str)
    }


def unmeasured_complaint(ctx: RuleContext) -> str | None:
    """The most raised frequent simulator complaint that no probe measures and for which a probe template
    exists (ties in the order of :data:`PROBE_TEMPLATES`): one probe per proposal, the loudest first."""
    complaints = ctx.feedback.complaints
    measured = _measured(ctx) | set(ctx.feedback.signals)
    unmeasured = [c for c in PROBE_TEMPLATES if complaints.get(c, 0.0) >= COMPLAINT_SHARE and c not in measured]
    return max(unmeasured, key=lambda complaint: complaints[complaint], default=None)


def _probes(code: Code) -> tuple[ast.Assign | ast.AnnAssign, ast.List]:
    """The ``PROBES = [...]`` (or ``PROBES: list = [...]``) that ends a diagnosis module, and its list."""
    last = code.tree.body[-1] if code.tree.body else None
    if isinstance(last, ast.Assign | ast.AnnAssign) and isinstance(last.value, ast.List):
        targets = last.targets if isinstance(last, ast.Assign) else [last.target]
        if [ast.unparse(target) for target in targets] == ["PROBES"]:
            return last, last.value
    raise NotFound(f"{code.where} does not end with PROBES = [...]")


def ends_with_probes(code: Code) -> str | None:
    _probes(code)
    return None


def add_probe(ctx: RuleContext, draft: Draft) -> None:
    """The probe template for the loudest unmeasured complaint: the whole module while it has no probes yet,
    else its missing imports, its code before ``PROBES`` and its probes appended to ``PROBES``."""
    template = load_template(TEMPLATES / PROBE_TEMPLATES[str(unmeasured_complaint(ctx))])
    if not _probes(draft.code("diagnosis"))[1].elts:
        return draft.rewrite("diagnosis", template.text)
    definitions = template.statements()[:-1]  # the template ends with its own PROBES = [...]
    code = Code("diagnosis", draft.code("diagnosis").add_imports(template.imports))
    code = Code("diagnosis", code.insert_code(template.text_of(definitions), _probes(code)[0]))
    listed = _probes(code)[1]
    draft.update("diagnosis", code.replace(listed, ast.List([*listed.elts, *_probes(template.code)[1].elts])))


STILL_IMPROVING = shows("training still improving when it ended", lambda c: c.still_improving)
OVERFITTING = shows("overfitting (validation fell for several epochs)", lambda c: c.overfitting)
IS_BCE = uses("loss", "binary_cross_entropy_with_logits")
ONE_NEGATIVE = in_code(
    "loss",
    lambda code: f"{code.where} samples NEGATIVES negatives already" if code.constant_node("NEGATIVES") else None,
)
SASREC = defines_class("model", "SASRec")
GENRES = register_buffer("item_genres", "torch.as_tensor(SPEC.item_genres, dtype=torch.float32)")
SAMPLED = TEMPLATES / "sampled_loss.py"
KLENITSKIY = "Klenitskiy & Vasilev, RecSys 2023, 'Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?'"
GSASREC = "Petrov & Macdonald, RecSys 2023, 'gSASRec: Reducing Overconfidence in Sequential Recommendation'"
ESASREC = "eSASRec (RecSys 2025, arXiv 2508.06450) with LiGR layers (LinkedIn, arXiv 2502.03417, 2025)"

RULES: tuple[Rule, ...] = (
    Rule(
        "full_cross_entropy",
        prior=0.35,
        why="Full softmax cross-entropy over the catalogue beats BCE with one negative (SASRec+).",
        requires=(IS_BCE,),
        edits=(rewrite("loss", SEEDS / "sasrec_ce" / "loss.py"),),
        addresses=("weak_ranking_margin",),
        epoch_cost=1.9,
        source=f"{KLENITSKIY}: ML-1M test NDCG@10 0.1821 against SASRec's 0.1341 (+36%); "
        "this project's ML-1M runs 0.1678 against 0.1253 (+34%)",
    ),
    Rule(
        "sampled_softmax",
        prior=0.25,
        why="Sampled softmax with many negatives approaches full cross-entropy at a fraction of its cost.",
        requires=(uses("loss", "binary_cross_entropy_with_logits", "logsigmoid"), ONE_NEGATIVE),
        edits=(rewrite("loss", SAMPLED),),
        addresses=("weak_ranking_margin",),
        source=f"{KLENITSKIY}: 3000 uniform negatives reach ML-1M NDCG@10 0.1857 (+38% over SASRec) and quality "
        "grows with the number of negatives; 256 (eSASRec's setting) stays below that",
    ),
    Rule(
        "gbce",
        prior=0.29,
        why="gBCE with 256 negatives (t = 0.75) counters the overconfidence of BCE with sampled negatives (gSASRec).",
        requires=(IS_BCE, ONE_NEGATIVE),
        edits=(rewrite("loss", SAMPLED), set_constant("loss", "LOSS", lambda _: "gbce")),
        addresses=("weak_ranking_margin",),
        source=f"{GSASREC}: the authors' ML-1M model reaches NDCG@10 0.1726 (gBCE, 256 negatives, t = 0.75), "
        "+37% over their BCE run (0.1259) and +29% over the SASRec figure the other loss priors use (0.1341)",
    ),
    Rule(
        "more_negatives",
        prior=0.03,
        why="Twice the sampled negatives give a less biased softmax estimate.",
        requires=(constant_below("loss", "NEGATIVES", 4096),),
        edits=(set_constant("loss", "NEGATIVES", lambda negatives: int(2 * negatives)),),
        addresses=("weak_ranking_margin",),
        source=f"{KLENITSKIY}: +38% at 3000 negatives against +25% (sampled_softmax's prior) at 256 is "
        "(1.38 / 1.25) ** (1 / 3.55) - 1 = +3% per doubling",
    ),
    Rule(
        "logq_correction",
        prior=0.03,
        why="Popularity-sampled negatives with logQ correction (logits minus log q) counter popularity bias.",
        requires=(
            constant_is("loss", "SAMPLER", "uniform"),
            constant_is("loss", "LOSS", "softmax"),
            shows(
                "popularity bias (popularity_lift@10 above 1.5 or a popularity_bias signal above 0.5)",
                lambda c: c.metric("popularity_lift@10", 0) > 1.5 or (c.signal("popularity_bias") or 0) > 0.5,
            ),
        ),
        edits=(
            set_constant("loss", "SAMPLER", lambda _: "popularity"),
            set_constant("loss", "LOGQ", lambda _: True),
        ),
        addresses=("popularity_bias",),
        epoch_cost=1.2,
        source="Yi et al., RecSys 2019, 'Sampling-Bias-Corrected Neural Modeling for Large Corpus Item "
        "Recommendations'; no ML-1M figure: eSASRec's logQ on popularity-biased negatives gained 9% (ML-20M) "
        "to 14% (BeerAdvocate), kept low since uniform negatives are ML-1M's published best",
    ),
    Rule(
        "ligr_layers",
        prior=0.05,
        why="LiGR layers: a SwiGLU feed-forward network and learned gates on the pre-norm residual updates.",
        requires=(
            SASREC,
            takes("model", "PointWiseFeedForward", "__init__", 3),
            in_code("model", pre_norm_residuals),
            lacks("model", "attention_gate"),
        ),
        edits=(replace_class("model", "PointWiseFeedForward", TEMPLATES / "swiglu_feed_forward.py"), gate_residuals),
        source=f"{ESASREC}: ML-1M NDCG@10 0.1772 against 0.1684 for SASRec with the same sampled softmax (+5%)",
    ),
    Rule(
        "hstu_attention",
        prior=0.02,
        why="HSTU's pointwise attention: SiLU weights that keep engagement intensity, gated by a fourth projection.",
        requires=(SASREC, takes("model", "CausalSelfAttention", "__init__", 4)),
        edits=(replace_class("model", "CausalSelfAttention", TEMPLATES / "pointwise_attention.py"),),
        source="Zhai et al., ICML 2024, 'Actions Speak Louder than Words' (HSTU); eSASRec's rerun on ML-1M: HSTU "
        "NDCG@10 0.1719 against 0.1684 for SASRec with sampled softmax (+2%), relative attention bias left out",
    ),
    Rule(
        "uniformity_regularizer",
        prior=0.03,
        why="A uniformity term spreads collapsed item embeddings over the sphere.",
        requires=(
            lacks("loss", "UNIFORMITY_WEIGHT"),
            shows(
                "collapsed embeddings (an embedding_collapse signal above 0.5 or coverage@10 below 0.25)",
                lambda c: (c.signal("embedding_collapse") or 0) > 0.5 or c.metric("coverage@10", 1) < 0.25,
            ),
        ),
        edits=(add_template("loss", TEMPLATES / "uniformity.py"), add_uniformity_term),
        addresses=("embedding_collapse", "low_coverage"),
        source="Wang & Isola, ICML 2020, 'Understanding Contrastive Representation Learning through Alignment "
        "and Uniformity'; no ML-1M figure, prior a small guess",
    ),
    Rule(
        "more_dropout",
        prior=0.04,
        why="Validation fell while training went on: more dropout regularises the network.",
        requires=(OVERFITTING, constant_below("model", "DROPOUT", 0.5)),
        edits=(set_constant("model", "DROPOUT", lambda dropout: round(dropout + 0.1, 2)),),
        source="Kang & McAuley, ICDM 2018 (SASRec) tune dropout per dataset (0.2 on ML-1M, 0.5 on sparse data); "
        "no ML-1M gain published, prior a guess",
    ),
    Rule(
        "embedding_dropout",
        prior=0.02,
        why="Validation fell while training went on: drop half of the input item embeddings' units.",
        requires=(OVERFITTING, SASREC, lacks("model", "EMBEDDING_DROPOUT")),
        edits=(add_template("model", TEMPLATES / "embedding_dropout.py"), embedding_dropout_rate),
        source=f"{GSASREC}: their ML-1M model trains with dropout 0.5; no gain of embedding dropout alone is "
        "published, prior a guess below more_dropout's",
    ),
    Rule(
        "attention_dropout",
        prior=0.01,
        why="Validation fell while training went on: drop 30% of the attention weights.",
        requires=(OVERFITTING, defines_class("model", "CausalSelfAttention"), lacks("model", "ATTENTION_DROPOUT")),
        edits=(add_template("model", TEMPLATES / "attention_dropout.py"), attention_dropout_rate),
        source="Zehui et al., 2019, 'DropAttention: A Regularization Method for Fully-Connected Self-Attention "
        "Networks' (rates 0.1 to 0.3 helped on text); no recommender figure, prior a guess",
    ),
    Rule(
        "adamw_weight_decay",
        prior=0.03,
        why="Decoupled weight decay (AdamW) regularises embeddings that overfit rare items.",
        requires=(OVERFITTING,),
        edits=(
            rename_call("optim", "build_optimizer", "Adam", "AdamW"),
            set_keyword("optim", "build_optimizer", "AdamW", "weight_decay", 0.01),
        ),
        source="Loshchilov & Hutter, ICLR 2019, 'Decoupled Weight Decay Regularization'; no ML-1M figure, "
        "prior a guess",
    ),
    Rule(
        "warmup_cosine",
        prior=0.05,
        why="Linear warm-up then cosine decay stabilises attention training and ends at a lower loss.",
        # the schedule spans the plan's epochs: a time budget would stop training inside the warm-up
        requires=(
            lacks("optim", "build_scheduler"),
            STILL_IMPROVING,
            shows("training ended by its epochs, not its time budget", lambda c: not c.time_budgeted),
        ),
        edits=(add_template("optim", TEMPLATES / "warmup_cosine.py"),),
        addresses=("undertrained",),
        source="Goyal et al., 2017 (linear warm-up) and Loshchilov & Hutter, ICLR 2017 (SGDR, cosine decay); "
        "no ML-1M figure, prior a guess",
    ),
    Rule(
        "deeper",
        prior=0.03,
        why="One more self-attention block captures longer-range item transitions.",
        requires=(SASREC, constant_below("model", "BLOCKS", 4)),
        edits=(set_constant("model", "BLOCKS", lambda blocks: int(blocks + 1)),),
        epoch_cost=1.5,
        source="Kang & McAuley, ICDM 2018 (SASRec) stack 2 blocks; no ML-1M gain of a third is published, "
        "prior a guess",
    ),
    Rule(
        "more_heads",
        prior=0.02,
        why="More attention heads attend to several aspects of the history at once.",
        requires=(SASREC, constant_below("model", "HEADS", 4)),
        edits=(set_constant("model", "HEADS", lambda heads: int(2 * heads)),),
        epoch_cost=1.7,
        source="Vaswani et al., NeurIPS 2017 (multi-head attention); no ML-1M figure, prior a guess",
    ),
    Rule(
        "wider",
        prior=0.05,
        why="Wider embeddings hold more item distinctions when the model underfits.",
        requires=(
            constant_below("model", "DIM", 256),
            shows("validation holding up (no overfitting)", lambda c: not c.overfitting),
        ),
        edits=(set_constant("model", "DIM", lambda dim: int(2 * dim)),),
        epoch_cost=1.7,
        source="gSASRec's ML-1M configuration uses 256 dimensions where SASRec used 50; no isolated gain "
        "published, prior a guess",
    ),
    Rule(
        "smaller_batches",
        prior=0.06,
        why="Training stopped while still improving: smaller batches take more optimiser steps per epoch.",
        requires=(STILL_IMPROVING, keyword_is("optim", "training_plan", "batch_size", 128, call="TrainingPlan")),
        edits=(set_keyword("optim", "training_plan", "TrainingPlan", "batch_size", 64),),
        addresses=("undertrained",),
        source="this project's 4-epoch ML-1M runs (feedback_ablation.json) favour fast learners; prior a guess",
    ),
    Rule(
        "higher_learning_rate",
        prior=0.06,
        why="Training stopped while still improving: a higher learning rate converges in fewer epochs.",
        requires=(STILL_IMPROVING, keyword_is("optim", "build_optimizer", "lr", 1e-3)),
        edits=(set_keyword_value("optim", "build_optimizer", "lr", 2e-3),),
        addresses=("undertrained",),
        source="this project's 4-epoch ML-1M runs (feedback_ablation.json) favour fast learners; prior a guess",
    ),
    Rule(
        "genre_side_features",
        prior=0.03,
        why="Genre side information added to item embeddings helps lists match users' genre mix.",
        requires=(
            SASREC,
            lacks("model", "genre_projection"),
            shows(
                "genre miscalibration (calibration_kl@10 above 0.5 or a genre_calibration signal above 0.5)",
                lambda c: c.metric("calibration_kl@10", 0) > 0.5 or (c.signal("genre_calibration") or 0) > 0.5,
            ),
        ),
        edits=(GENRES, genre_projection),
        addresses=("genre_calibration",),
        source="Steck, RecSys 2018, 'Calibrated Recommendations' (the miscalibration it answers); prior a guess",
    ),
    Rule(
        "mmr_reranking",
        prior=0.0,
        why="Maximal marginal relevance re-ranks the top of the list for genre diversity.",
        requires=(
            SASREC,
            in_code("model", _dot_product_score),
            lacks("model", "MMR_LAMBDA"),
            shows(
                "low diversity (ild@10 below 0.6 or a low_diversity signal above 0.5)",
                lambda c: c.metric("ild@10", 1) < 0.6 or (c.signal("low_diversity") or 0) > 0.5,
            ),
        ),
        edits=(GENRES, add_model_template("mmr_rerank.py"), wrap_score("mmr_rerank(SCORES, SELF.item_genres)")),
        addresses=("low_diversity",),
        epoch_cost=1.1,
        source="Carbonell & Goldstein, SIGIR 1998 (MMR); it trades accuracy for diversity, prior 0",
    ),
    Rule(
        "popularity_penalty",
        prior=0.0,
        why="Recommendations far more popular than users' histories: subtract a log-popularity penalty at scoring.",
        requires=(
            SASREC,
            in_code("model", _dot_product_score),
            lacks("model", "POPULARITY_PENALTY"),
            shows("popularity_lift@10 above 2", lambda c: c.metric("popularity_lift@10", 0) > 2.0),
        ),
        edits=(
            register_buffer(
                "log_popularity", "torch.log1p(torch.as_tensor(SPEC.item_popularity, dtype=torch.float32))"
            ),
            add_template("model", TEMPLATES / "popularity_penalty.py"),
            wrap_score("SCORES - POPULARITY_PENALTY * SELF.log_popularity"),
        ),
        addresses=("popularity_bias", "low_coverage"),
        source="Abdollahpouri et al., 2019, popularity-bias re-ranking; it trades accuracy for coverage, prior 0",
    ),
    Rule(
        "probe_for_complaint",
        prior=0.0,
        why="Simulated users raise a complaint no probe measures: add a probe for it, kept only if verified.",
        requires=(
            shows(
                f"a complaint raised by at least {COMPLAINT_SHARE:.0%} of simulated users that no probe measures",
                lambda c: unmeasured_complaint(c) is not None,
            ),
            in_code("diagnosis", ends_with_probes),
        ),
        edits=(add_probe,),
        addresses=tuple(PROBE_TEMPLATES),
        fixes=False,
        source="this project's diagnosis design: a probe measures, it does not change the lists, prior 0",
    ),
    Rule(
        "sequential_model",
        prior=0.3,
        why="The lists ignore the order of the history: model it with causal self-attention (SASRec).",
        requires=(
            lacks_class("model", "SASRec"),
            shows(
                "sequence insensitivity (a signal of at least 0.5)",
                lambda c: (c.signal("sequence_insensitivity") or 0) >= 0.5,
            ),
        ),
        edits=(rewrite("model", SEEDS / "sasrec_bce" / "model.py"),),
        addresses=("sequence_insensitivity",),
        epoch_cost=50.0,
        source="Kang & McAuley, ICDM 2018 (SASRec); this project's ML-1M runs: sasrec_bce test NDCG@10 0.1253 "
        "against mf_bpr's 0.0344, prior capped at +30%",
    ),
    Rule(
        "rating_weighted_positives",
        prior=0.02,
        why="Weight positives by their rating: strongly liked items teach more than lukewarm ones.",
        requires=(constant_is("reward", "REWARD_SPEC", "clicks@1"),),
        edits=(rewrite("reward", TEMPLATES / "rating_weighted_reward.py"),),
        source="this project's reward_lib (explicit ratings as graded relevance); no ML-1M figure, prior a guess",
    ),
)
