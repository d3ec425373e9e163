"""The candidate API the proposal prompt shows is read from recsys.candidate_api, not copied."""

from __future__ import annotations

import ast
import inspect

from offline_agent.api_text import candidate_api_text
from recsys import candidate_api


def _stub(text: str) -> str:
    return text.split("```python\n", 1)[1].rsplit("```", 1)[0]


def test_the_stub_is_python_that_defines_exactly_the_public_names():
    tree = ast.parse(_stub(candidate_api_text()))
    defined = [
        node.name if isinstance(node, ast.ClassDef | ast.FunctionDef) else ast.unparse(node.targets[0])
        for node in tree.body
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.Assign)
    ]
    assert defined == candidate_api.__all__


def test_every_signature_field_and_docstring_of_the_module_is_shown():
    text = candidate_api_text()
    assert "def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:" in text
    assert "    def score(self, batch: Batch) -> torch.Tensor:" in text
    assert "    def embed_items(self, ids: torch.Tensor) -> torch.Tensor:" in text
    assert "class RecModel(Protocol):" in text and "@dataclass(frozen=True)\nclass ModelSpec:" in text
    assert "    device: str = 'cpu'" in text and "    item_genres: torch.Tensor | None = None" in text
    assert "def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:" in text
    assert (
        "from recsys.candidate_api import ITEM_FEATURE, Batch, ModelSpec, RecModel, TrainingPlan, weighted_mean" in text
    )
    public = [getattr(candidate_api, name) for name in candidate_api.__all__]
    documented = [candidate_api, *(obj for obj in public if callable(obj))]
    documented += [candidate_api.RecModel.forward, candidate_api.RecModel.embed_items, candidate_api.RecModel.score]
    for obj in documented:
        for line in inspect.getdoc(obj).splitlines():
            assert line.strip() in text, f"{obj}: {line!r} is not shown"


def test_the_text_follows_the_module_when_its_docstrings_change(monkeypatch):
    before = candidate_api_text()
    monkeypatch.setattr(candidate_api, "__doc__", "The candidate API, reworded.")
    monkeypatch.setattr(candidate_api.weighted_mean, "__doc__", "Mean of the losses, each counted by its weight.")
    after = candidate_api_text()
    assert (
        after.startswith("The candidate API, reworded.") and "Mean of the losses, each counted by its weight." in after
    )
    assert "per-target losses averaged with the reward block's weights" in before
    assert "per-target losses averaged with the reward block's weights" not in after
