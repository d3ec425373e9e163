"""One simulated A/B experiment: a pre-registered plan, hashed assignment, arms served by registry models.

The plan is written before the run (``plan.json`` in the run folder) and the run only reads it:
arms, split, unit, duration, metrics, alpha, power and the minimum detectable effect. Users are
assigned by salted hash of their id (the serving layer's routing); each arm's slates come from its
model through the serving layer's scoring, in process, or from a running recommendation server
over HTTP when the plan names one (:mod:`ab_testing.http_arms`). The run writes the event log
(Parquet), one row per user with the experiment's and the pre-period's metrics, and the guardrails
measured on the served slates.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from ab_testing.decision import MetricSpec
from ab_testing.fidelity import SimulatorFidelity, simulator_fidelity
from ab_testing.ground_truth import FitSettings, GroundTruth
from ab_testing.population import Population, PopulationConfig, simulate
from recsys.data.prepared import PreparedDataset
from recsys.errors import EvorecError
from recsys.evaluation import ItemCatalog, list_diversity
from recsys.event_log import EventLog
from recsys.sequences import UserSequences
from serving.artifacts import LoadedModel
from serving.batcher import masked_top_k
from serving.incremental import IncrementalScorer
from serving.routing import assign_arm

SCORING_CHUNK = 128  # users scored in one batch (larger batches of long histories fall out of the CPU caches)
SEGMENTS = ("light", "medium", "heavy")  # users by activity tercile
RUN_FILES = ("plan.json", "users.parquet", "visits.npy", "guardrails.json", "run.json")


class ExperimentError(EvorecError):
    """An experiment cannot be run or read as planned."""


# The per-user metrics a run measures (``users.parquet``), and each one's pre-period covariate for CUPED.
PER_USER_METRICS = ("retained_d7", "retained_d14", "active_days", "satisfaction", "ctr", "consumption", "diversity")
CUPED_COVARIATES = {"active_days": "pre_active_days", "retained_d7": "pre_active_days",
                    "retained_d14": "pre_active_days", "satisfaction": "pre_satisfaction"}  # fmt: skip


class ArmPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    version: int | None = Field(default=None, description="registry version id; none: the production model")
    weight: float = Field(default=1.0, gt=0, description="share of users, relative to the other arms")


class ExperimentPlan(BaseModel):
    """A pre-registered experiment (YAML section ``experiment``); the first arm is the control."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: str = "ml-latest-small"
    arms: tuple[ArmPlan, ...] = Field(min_length=2)
    salt: str | None = Field(default=None, description="assignment salt; the experiment's name by default")
    unit: str = Field(default="user", pattern="^user$", description="the randomisation unit")
    users: int = Field(default=20_000, ge=100)
    days: int = Field(default=14, ge=1)
    pre_period_days: int = Field(default=7, ge=0, description="days before the start, the CUPED covariates")
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    power: float = Field(default=0.8, gt=0, lt=1)
    mde: float = Field(default=0.02, gt=0, description="minimum detectable relative effect on the north star")
    diversity_margin: float = Field(default=0.02, ge=0, description="relative loss of list diversity tolerated")
    coverage_margin: float = Field(default=0.10, ge=0, description="relative loss of catalogue coverage tolerated")
    latency_margin: float = Field(default=0.25, ge=0, description="relative rise of p99 scoring latency tolerated")
    seed: int = 0
    population: dict[str, Any] = Field(default_factory=dict, description="overrides of the population settings")
    metrics: tuple[MetricSpec, ...] | None = Field(
        default=None, description="the pre-registered metrics (none: the defaults for the plan's length)"
    )
    server_url: str | None = Field(
        default=None,
        description="a recommendation server whose experiment serves the arms over HTTP (none: in process)",
    )

    @field_validator("server_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        """An http(s) URL with a host (pydantic's ``HttpUrl``), no query or fragment; kept as given, minus a final /."""
        if url is None:
            return None
        try:
            parsed = HttpUrl(url)
        except ValueError:
            parsed = None
        if parsed is None or parsed.query or parsed.fragment:
            raise ValueError(f"server_url must be an http(s) URL such as http://127.0.0.1:8000, got {url!r}")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _measurable_metrics(self) -> ExperimentPlan:
        """Every declared metric is one the run measures, at a length it can, with a test it supports."""
        if self.metrics is None:
            return self
        for spec in self.metrics:
            if spec.name not in PER_USER_METRICS:
                raise ValueError(f"metric {spec.name!r} is not measured; the metrics are {', '.join(PER_USER_METRICS)}")
            if spec.name.startswith("retained_d") and self.days <= int(spec.name.removeprefix("retained_d")):
                raise ValueError(f"metric {spec.name} needs an experiment longer than its day ({self.days} days)")
            if spec.test == "cuped" and spec.name not in CUPED_COVARIATES:
                raise ValueError(f"metric {spec.name} has no pre-period covariate for CUPED; use welch")
            if spec.test == "ratio" and spec.name != "ctr":
                raise ValueError(f"metric {spec.name}: the ratio test is for ctr (clicks over impressions)")
        if not any(spec.kind == "north_star" for spec in self.metrics):
            raise ValueError("the metrics need at least one north_star")
        return self

    @model_validator(mode="after")
    def _distinct_arms(self) -> ExperimentPlan:
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be distinct, got {names}")
        return self

    @property
    def assignment_salt(self) -> str:
        return self.salt or self.name

    def population_config(self) -> PopulationConfig:
        settings = {"users": self.users, "days": self.days, "pre_period_days": self.pre_period_days, "seed": self.seed}
        return PopulationConfig(**{**self.population, **settings})


def assign(plan: ExperimentPlan, user_ids: Sequence[str]) -> np.ndarray:
    """Arm index of each user, by salted hash of the id (the same routing the server uses)."""
    names = [arm.name for arm in plan.arms]
    weights = [arm.weight for arm in plan.arms]
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[assign_arm(plan.assignment_salt, user, names, weights)] for user in user_ids])


def activity_segments(activity: np.ndarray) -> np.ndarray:
    """Light, medium or heavy: each user's activity tercile (ties broken by position)."""
    ranks = np.empty(len(activity), dtype=np.int64)
    ranks[np.argsort(activity, kind="stable")] = np.arange(len(activity))
    return np.array(SEGMENTS)[ranks * len(SEGMENTS) // max(len(activity), 1)]


def simulated_user_ids(count: int) -> list[str]:
    return [f"sim-{user}" for user in range(count)]


class InstrumentedPolicy(ABC):
    """An arm as a population policy that measures the arm-level guardrails on the slates it serves.

    Subclasses say where slates come from and record one latency per request; exposure (for
    coverage), per-user slate diversity and the latency percentiles are counted here, the same way
    however the arm is served, so arms served in process and over HTTP compare like for like.
    """

    def __init__(self, catalog: ItemCatalog, slate_size: int) -> None:
        self.catalog = catalog
        self.slate_size = slate_size
        self.latencies_ms: list[float] = []
        self.exposure = np.zeros(len(catalog.popularity), dtype=np.int64)
        self._diversity_sum = np.zeros(0)  # per user id, grown to the largest id served
        self._diversity_count = np.zeros(0, dtype=np.int64)

    def __call__(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        slates = self._slates(users, histories)
        np.add.at(self.exposure, slates.ravel(), 1)
        diversity = list_diversity(torch.from_numpy(slates), self.catalog).numpy()
        size = int(users.max(initial=-1)) + 1
        if size > len(self._diversity_sum):
            grow = size - len(self._diversity_sum)
            self._diversity_sum = np.pad(self._diversity_sum, (0, grow))
            self._diversity_count = np.pad(self._diversity_count, (0, grow))
        np.add.at(self._diversity_sum, users, diversity)
        np.add.at(self._diversity_count, users, 1)
        return slates

    @abstractmethod
    def _slates(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        """``A X slate_size`` item indices (0: an empty slot), appending one latency per user."""

    def diversity(self, users: int) -> np.ndarray:
        """Per user, the mean genre diversity of the slates they were shown (NaN if none)."""
        totals, counts = np.zeros(users), np.zeros(users, dtype=np.int64)
        served = min(users, len(self._diversity_sum))
        totals[:served], counts[:served] = self._diversity_sum[:served], self._diversity_count[:served]
        return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)

    def guardrails(self) -> dict[str, float]:
        """Catalogue coverage of the served slates, and the latency of the requests that served them."""
        latencies = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "coverage": float((self.exposure[1:] > 0).mean()),
            "requests": len(self.latencies_ms),
            "mean_latency_ms": round(float(latencies.mean()), 3),
            "p50_latency_ms": round(float(np.percentile(latencies, 50)), 3),
            "p99_latency_ms": round(float(np.percentile(latencies, 99)), 3),
        }


class ServedPolicy(InstrumentedPolicy):
    """An arm's model scored in process by the serving layer's ranking.

    The model sees the real user the simulated one was drawn from (``source_user``: user-id based
    models need a known id) and the simulated history. A deterministic model gives the same slate
    to the same history, so a user is scored again only when their history has grown since their
    last slate (histories only grow); the others get that slate again. A SASRec artifact is scored
    by :class:`~serving.incremental.IncrementalScorer`, which keeps each user's keys and values, so
    a history grown by one item costs one position (other models: their program, in full). The
    users to score are sorted by the length of the history the model reads (the trainer's length
    bucketing: a batch is padded to its longest history, so batches of like lengths waste little)
    and go in batches of ``SCORING_CHUNK``; latency is recorded per scored request (its share of the
    batch). A SASRec's batches run on ``workers`` threads (default: torch's thread count), each with
    one torch thread while they run: on 2 cores, two batches side by side beat one batch on two
    intra-op threads, since causal attention over 200 positions gains little from a second intra-op
    thread (see ``benchmarks/ab_simulation.py``). The threads are the policy's for its lifetime, so each
    keeps its scoring workspace from one day to the next instead of allocating it again.
    """

    def __init__(
        self,
        model: LoadedModel,
        source_user: np.ndarray,
        catalog: ItemCatalog,
        slate_size: int,
        workers: int | None = None,
    ) -> None:
        super().__init__(catalog, slate_size)
        self.model = model
        self.workers = workers or torch.get_num_threads()
        self.source_user = source_user
        self.incremental = IncrementalScorer.attach(model)
        self._score: Callable[[np.ndarray, list[np.ndarray]], torch.Tensor] = (
            (lambda users, batch: model.scores(source_user[users], batch))
            if self.incremental is None
            else self.incremental.scores
        )  # chosen once: the program in full, or the cached keys and values
        self._scored_length = np.full(len(source_user), -1, dtype=np.int64)  # history length of the cached slate
        self._cached = np.zeros((len(source_user), slate_size), dtype=np.int64)
        self._pool: ThreadPoolExecutor | None = None  # started at the first day with batches to run side by side

    def _slates(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        lengths = np.fromiter((len(history) for history in histories), dtype=np.int64, count=len(histories))
        stale = np.flatnonzero(self._scored_length[users] != lengths)
        stale = stale[np.argsort(np.minimum(lengths[stale], self.model.manifest.max_len), kind="stable")]
        chunks = [stale[start : start + SCORING_CHUNK] for start in range(0, len(stale), SCORING_CHUNK)]
        score = partial(self._score_chunk, users, histories, lengths)
        if self.incremental is None or self.workers < 2 or len(chunks) < 2:  # an exported program: one at a time
            for rows in chunks:
                score(rows)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="evorec-served-policy")
            with _one_torch_thread():  # the pool's threads start, and take torch's thread count, in here
                list(self._pool.map(score, chunks))
        return self._cached[users].copy()

    def _score_chunk(
        self, users: np.ndarray, histories: list[np.ndarray], lengths: np.ndarray, rows: np.ndarray
    ) -> None:
        began = time.perf_counter()
        batch = [histories[row] for row in rows.tolist()]
        top = masked_top_k(self._score(users[rows], batch), batch, self.slate_size)
        self._cached[users[rows], : top.indices.shape[1]] = top.indices.numpy()
        self.latencies_ms.extend([(time.perf_counter() - began) * 1000 / len(rows)] * len(rows))
        self._scored_length[users[rows]] = lengths[rows]


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Torch ops run on their calling thread meanwhile (the process's intra-op setting, restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class ExperimentRun:
    """What a run produced: the per-user frame, daily visits, arm-level guardrails, and its folder."""

    plan: ExperimentPlan
    users: pd.DataFrame
    visits: np.ndarray  # users X days: came back on each day of the experiment
    guardrails: dict[str, dict[str, float]]
    folder: Path
    seconds: float
    fidelity: SimulatorFidelity | None = None  # how far the simulator that produced the run ranks models as users do

    @classmethod
    def load(cls, folder: Path) -> ExperimentRun:
        """A finished run from its folder (to analyse or report it again)."""
        missing = [name for name in RUN_FILES if not (folder / name).exists()]
        if missing:
            raise ExperimentError(f"{folder}: not a finished experiment run ({', '.join(missing)} missing)")
        meta = json.loads((folder / "run.json").read_text())
        fidelity = meta.get("fidelity")
        return cls(
            ExperimentPlan.model_validate_json((folder / "plan.json").read_text()),
            pd.read_parquet(folder / "users.parquet"),
            np.load(folder / "visits.npy"),
            json.loads((folder / "guardrails.json").read_text()),
            folder,
            float(meta["seconds"]),
            None if fidelity is None else SimulatorFidelity.model_validate(fidelity),
        )


def run_experiment(
    plan: ExperimentPlan,
    prepared: PreparedDataset,
    models: Mapping[str, LoadedModel],
    folder: Path,
    ground_truth: GroundTruth | None = None,
    versions: Mapping[str, int] | None = None,
    fidelity: SimulatorFidelity | None = None,
) -> ExperimentRun:
    """Simulate the plan and write the run to ``folder``.

    ``models`` maps arm names to served models. With ``plan.server_url`` the arms come from that
    server and only the control's model is needed: the pre-period puts everyone on the control,
    which the server's hashed split cannot do, so it is served in process. ``versions`` (arm name
    -> registry version id) are what the server's answers must say served them. ``fidelity`` is the
    simulator's on the dataset (none: the latest measured, or a quick check run and cached).
    """
    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.json").write_text(plan.model_dump_json(indent=2) + "\n")
    sequences = UserSequences.from_prepared(prepared)
    truth = ground_truth or GroundTruth.fit(prepared, FitSettings(seed=plan.seed))
    population = Population.sample(truth, sequences, plan.population_config())
    catalog = ItemCatalog.build(prepared, sequences)
    slate_size = population.config.slate_size
    pre_period = ServedPolicy(_model(models, plan.arms[0].name), population.source_user, catalog, slate_size)
    assignment = assign(plan, simulated_user_ids(population.num_users))
    with ExitStack() as stack:
        policies: dict[str, InstrumentedPolicy]
        if plan.server_url is None:
            policies = {
                arm.name: ServedPolicy(_model(models, arm.name), population.source_user, catalog, slate_size)
                for arm in plan.arms
            }
        else:
            from ab_testing.http_arms import RecommendationClient, http_policies  # it builds on this module

            client = stack.enter_context(RecommendationClient(plan.server_url))
            policies = http_policies(plan, client, prepared, population.source_user, catalog, versions or {})
        log = stack.enter_context(EventLog([arm.name for arm in plan.arms], folder / "events.parquet"))
        summary = simulate(population, dict(policies), assignment, log=log, pre_policy=pre_period)
    frame = summary.to_frame()
    frame.insert(0, "user_id", simulated_user_ids(population.num_users))
    diversity = np.full(population.num_users, np.nan)
    for policy in policies.values():  # each user saw one arm: take the values where there are some
        diversity = np.where(np.isnan(diversity), policy.diversity(population.num_users), diversity)
    frame["diversity"] = diversity
    frame["pre_diversity"] = pre_period.diversity(population.num_users)
    activity = population.activity
    frame["segment"] = pd.cut(
        activity, np.quantile(activity, [0, 1 / 3, 2 / 3, 1]), labels=SEGMENTS, include_lowest=True
    )
    frame.to_parquet(folder / "users.parquet", index=False)
    np.save(folder / "visits.npy", summary.experiment.visits)
    guardrails = {name: policy.guardrails() for name, policy in policies.items()}
    (folder / "guardrails.json").write_text(json.dumps(guardrails, indent=2) + "\n")
    fidelity = fidelity or simulator_fidelity(prepared)
    seconds = round(time.monotonic() - started, 1)
    meta = {"seconds": seconds, "users": population.num_users, "fidelity": fidelity.model_dump(mode="json")}
    (folder / "run.json").write_text(json.dumps(meta) + "\n")
    return ExperimentRun(plan, frame, summary.experiment.visits, guardrails, folder, seconds, fidelity)


def _model(models: Mapping[str, LoadedModel], arm: str) -> LoadedModel:
    if arm not in models:
        raise ExperimentError(f"no model for arm {arm!r}; the run has models for {', '.join(models) or 'no arm'}")
    return models[arm]
