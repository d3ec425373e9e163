"""Evaluations started at once in one process (a generation's promotions) share the data view safely, and a
benchmark can load it before any evaluation so that no searcher's time holds it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from offline_agent import evaluator


def test_two_threads_asking_for_a_new_view_at_once_both_get_it(prepared_small, tmp_path):
    evaluator._dataset.cache_clear()
    with ThreadPoolExecutor(max_workers=2) as pool:
        views = list(pool.map(lambda _: evaluator._dataset(str(prepared_small.path), tmp_path)[2], range(2)))
    assert views[0] == views[1] and (views[0] / "manifest.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == [views[0].name]  # no half-written view left behind


def test_warming_up_loads_and_writes_the_view_before_any_evaluation(prepared_small, tmp_path):
    evaluator._dataset.cache_clear()
    evaluator._heldout_data.cache_clear()
    config = evaluator.EvaluationConfig(dataset=str(prepared_small.path), work_dir=str(tmp_path))
    evaluator.warm_up(config)
    (view,) = (tmp_path / evaluator.SANDBOXES / ".views").iterdir()
    assert (view / "manifest.json").exists()
    assert evaluator._heldout_data.cache_info().currsize == 1  # the first evaluation finds it loaded
