import pytest

from offline_agent.edits import EditError, apply_change, behaviour_hash, parse_reply
from recsys.candidate import BLOCKS

SOURCES = {block: f"# {block}\nVALUE = 1\n" for block in BLOCKS}
SOURCES["loss"] = "def build_train_task(spec):\n    weight = 1.0  # scale\n    return weight\n"


def test_search_replace_edits_apply_to_the_named_block():
    reply = (
        "Raise the weight to sharpen the loss.\n"
        "<<<<<<< SEARCH loss.py\n    weight = 1.0  # scale\n=======\n    weight = 2.0\n>>>>>>> REPLACE\n"
    )
    change = parse_reply(reply)
    assert change.rationale == "Raise the weight to sharpen the loss."
    updated = apply_change(SOURCES, change)
    assert "weight = 2.0" in updated["loss"] and updated["model"] == SOURCES["model"]


def test_whole_block_rewrites_replace_the_block():
    change = parse_reply("New reward.\n```python reward.py\nVALUE = 2\n```\n")
    assert apply_change(SOURCES, change)["reward"] == "VALUE = 2\n"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("just thoughts, no code", "holds no SEARCH/REPLACE edit"),
        ("<<<<<<< SEARCH losses.py\na\n=======\nb\n>>>>>>> REPLACE\n", "block 'losses.py' does not exist"),
        ("<<<<<<< SEARCH loss.py\na\n=======\nb\n", "not closed"),
        (
            "<<<<<<< SEARCH loss.py\nnot there\n=======\nb\n>>>>>>> REPLACE\n",
            "edit 1: the SEARCH text is not in loss.py",
        ),
        ("<<<<<<< SEARCH model.py\nVALUE = 1\n=======\nX = 1\n>>>>>>> REPLACE\n", None),
    ],
)
def test_malformed_replies_are_rejected_with_a_reason(reply, reason):
    if reason is None:  # matches once in model.py: applies
        assert apply_change(SOURCES, parse_reply(reply))["model"] == "# model\nX = 1\n"
        return
    with pytest.raises(EditError, match=reason):
        apply_change(SOURCES, parse_reply(reply))


def test_an_ambiguous_search_asks_for_more_context():
    sources = {**SOURCES, "optim": "x = 1\nx = 1\n"}
    with pytest.raises(EditError, match=r"occurs 2 times in optim\.py; add context"):
        apply_change(sources, parse_reply("<<<<<<< SEARCH optim.py\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE\n"))


def test_comment_and_layout_changes_are_near_duplicates_but_code_changes_are_not():
    cosmetic = {
        **SOURCES,
        "loss": 'def build_train_task(spec):\n    """Doc."""\n\n    weight = 1.0\n    return weight\n',
    }
    assert behaviour_hash(cosmetic) == behaviour_hash(SOURCES)
    changed = {**SOURCES, "loss": SOURCES["loss"].replace("1.0", "2.0")}
    assert behaviour_hash(changed) != behaviour_hash(SOURCES)
