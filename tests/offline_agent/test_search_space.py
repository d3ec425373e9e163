"""A candidate's SEARCH_SPACE is read from its code, checked with clear messages, and written back in place."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import create_trial

from offline_agent.search_space import SpaceError, current_values, declared_space, structure, with_values
from recsys.candidate import BLOCKS, load_candidate

OPTIM = '''"""An optimizer block with its numbers declared."""

import torch

from recsys.candidate_api import TrainingPlan

LEARNING_RATE = 1e-3  # Adam's step
BATCH_SIZE = 128
SEARCH_SPACE = {
    "LEARNING_RATE": {"low": 1e-4, "high": 1e-2, "log": True},  # keep this comment
    "BATCH_SIZE": {"choices": [64, 128, 256]},
}


def training_plan() -> TrainingPlan:
    return TrainingPlan(batch_size=BATCH_SIZE)


def build_optimizer(params):
    return torch.optim.Adam(params, lr=LEARNING_RATE)
'''


def _sources(optim: str = OPTIM) -> dict[str, str]:
    return {**{block: "" for block in BLOCKS}, "optim": optim}


@pytest.mark.parametrize("seed", ["sasrec_bce", "sasrec_ce", "mf_bpr"])
def test_every_seed_declares_its_numbers_and_sits_inside_its_own_space(seed, seeds_dir):
    sources = dict(load_candidate(seeds_dir / seed).sources)
    space = declared_space(sources)
    keys = {tunable.key for tunable in space}
    assert {"optim.LEARNING_RATE", "optim.BATCH_SIZE", "model.DIM"} <= keys
    values = current_values(sources, space)
    distributions = {tunable.key: tunable.domain.distribution() for tunable in space}
    create_trial(params=values, distributions=distributions, value=0.0)  # raises when a value lies outside


def test_the_kinds_of_range_become_optuna_distributions():
    space = declared_space(
        _sources(
            "A = 1e-3\nB = 64\nC = 0.2\nD = 2\nE = True\n"
            'SEARCH_SPACE = {"A": {"low": 1e-4, "high": 1e-2, "log": True},\n'
            ' "B": {"low": 32, "high": 256, "step": 32}, "C": {"low": 0.0, "high": 0.5, "step": 0.05},\n'
            ' "D": {"low": 1, "high": 4},\n'
            ' "E": {"choices": [True, False]}}\n'
            "print(A, B, C, D, E)\n"
        )
    )
    assert {t.key: t.domain.distribution() for t in space} == {
        "optim.A": FloatDistribution(1e-4, 1e-2, log=True),
        "optim.B": IntDistribution(32, 256, step=32),
        "optim.C": FloatDistribution(0.0, 0.5, step=0.05),
        "optim.D": IntDistribution(1, 4),
        "optim.E": CategoricalDistribution([True, False]),
    }
    assert declared_space(_sources("X = 1\nprint(X)\n")) == ()  # no declaration: nothing to tune


MALFORMED = [
    ("X = 1\nSEARCH_SPACE = dict(X={'low': 0, 'high': 2})\nprint(X)\n",
     "optim.py, line 2: SEARCH_SPACE must be a literal dict (it is read without running the code)"),
    ("X = 1\nSEARCH_SPACE = {'Y': {'low': 0, 'high': 2}}\nprint(X)\n",
     "optim.py: SEARCH_SPACE names Y, but the block has no module constant Y"),
    ("X = 0.1\nSEARCH_SPACE = {'X': {'low': 0.1, 'high': 0.01}}\nprint(X)\n",
     "optim.py: SEARCH_SPACE['X']: low (0.1) must be below high (0.01)"),
    ("X = 0.1\nSEARCH_SPACE = {'X': {'low': 0.0, 'high': 1.0, 'log': True}}\nprint(X)\n",
     "optim.py: SEARCH_SPACE['X']: a log scale needs low above 0, not 0.0"),
    ("X = 0.1\nSEARCH_SPACE = {'X': {'low': 0.0, 'high': 1.0, 'scale': 'log'}}\nprint(X)\n",
     "optim.py: SEARCH_SPACE['X']: scale: Extra inputs are not permitted"),
    ("X = 0.1\nSEARCH_SPACE = {'X': {'low': '0', 'high': 1.0}}\nprint(X)\n", "optim.py: SEARCH_SPACE['X']: low"),
    ("X = 1\nSEARCH_SPACE = {'X': {'choices': [1]}}\nprint(X)\n", "optim.py: SEARCH_SPACE['X']: choices"),
    ("X = 1\nSEARCH_SPACE = {'X': {'low': 0, 'high': 10, 'step': 3}}\nprint(X)\n",
     "high - low (10) is not a multiple of step (3)"),
    ("X = 'adam'\nSEARCH_SPACE = {'X': {'low': 0, 'high': 2}}\nprint(X)\n",
     "optim.py: SEARCH_SPACE gives X a range, but X is 'adam', not a number literal"),
    ("X = 1\nSEARCH_SPACE = {'X': {'low': 0, 'high': 2}}\n",
     "optim.py: SEARCH_SPACE names X, which the block never reads (tuning it would do nothing)"),
    ("X = 1\nSEARCH_SPACE = {'X': [0, 2]}\nprint(X)\n", "optim.py: SEARCH_SPACE['X'] is list; expected {\"low\""),
    ("X = 1\nSEARCH_SPACE = [('X', 0, 2)]\nprint(X)\n", "optim.py, line 2: SEARCH_SPACE must map constant names"),
    ("X = (\nSEARCH_SPACE = {}\n", "optim.py does not parse"),
]  # fmt: skip


@pytest.mark.parametrize(("optim", "message"), MALFORMED)
def test_a_malformed_space_is_an_error_naming_block_constant_and_what_was_expected(optim, message):
    with pytest.raises(SpaceError) as caught:
        declared_space(_sources(optim))
    assert message in str(caught.value)
    if "'X']" in message:
        assert 'expected {"low": number, "high": number' in str(caught.value)


def test_values_are_written_into_the_literals_and_everything_else_stays_as_written():
    space = declared_space(_sources())
    child = with_values(_sources(), space, {"optim.LEARNING_RATE": 0.0023, "optim.BATCH_SIZE": 128})
    assert child["optim"] == OPTIM.replace("LEARNING_RATE = 1e-3  #", "LEARNING_RATE = 0.0023  #")
    assert current_values(child, space) == {"optim.LEARNING_RATE": 0.0023, "optim.BATCH_SIZE": 128}


def test_structure_ignores_the_tuned_values_and_layout_but_not_other_code():
    sources = _sources()
    space = declared_space(sources)
    tuned = with_values(sources, space, {"optim.LEARNING_RATE": 0.005, "optim.BATCH_SIZE": 64})
    relaid = _sources(OPTIM.replace("BATCH_SIZE = 128", "BATCH_SIZE = (  # a comment\n    128\n)"))
    changed = _sources(OPTIM.replace("torch.optim.Adam(", "torch.optim.AdamW("))
    assert structure(sources, space) == structure(tuned, space) == structure(relaid, space)
    assert structure(changed, space) != structure(sources, space)
