"""What the Kubeflow pipelines of both loops are run with: one YAML file (section ``pipeline``).

The defaults are the embedded main job (``make run``): ml-latest-small, the rulebook proposer,
two generations of two candidates, budgets that fit 15 minutes on 2 CPU cores. Every field
becomes a pipeline parameter, so a run on a cluster is configured the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kfp.dsl.graph_component import GraphComponent
from pydantic import BaseModel, ConfigDict, Field

from offline_agent.evaluator import EvaluationConfig
from offline_agent.evolve import EvolutionConfig
from offline_agent.rungs import RungConfig
from online_agent.agent import OnlineAgentConfig
from recsys.config_files import load_yaml_model

EMBEDDED_EVOLUTION = EvolutionConfig(
    seed_candidate="offline_agent/seeds/sasrec_bce",
    iterations=4,
    workers=2,
    # Epoch budgets (time only as a safety cap): candidates are compared at equal epochs on any machine.
    evaluation=EvaluationConfig(smoke_users=100, smoke_seconds=20, train_seconds=150, overhead_seconds=120),
    # Every candidate trains 3 epochs, the top half of them 8; the final training (final_max_epochs) is the
    # finals, of the best of the top rung only, resumed from its checkpoint: it fits 15 minutes.
    rungs=RungConfig(epochs=(3, 8), promote_fraction=0.5, finals=0),
)
EMBEDDED_ONLINE = OnlineAgentConfig(users=18_000, days=14, pre_period_days=7)  # 2% in active days, α over 3 north stars


class PipelineConfig(BaseModel):
    """The parameters of ``offline_evolution``, ``online_experiment`` and ``two_loop``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(default="ml-latest-small", description="dataset name, or a prepared folder")
    evolution: EvolutionConfig = EMBEDDED_EVOLUTION
    generations: int = Field(default=2, ge=1, description="rounds of proposals; the pipeline's shape")
    candidates_per_generation: int = Field(default=2, ge=1, description="proposals in each generation (a task each)")
    parallelism: int = Field(default=2, ge=1, description="evaluations that run at once; shapes the graph")
    final_train_seconds: float = Field(default=400, gt=0, description="time cap of each finalist's training")
    final_max_epochs: int = Field(
        default=20,
        ge=0,
        description="epochs of each finalist (0: its plan's); the same for seed and best on any machine",
    )
    model_name: str = Field(default="default", description="registry model line")
    first_production_policy: str | None = Field(
        default="first-production",
        description="policy that lets the trained seed become the first production model when there is none "
        "(none: a person must promote one first)",
    )
    online: OnlineAgentConfig = EMBEDDED_ONLINE
    version: int = Field(default=0, ge=0, description="online_experiment: version to test (0: the oldest queued)")
    approval_wait_seconds: float = Field(
        default=0, ge=0, description="how long the approval gate waits for a person (0: record and end)"
    )
    registry_url: str = Field(
        default="", description="registry URL; empty: $EVOREC_REGISTRY_URL in the task's environment, else SQLite"
    )

    def arguments(self, pipeline: GraphComponent) -> dict[str, Any]:
        """The runtime arguments that ``pipeline`` declares (the graph-shaping fields are built in)."""
        values = self.model_dump(mode="json", exclude_none=True)  # protobuf values have no null; unset means None
        values.setdefault("first_production_policy", "")
        declared = pipeline.component_spec.inputs or {}
        return {name: value for name, value in values.items() if name in declared}


def load_pipeline_config(path: Path) -> PipelineConfig:
    return load_yaml_model(path, PipelineConfig, "pipeline config", section="pipeline")
