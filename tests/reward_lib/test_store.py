"""The store only grows; references resolve to shipped, stored, inline and Python rewards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reward_lib.errors import RewardError
from reward_lib.rewards import REGISTRY, reward
from reward_lib.store import SHIPPED, RewardStore, resolve_reward


def test_a_new_version_never_replaces_an_existing_file(tmp_path):
    store = RewardStore(tmp_path / "store")
    (tmp_path / "store" / "clicks").mkdir(parents=True)
    kept = tmp_path / "store" / "clicks" / "v2.yaml"
    kept.write_text((SHIPPED / "clicks.yaml").read_text().replace("version: 1", "version: 2"))
    before = kept.read_bytes()
    spec = resolve_reward("clicks@1", store).spec
    saved, path = store.save_new_version(spec, header="tuned for a test")
    assert (saved.version, path.name) == (3, "v3.yaml") and kept.read_bytes() == before
    assert path.read_text().startswith("# tuned for a test\nname: clicks\nversion: 3\n")
    assert resolve_reward("clicks", store).key == "clicks@3"  # the latest version
    assert resolve_reward("clicks@1", store).source == str(SHIPPED / "clicks.yaml")
    assert store.save_new_version(spec)[0].version == 4 and sorted(store.versions("clicks")) == [1, 2, 3, 4]


def test_unknown_names_versions_and_misplaced_files_are_explained(tmp_path):
    store = RewardStore(tmp_path)
    with pytest.raises(RewardError, match=r"unknown reward 'clickz': not registered in Python, .* known: .*clicks"):
        resolve_reward("clickz", store)
    with pytest.raises(RewardError, match=r"reward clicks has no version 9; versions: 1"):
        resolve_reward("clicks@9", store)
    (tmp_path / "clicks").mkdir()
    (tmp_path / "clicks" / "v5.yaml").write_text((SHIPPED / "clicks.yaml").read_text())
    with pytest.raises(RewardError, match=r"v5.yaml: holds clicks@1, but its place in the store says clicks@5"):
        resolve_reward("clicks@5", store)
    with pytest.raises(RewardError, match=r"nowhere.yaml: no such reward spec file"):
        resolve_reward(str(tmp_path / "nowhere.yaml"), store)


def test_inline_yaml_and_files_resolve_to_rewards(tmp_path):
    text = "name: inline\nversion: 2\ncomponents:\n  - {signal: click, weight: 3}\n"
    inline = resolve_reward(text, source="reward.py REWARD_SPEC")
    assert (inline.key, inline.source, inline.bounds) == ("inline@2", "reward.py REWARD_SPEC", (0.0, 3.0))
    (tmp_path / "mine.yaml").write_text(text)
    assert resolve_reward(str(tmp_path / "mine.yaml")).key == "inline@2"


def test_a_python_reward_registered_with_the_decorator_is_found_by_name(tmp_path):
    @reward("test_watched", version=2, columns=("event", "watch_fraction"), bounds=(0.0, 1.0),
            monotone={"watch_fraction": "increasing"})  # fmt: skip
    def watched(events: pd.DataFrame) -> np.ndarray:
        """Clicks, by the share watched."""
        return (events["event"] == "click").to_numpy() * events["watch_fraction"].to_numpy()

    try:
        found = resolve_reward("test_watched", RewardStore(tmp_path))
        assert (found.key, found.description, found.columns) == (
            "test_watched@2",
            "Clicks, by the share watched.",
            frozenset({"event", "watch_fraction"}),
        )
        assert found.source.startswith("python:tests.reward_lib.test_store.") and found.source.endswith(".watched")
        with pytest.raises(RewardError, match="reward test_watched@2 is already registered"):
            reward("test_watched", version=2)(watched)
    finally:
        del REGISTRY["test_watched", 2]
