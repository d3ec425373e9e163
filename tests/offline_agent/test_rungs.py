"""The promotion rule, the proxy fidelity and the rungs table, on hand-made rung results."""

from __future__ import annotations

import sqlite3

import pytest
from pydantic import ValidationError

from offline_agent.evolve import EvolutionConfig
from offline_agent.program_db import DatabaseConfig, ProgramDatabase, RungResult
from offline_agent.rungs import RungConfig, finalists, kendall_tau, promotions, proxy_fidelity

CONFIG = RungConfig(epochs=(1, 2, 4), promote_fraction=1 / 3, min_tau=0.5, tau_pairs=4, finals=2, final_epochs=8)


def _row(name: str, rung: int, fitness: float | None, created: float = 0.0) -> RungResult:
    status = "pending" if fitness is None else "evaluated"
    return RungResult(name, rung, CONFIG.epochs[rung], status, fitness, created=created)


def _due(rows: list[RungResult]) -> list[tuple[str, int]]:
    return promotions(rows, CONFIG, proxy_fidelity(rows, CONFIG))


def test_nothing_is_promoted_before_one_over_the_fraction_completed_the_rung():
    assert _due([_row("a", 0, 0.3), _row("b", 0, 0.2)]) == []
    assert _due([_row("a", 0, 0.3), _row("b", 0, 0.2), _row("c", 0, None)]) == []  # pending ones do not count


def test_only_the_top_fraction_of_a_rung_advances():
    rows = [
        _row(name, 0, fitness) for name, fitness in zip("abcdefg", (0.1, 0.5, 0.3, 0.7, 0.2, 0.6, 0.4), strict=True)
    ]
    assert _due(rows[:3]) == [("b", 1)]  # 3 completed: the top 1
    assert _due(rows[:6]) == [("d", 1), ("f", 1)]  # 6: the top 2
    assert _due([*rows[:6], _row("d", 1, None)]) == [("f", 1)]  # a candidate is promoted once
    failed = RungResult("z", 0, 1, "failed", reason="crash")
    assert _due([*rows[:2], failed]) == []  # a failure is no rival


def test_ties_go_to_the_earlier_candidate():
    rows = [_row("late", 0, 0.5, created=2.0), _row("early", 0, 0.5, created=1.0), _row("c", 0, 0.1)]
    assert _due(rows) == [("early", 1)]


def test_promotions_climb_every_rung():
    rows = [_row(n, 0, f) for n, f in zip("abc", (0.3, 0.2, 0.1), strict=True)]
    rows += [_row(n, 1, f) for n, f in zip("abc", (0.5, 0.6, 0.4), strict=True)]
    assert _due(rows) == [("b", 2)]


def test_kendall_tau_on_known_rankings():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # one discordant pair of six
    assert kendall_tau([1.0], [2.0]) is None
    assert kendall_tau([1, 2, 3], [5, 5, 5]) is None  # undefined on a constant side


def test_a_poor_proxy_promotes_twice_the_fraction():
    lower = [_row(n, 0, f) for n, f in zip("abcdef", (0.6, 0.5, 0.4, 0.3, 0.2, 0.1), strict=True)]
    reversed_upper = [_row(n, 1, f) for n, f in zip("abcd", (0.1, 0.2, 0.3, 0.4), strict=True)]
    fidelity = proxy_fidelity([*lower, *reversed_upper], CONFIG)
    assert fidelity[0].tau == pytest.approx(-1.0) and fidelity[0].pairs == 4
    assert fidelity[0].fraction == pytest.approx(2 / 3)
    seven = [*lower, _row("g", 0, 0.05), *reversed_upper]  # 7 × 2/3: the top 4 (a-d, promoted already); at rung 1, d
    assert promotions(seven, CONFIG, proxy_fidelity(seven, CONFIG)) == [("d", 2)]
    nine = [*lower, _row("g", 0, 0.05), _row("h", 0, 0.04), _row("i", 0, 0.03), *reversed_upper]
    assert promotions(nine, CONFIG, proxy_fidelity(nine, CONFIG)) == [("e", 1), ("f", 1), ("d", 2)]
    agreeing = [_row(n, 1, f) for n, f in zip("abcd", (0.4, 0.3, 0.2, 0.1), strict=True)]
    assert proxy_fidelity([*lower, *agreeing], CONFIG)[0].fraction == pytest.approx(1 / 3)
    three_pairs = proxy_fidelity([*lower, *reversed_upper[:3]], CONFIG)[0]
    assert three_pairs.tau == pytest.approx(-1.0) and three_pairs.fraction == pytest.approx(1 / 3)  # too few pairs


def test_finalists_come_from_the_highest_rung_then_the_next_one_down():
    rows = [_row(n, 0, f) for n, f in zip("abcd", (0.9, 0.2, 0.3, 0.1), strict=True)]
    rows += [_row("b", 1, 0.5), _row("c", 1, 0.6), _row("c", 2, 0.7)]
    assert finalists(rows, CONFIG) == ["c", "b"]
    assert finalists(rows[:4], CONFIG) == ["a", "c"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epochs": (2, 2)}, "must increase strictly"),
        ({"epochs": ()}, "at least one epoch count"),
        ({"epochs": (2, 6), "final_epochs": 6}, "must exceed the top rung's 6 epochs"),
        ({"promote_fraction": 0}, "greater than 0"),
    ],
)
def test_a_bad_rung_config_says_what_to_change(settings, message):
    with pytest.raises(ValidationError, match=message):
        RungConfig(**settings)


def test_rungs_conflict_with_a_fixed_epoch_cap_and_the_cpu_budget_needs_rungs():
    with pytest.raises(ValidationError, match="leave out max_epochs"):
        EvolutionConfig.model_validate({"rungs": {}, "evaluation": {"max_epochs": 3}})
    with pytest.raises(ValidationError, match="max_cpu_seconds counts rung evaluations"):
        EvolutionConfig.model_validate({"max_cpu_seconds": 100})
    assert EvolutionConfig.model_validate({"rungs": {}, "max_cpu_seconds": 100}).rungs == RungConfig()


def test_a_database_from_before_the_rungs_table_opens_and_gains_it(tmp_path):
    path = tmp_path / "evolution.db"
    url = f"sqlite:///{path}"
    ProgramDatabase(DatabaseConfig(url=url)).add_initial({"model": "m"}, "h" * 64)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE rungs")
    db = ProgramDatabase(DatabaseConfig(url=url))
    assert len(db.programs()) == 3 and db.rung_results() == [] and db.result() is None
    db.add_rungs([("h" * 64, 0, 2)])
    assert [(r.rung, r.status) for r in db.rung_results()] == [(0, "pending")]


def test_rung_rows_keep_test_apart_and_the_best_is_of_the_highest_rung(tmp_path):
    db = ProgramDatabase(DatabaseConfig(url=f"sqlite:///{tmp_path / 'evolution.db'}", islands=1))
    db.add_initial({"model": "m"}, "a" * 64)
    seed = db.programs()[0]
    db.add({"model": "n"}, "b" * 64, seed, 1)
    db.add_rungs([("a" * 64, 1, 6), ("a" * 64, 1, 99)])  # written once
    results = [
        RungResult("a" * 64, 0, 2, "evaluated", metrics={"ndcg@10": 0.2}, test_metrics={"ndcg@10": 0.9}),
        RungResult("b" * 64, 0, 2, "evaluated", metrics={"ndcg@10": 0.3}),
        RungResult("a" * 64, 1, 6, "evaluated", metrics={"ndcg@10": 0.25}, seconds=3.0, cpu_seconds=6.0),
        RungResult("b" * 64, 1, 6, "evaluated", metrics={"ndcg@10": float("nan")}),
    ]
    stored = [db.record_rung(r) for r in results]
    assert [r.fitness for r in stored] == [0.2, 0.3, 0.25, None]  # from validation, never from test
    assert stored[3].status == "failed" and "nan" in (stored[3].reason or "")
    assert stored[2].epochs == 6 and stored[2].cpu_seconds == 6.0 and stored[0].test_metrics == {"ndcg@10": 0.9}
    top = db.best_at_top_rung()
    assert top is not None and top[1].rung == 1 and top[0].content_hash == "a" * 64
    assert db.result() == top[0] != db.best()  # b is the fittest at rung 0


def test_code_evaluated_on_another_island_keeps_its_rung_zero_result(tmp_path, prepared_small):
    """The same code proposed later elsewhere would resume a checkpoint trained past rung 0: it takes the
    stored evaluation instead of the new one."""
    from offline_agent.evaluator import EvaluationOutcome
    from offline_agent.evolve import Evolution

    config = EvolutionConfig.model_validate({
        "seed_candidate": "mf_bpr", "run_dir": str(tmp_path / "run"), "feedback": {"mode": "scalar"},
        "database": {"islands": 2}, "rungs": {"epochs": [1, 2]},
    })  # fmt: skip
    evolution = Evolution(config, prepared_small.path)
    [seed] = evolution.start()

    def outcome(ndcg: float) -> EvaluationOutcome:
        return EvaluationOutcome("evaluated", "train", None, valid={"ndcg@10": ndcg}, test={"ndcg@10": 0.0}, seconds=1)

    evolution.record(seed, outcome(0.1))
    blocks = {**seed.blocks, "loss": seed.blocks["loss"] + "\n# a variant\nVARIANT = 1\n"}
    first = evolution.db.add(blocks, "c" * 64, evolution.db.get(seed.key), 1)
    assert first is not None and evolution.record(first, outcome(0.2)).fitness == 0.2
    other_island = evolution.db.programs(island=1 - first.island)[0]
    later = evolution.db.add(blocks, "c" * 64, other_island, 2)
    assert later is not None and evolution.record(later, outcome(0.5)).fitness == 0.2
    assert [(r.rung, r.fitness) for r in evolution.db.rung_results() if r.content_hash == "c" * 64] == [(0, 0.2)]


def test_promotions_can_be_trained_one_at_a_time_the_others_staying_pending(tmp_path, prepared_small):
    """A benchmark holding searchers to equal CPU time steps one evaluation at a time: promote_one trains one
    promotion due and leaves the rest pending, so none is lost and none trained twice."""
    from offline_agent.evaluator import EvaluationOutcome
    from offline_agent.evolve import Evolution

    config = EvolutionConfig.model_validate({
        "seed_candidate": "mf_bpr", "run_dir": str(tmp_path / "run"), "feedback": {"mode": "scalar", "personas": 0},
        "database": {"islands": 1}, "rungs": {"epochs": [1, 2], "promote_fraction": 0.5},
        "evaluation": {"dataset": "", "diagnose": False, "train_seconds": 120},
    })  # fmt: skip
    evolution = Evolution(config, prepared_small.path)
    [seed] = evolution.start()
    assert evolution.rungs is not None

    def outcome(ndcg: float) -> EvaluationOutcome:
        return EvaluationOutcome("evaluated", "train", None, valid={"ndcg@10": ndcg}, test={"ndcg@10": 0.0}, seconds=1)

    evolution.record(seed, outcome(0.1))
    for index, ndcg in enumerate([0.2, 0.3, 0.05], start=1):
        blocks = {**seed.blocks, "loss": seed.blocks["loss"] + f"\n# variant {index}\n"}
        child = evolution.db.add(blocks, f"{index}" * 64, evolution.db.get(seed.key), index)
        assert child is not None
        evolution.record(child, outcome(ndcg))

    def at_rung_one(status: str) -> list[str]:
        return [r.content_hash[:1] for r in evolution.db.rung_results(status) if r.rung == 1]

    assert evolution.rungs.promote_one()  # the top half of four is due: two promotions
    assert len(at_rung_one("evaluated")) == 1 and len(at_rung_one("pending")) == 1
    assert evolution.rungs.promote_one()
    assert sorted(at_rung_one("evaluated")) == ["1", "2"] and not at_rung_one("pending")  # 0.2 and 0.3
    assert not evolution.rungs.promote_one()
