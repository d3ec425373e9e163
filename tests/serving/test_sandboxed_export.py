"""Generated candidates are exported for serving inside the sandbox; the server only loads the program."""

from __future__ import annotations

import numpy as np
import pytest

from offline_agent.evaluator import EvaluationConfig, evaluate_candidate
from recsys.candidate import load_candidate
from serving.artifacts import load_artifact

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _config(prepared, tmp_path) -> EvaluationConfig:
    return EvaluationConfig(
        dataset=str(prepared.path), smoke_users=30, smoke_seconds=30, train_seconds=60, max_epochs=1,
        overhead_seconds=240, diagnose=False, export_dir=str(tmp_path / "artifacts"), work_dir=str(tmp_path / "work"),
    )  # fmt: skip


def test_the_evaluation_exports_a_servable_program(prepared_small, seeds_dir, tmp_path):
    candidate = load_candidate(seeds_dir / "mf_bpr")
    outcome = evaluate_candidate(dict(candidate.sources), _config(prepared_small, tmp_path))
    assert outcome.status == "evaluated" and outcome.export_error is None, outcome.reason
    model = load_artifact(str(outcome.artifact))
    assert model.manifest.content_hash == candidate.content_hash
    assert model.scores(np.array([0, 1]), [np.array([1, 2]), np.array([3])]).shape == (2, prepared_small.num_items + 1)


def test_a_model_that_cannot_be_exported_is_still_evaluated_and_says_why(prepared_small, seeds_dir, tmp_path):
    sources = dict(load_candidate(seeds_dir / "mf_bpr").sources)
    scoring = "        return users @ self.embed_items(torch.arange(self.num_items + 1, device=users.device)).T\n"
    assert scoring in sources["model"]
    sources["model"] = sources["model"].replace(
        scoring,
        scoring.replace("return", "scores =")
        + "        if float(scores.sum()) > 1e30:  # a branch on data: not exportable\n"
        "            scores = -scores\n"
        "        return scores\n",
    )
    outcome = evaluate_candidate(sources, _config(prepared_small, tmp_path))
    assert outcome.status == "evaluated" and outcome.artifact is None
    assert outcome.export_error and "cannot be exported" in outcome.export_error
