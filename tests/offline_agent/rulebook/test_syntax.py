"""The tree edits the rules are made of: they find code by structure, change only the node they target and
keep the rest of the text; their SEARCH/REPLACE rendering reproduces the edited block exactly."""

from __future__ import annotations

import ast

import pytest

from offline_agent.edits import apply_change, parse_reply
from offline_agent.rulebook.engine import Draft, RuleContext, keyword_is, search_replace
from offline_agent.rulebook.syntax import Code, NotFound, expression, literal


def test_a_keyword_is_set_in_place_or_added_after_the_last_argument_keeping_comments_and_layout():
    text = 'PLAN = make(\n    "é",  # a label, é\n    epochs = 3,  # keep me\n)\n'
    code = Code("optim", text)
    call = code.calls(code.tree, "make")[0]
    assert code.set_keyword(call, "epochs", 5) == text.replace("epochs = 3", "epochs = 5")
    assert code.set_keyword(call, "batch_size", 64) == text.replace("epochs = 3,", "epochs = 3, batch_size=64,")
    empty = Code("optim", "PLAN = make()\n")
    assert empty.set_keyword(empty.calls(empty.tree, "make")[0], "batch_size", 64) == "PLAN = make(batch_size=64)\n"


def test_positions_after_non_ascii_text_on_the_same_line_are_exact():
    code = Code("optim", 'x = f("été", lr=1e-3)  # ç\n')
    call = code.calls(code.tree, "f")[0]
    assert code.set_keyword(call, "lr", 2e-3) == 'x = f("été", lr=0.002)  # ç\n'


def test_a_keyword_that_names_a_module_constant_is_read_and_set_through_the_constant():
    text = (
        "LEARNING_RATE = 1e-3  # tuned\n\n\ndef build_optimizer(params):\n    return Adam(params, lr=LEARNING_RATE)\n"
    )
    code = Code("optim", text)
    call = code.calls(code.tree, "Adam")[0]
    assert literal(code.bound_value(call.keywords[0].value)) == 1e-3
    assert code.set_keyword(call, "lr", 2e-3) == text.replace("= 1e-3", "= 0.002")  # still read through the name
    ctx = RuleContext({"optim": text})
    assert keyword_is("optim", "build_optimizer", "lr", 1e-3)(ctx) is None
    assert (
        keyword_is("optim", "build_optimizer", "lr", 2e-3)(ctx)
        == "optim.py: build_optimizer() passes lr=0.001, not 0.002"
    )


def test_module_constants_are_read_and_set_whatever_their_annotation_or_layout():
    code = Code("model", "DIM: int = (  # width\n    64\n)\nDROPOUT=0.2\n")
    assert code.constant("DIM") == 64 and code.constant("DROPOUT") == 0.2 and code.constant("HEADS") is None
    assert code.set_value(code.constant_node("DIM"), 128) == "DIM: int = (  # width\n    128\n)\nDROPOUT=0.2\n"


def test_an_import_is_added_only_when_no_import_binds_its_name_yet():
    imports = [s for s in ast.parse("import torch\nimport torch.nn.functional as F\nimport math").body]
    code = Code("loss", '"""Doc."""\n\nfrom torch.nn import functional as F\nimport torch  # the tensors\n\nX = 1\n')
    assert code.add_imports(imports) == (
        '"""Doc."""\n\nfrom torch.nn import functional as F\nimport torch  # the tensors\nimport math\n\nX = 1\n'
    )
    assert Code("loss", '"""Doc."""\n').add_imports(imports[:1]) == '"""Doc."""\nimport torch\n'
    assert Code("loss", "X = 1\n").add_imports(imports[:1]) == "import torch\n\nX = 1\n"


def test_a_statement_is_inserted_after_another_at_its_indentation_even_at_the_end_without_a_newline():
    code = Code("model", "def f(a):\n    b = a\n    return b")
    function = code.function("f")
    added = ast.parse("c = 2").body
    assert code.insert_after(function.body[0], added) == "def f(a):\n    b = a\n    c = 2\n    return b"
    assert code.insert_after(function.body[-1], added) == "def f(a):\n    b = a\n    return b\n    c = 2\n"
    one_line = Code("model", "def f(a): return a\n")
    with pytest.raises(NotFound, match="written on one line"):
        one_line.append_to(one_line.function("f"), added)


def test_a_class_is_replaced_with_its_decorators_and_comments_and_only_its_name_is_renamed_elsewhere():
    text = "X = 1\n\n\n# the old one\n@dataclass\nclass Old:\n    pass\n\n\nmade = Old(Old)\nx.Old = 'Old'\n"
    code = Code("model", text)
    replaced = Code("model", code.replace_statement(code.classdef("Old"), "class New:\n    pass"))  # type: ignore[arg-type]
    assert replaced.text == "X = 1\n\n\nclass New:\n    pass\n\n\nmade = Old(Old)\nx.Old = 'Old'\n"
    assert replaced.rename("Old", "New").endswith("made = New(New)\nx.Old = 'Old'\n")


def test_an_expression_pattern_takes_the_parents_own_names_and_nodes():
    value = ast.parse("last @ table.T", mode="eval").body
    filled = expression("SCORES - PENALTY * SELF.log_popularity", SCORES=value, SELF="me")
    assert ast.unparse(filled) == "last @ table.T - PENALTY * me.log_popularity"


def test_missing_structure_is_named_with_its_block():
    code = Code("optim", "def training_plan():\n    return dict()\n")
    with pytest.raises(NotFound, match=r"optim.py: training_plan\(\) makes 0 TrainingPlan\(...\) calls, not one"):
        code.the_call("training_plan", "TrainingPlan")
    with pytest.raises(NotFound, match=r"optim.py: the module defines no build_optimizer\(\)"):
        code.function("build_optimizer")
    with pytest.raises(NotFound, match=r"loss\.py does not parse: line 1"):
        Code("loss", "def (:\n")


def test_edits_are_widened_until_their_search_text_is_unique_and_reproduce_the_block():
    before = "def a():\n    return 1\n\n\ndef b():\n    return 1\n"
    after = "def a():\n    return 1\n\n\ndef b():\n    return 2\n"
    edits = search_replace("model", before, after)
    assert edits is not None and len(edits) == 1
    assert before.count(edits[0].search) == 1 and "def b" in edits[0].search
    assert apply_change({"model": before}, parse_reply("".join(
        f"<<<<<<< SEARCH model.py\n{e.search}=======\n{e.replace}>>>>>>> REPLACE\n" for e in edits
    )))["model"] == after  # fmt: skip


def test_a_change_to_a_last_line_without_a_newline_is_proposed_as_a_rewrite():
    sources = {"model": "X = 1\nY = 2"}
    assert search_replace("model", sources["model"], "X = 1\nY = 3") is None
    draft = Draft(RuleContext(sources))
    draft.update("model", "X = 1\nY = 3")
    change = parse_reply(draft.reply())
    assert change.rewrites == {"model": "X = 1\nY = 3\n"} and not change.edits


@pytest.mark.parametrize(
    ("value", "source"),
    [
        ("popularity", '"popularity"'),
        ('say "hi"', "'say \"hi\"'"),
        ("a\nb", '"a\\nb"'),
        (0.002, "0.002"),
        (True, "True"),
    ],
)
def test_values_are_written_as_the_project_writes_them_and_read_back_unchanged(value, source):
    code = Code("loss", "SAMPLER = None\n")
    text = code.set_value(code.constant_node("SAMPLER"), value)
    assert text == f"SAMPLER = {source}\n" and Code("loss", text).constant("SAMPLER") == value
