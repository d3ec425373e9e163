from __future__ import annotations

import ast
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from recsys.candidate import CandidateError, load_candidate, parse_block

SEEDS = ("sasrec_bce", "sasrec_ce", "mf_bpr")


def test_seeds_load_with_distinct_content_hashes_and_ce_reuses_the_sasrec_model(seeds_dir):
    loaded = {name: load_candidate(seeds_dir / name) for name in SEEDS}
    assert len({c.content_hash for c in loaded.values()}) == 3
    assert loaded["sasrec_ce"].sources["model"] == loaded["sasrec_bce"].sources["model"]
    assert loaded["sasrec_ce"].sources["loss"] != loaded["sasrec_bce"].sources["loss"]
    assert load_candidate(seeds_dir / "sasrec_ce").content_hash == loaded["sasrec_ce"].content_hash


def test_a_written_candidate_stands_alone_with_the_same_hash(seeds_dir, tmp_path):
    candidate = load_candidate(seeds_dir / "sasrec_ce")
    candidate.write(tmp_path / "copy")
    assert load_candidate(tmp_path / "copy").content_hash == candidate.content_hash


def _variant(tmp_path, seeds_dir, **blocks):
    load_candidate(seeds_dir / "mf_bpr").write(tmp_path / "base")
    variant = tmp_path / "variant"
    variant.mkdir()
    (variant / "candidate.yaml").write_text("name: variant\nbase: base\n")
    for block, source in blocks.items():
        (variant / f"{block}.py").write_text(source)
    return variant


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ({"model": "def make_model(spec):\n    pass\n"}, r"model.py: function build_model\(spec\) is missing"),
        (
            {"optim": "def training_plan():\n    pass\ndef build_optimizer(model, lr):\n    pass\n"},
            r"optim.py: build_optimizer takes \(model, lr\); the contract is build_optimizer\(params\)",
        ),
        ({"loss": "def build_train_task(spec):\n    return (\n"}, r"loss.py, line 2: syntax error"),
        ({"reward": "import not_a_module\n"}, r"reward.py: failed to import: ModuleNotFoundError"),
        ({"diagnosis": "X = 1\n"}, r"diagnosis.py: PROBES is missing"),
    ],
)
def test_contract_violations_name_the_block_and_function(tmp_path, seeds_dir, blocks, message):
    with pytest.raises(CandidateError, match=message):
        load_candidate(_variant(tmp_path, seeds_dir, **blocks))


def test_missing_blocks_and_base_cycles_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.py").write_text("")
    with pytest.raises(CandidateError, match=r"missing block\(s\) loss.py, optim.py, reward.py, diagnosis.py"):
        load_candidate(tmp_path / "a")
    (tmp_path / "a" / "candidate.yaml").write_text("base: b\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "candidate.yaml").write_text("base: a\n")
    with pytest.raises(CandidateError, match="form a cycle"):
        load_candidate(tmp_path / "a")


def test_blocks_parsed_from_many_threads_are_parsed_one_at_a_time(monkeypatch):
    active, overlaps, guard = [0], [0], threading.Lock()
    parse = ast.parse

    def slow_parse(source: str, filename: str = "<unknown>") -> ast.Module:
        with guard:
            active[0] += 1
            overlaps[0] = max(overlaps[0], active[0])
        time.sleep(0.01)  # long enough for every other thread to reach the parse
        with guard:
            active[0] -= 1
        return parse(source, filename=filename)

    monkeypatch.setattr(ast, "parse", slow_parse)
    with ThreadPoolExecutor(max_workers=8) as pool:
        trees = list(pool.map(lambda i: parse_block(f"x = {i}\n", filename=f"block{i}.py"), range(16)))
    assert overlaps[0] == 1
    assert [tree.body[0].value.value for tree in trees] == list(range(16))
