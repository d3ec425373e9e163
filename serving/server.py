"""The recommendation server: FastAPI over the registry's production model (and experiment arms).

Models come from the registry as exported programs (:mod:`serving.artifacts`), so no candidate
code runs here. A background task polls the registry; a newly promoted version is loaded first and
then swapped in with one assignment, so requests in flight finish on the model they started with
and none fails. Requests are scored in micro-batches (:mod:`serving.batcher`).

Run with ``evorec serve`` (uvicorn), or build the app with :func:`create_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from fastapi import Body, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema

from serving.artifacts import LoadedModel, load_artifact
from serving.batcher import MicroBatcher
from serving.catalog import ServingCatalog, UnknownItems
from serving.diagnostics import PAUSE_BUCKETS, GcPauses, LoopLagMonitor, freeze_long_lived
from serving.limits import BodyLimit, shown, validation_error
from serving.registry import Registry
from serving.routing import assign_arm

log = logging.getLogger(__name__)
PRODUCTION = "production"
MAX_K = 100
MAX_ID_CHARS = 200


class ExperimentArm(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int | None = Field(default=None, description="registry version id; none means the production model")
    weight: float = Field(default=1.0, gt=0)


class ServerConfig(BaseModel):
    """``evorec serve`` settings (YAML section ``serve``). Without ``arms`` every user gets production."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    registry_url: str | None = None
    dataset: str = "ml-latest-small"
    model_name: str = "default"
    salt: str = Field(default="evorec", description="experiment salt: a new salt reshuffles users across arms")
    arms: tuple[ExperimentArm, ...] = ()
    max_batch: int = Field(default=32, ge=1, le=4096)
    max_wait_ms: float = Field(default=2.0, ge=0)
    scoring_threads: int = Field(
        default=1, ge=1, le=64, description="torch threads of a forward pass; the event loop needs a core too"
    )
    reload_seconds: float = Field(default=2.0, gt=0)
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="larger request bodies are refused (413)")
    unknown_items: Literal["ignore", "refuse"] = Field(
        default="ignore",
        description="history items not in the catalogue: ignore them (named in the answer's warnings) or refuse "
        "the request (422)",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)


def _id_text(value: Any) -> Any:
    """Integer ids as the catalogue keeps them (text); anything else is left for the str check to judge."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Id = Annotated[
    str,
    BeforeValidator(_id_text),
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS),
    WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}, {"type": "integer"}]}),
]


class RecommendBody(BaseModel):
    """The body of ``POST /recommend``; ids are strings or integers, as the catalogue's ids read.

    Example: ``{"user_id": "u-17", "history": [318, "296", 593], "k": 5}``.
    """

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"user_id": "u-17", "history": [318, "296", 593], "k": 5}]}
    )

    user_id: Id | None = Field(default=None, description="routes the user to an arm; a random id if omitted")
    source_user_id: Id | None = Field(
        default=None,
        description="a known user whose learned profile scores the history (the real user a simulated one was "
        "drawn from); user_id still picks the arm",
    )
    history: list[Id] = Field(
        min_length=1, max_length=10_000, description="item ids, oldest first; unknown ones are ignored (see warnings)"
    )
    k: int = Field(default=10, ge=1, le=MAX_K)


class RecommendedItem(BaseModel):
    item_id: str
    title: str
    score: float


class Recommendation(BaseModel):
    user_id: str | None
    arm: str
    model_version: int
    items: list[RecommendedItem]
    warnings: list[str] = Field(default_factory=list, description="e.g. history items ignored as unknown")


@dataclass(frozen=True)
class Deployment:
    """The models serving right now: arm name -> (registry version id, loaded model)."""

    arms: dict[str, tuple[int, LoadedModel]]


class ModelPool:
    """Loads the arms' models from the registry and swaps in a new deployment when they change."""

    def __init__(self, registry: Registry, config: ServerConfig) -> None:
        self.registry = registry
        self.config = config
        self.deployment = Deployment({})
        self._loaded: dict[int, LoadedModel] = {}

    def _wanted(self) -> dict[str, int]:
        production = self.registry.production(self.config.model_name)
        arms = self.config.arms or (ExperimentArm(name=PRODUCTION),)
        wanted = {}
        for arm in arms:
            version = arm.version if arm.version is not None else (production.id if production else None)
            if version is not None:
                wanted[arm.name] = version
        return wanted

    def refresh(self) -> bool:
        """Load what the registry says should serve; True when the deployment changed."""
        wanted = self._wanted()
        current = {arm: version for arm, (version, _) in self.deployment.arms.items()}
        if wanted == current:
            return False
        for version in set(wanted.values()) - set(self._loaded):
            self._loaded[version] = load_artifact(self.registry.get(version).artifact_uri)
            log.info("loaded model version %d", version)
        self.deployment = Deployment({arm: (v, self._loaded[v]) for arm, v in wanted.items()})
        self._loaded = {v: self._loaded[v] for v in set(wanted.values())}
        log.info("serving %s", ", ".join(f"{arm}=v{v}" for arm, v in wanted.items()) or "nothing")
        return True


class Metrics:
    """Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "evorec_request_seconds", "Request latency", ["endpoint"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )  # fmt: skip
        self.requests = Counter(
            "evorec_requests", "Recommendation requests", ["model_version", "arm", "status"], registry=self.registry
        )
        self.batch_size = Histogram(
            "evorec_batch_size", "Requests scored per forward pass", registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )  # fmt: skip
        self.batch_wait = Histogram(
            "evorec_batch_wait_seconds", "Oldest request's wait in the queue before its batch was scored",
            registry=self.registry, buckets=PAUSE_BUCKETS,
        )  # fmt: skip
        self.batch_scoring = Histogram(
            "evorec_batch_scoring_seconds", "Seconds to score one micro-batch (off the event loop)",
            registry=self.registry, buckets=PAUSE_BUCKETS,
        )  # fmt: skip
        self.loop_lag = LoopLagMonitor(self.registry)
        self.gc_pauses = GcPauses(self.registry)

    def observe_batch(self, size: int, waited: float, scored: float) -> None:
        self.batch_size.observe(size)
        self.batch_wait.observe(waited)
        self.batch_scoring.observe(scored)


def create_app(config: ServerConfig, catalog: ServingCatalog, registry: Registry) -> FastAPI:
    """The server app; ``catalog`` gives ids, titles and histories; ``registry`` the models."""
    pool = ModelPool(registry, config)
    metrics = Metrics()
    batcher = MicroBatcher(config.max_batch, config.max_wait_ms / 1000, metrics.observe_batch)

    async def reload_forever() -> None:
        while True:
            await asyncio.sleep(config.reload_seconds)
            try:
                if await asyncio.to_thread(pool.refresh):
                    freeze_long_lived()
            except Exception:  # a broken artifact must not take the serving model down
                log.exception("reloading models failed; the current deployment keeps serving")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(config.scoring_threads)
        await asyncio.to_thread(pool.refresh)
        freeze_long_lived()
        batcher.start()
        metrics.loop_lag.start()
        metrics.gc_pauses.start()
        reloader = asyncio.create_task(reload_forever())
        yield
        reloader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reloader
        metrics.gc_pauses.stop()
        metrics.loop_lag.stop()
        await batcher.stop()
        gc.unfreeze()
        torch.set_num_threads(torch_threads)

    app = FastAPI(
        title="evorec recommendation server",
        description="Top-k recommendations from the model in production (and experiment arms). "
        '`POST /recommend` takes `{"history": [item ids, oldest first], "k": 10, "user_id": optional}`; '
        "ids are strings or integers; unknown items are ignored and named in `warnings`.",
        lifespan=lifespan,
        exception_handlers={RequestValidationError: validation_error},
    )
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)

    @app.middleware("http")
    async def time_requests(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        metrics.latency.labels(request.url.path).observe(time.perf_counter() - started)
        return response

    async def recommend_for(user_id: str | None, user: int, history: np.ndarray, k: int) -> Recommendation:
        arms = pool.deployment.arms
        if not arms:
            raise HTTPException(503, "no model is in production yet; promote one with `evorec promote approve ID`")
        names = list(arms)
        arm = names[0] if len(names) == 1 else assign_arm(config.salt, user_id or "", names, _weights(config, names))
        version, model = arms[arm]
        try:
            ranking = await batcher.submit(model, user, history, k)
        except Exception as exc:
            metrics.requests.labels(str(version), arm, "error").inc()
            raise HTTPException(500, f"scoring failed: {exc}") from exc
        metrics.requests.labels(str(version), arm, "ok").inc()
        items = [
            RecommendedItem(item_id=str(catalog.item_ids[i]), title=str(catalog.titles[i]), score=round(s, 6))
            for i, s in zip(ranking.items, ranking.scores, strict=True)
        ]
        return Recommendation(user_id=user_id, arm=arm, model_version=version, items=items)

    @app.get("/recommend", response_model=Recommendation, responses={404: {"description": "unknown user"}})
    async def recommend(
        user_id: Annotated[str, Query(min_length=1, max_length=200, description="a known user's id")],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    ) -> Recommendation:
        """Top-k for a known user, from their history in the prepared data."""
        known = catalog.history(user_id)
        if known is None:
            raise HTTPException(404, f"unknown user {user_id!r}; POST /recommend with their history instead")
        user, history = known
        return await recommend_for(user_id, user, history, k)

    @app.post(
        "/recommend", response_model=Recommendation, responses={422: {"description": "unknown item ids or source user"}}
    )
    async def recommend_history(body: Annotated[RecommendBody, Body()]) -> Recommendation:
        """Top-k for a history sent in the request (new or anonymous users).

        Item ids are strings or integers. Items the catalogue does not hold are ignored and named in
        ``warnings`` (with the ``unknown_items: refuse`` setting the request is refused, 422).
        """
        history_ids = body.history
        unknown = [item for item in history_ids if item not in catalog.item_index]
        warnings = []
        if unknown:
            if config.unknown_items == "refuse" or len(unknown) == len(history_ids):
                none = "none of the history's items is in the catalogue: " if len(unknown) == len(history_ids) else ""
                raise HTTPException(422, none + str(UnknownItems([shown(item) for item in unknown])))
            warnings.append(f"ignored {len(unknown)} {UnknownItems([shown(item) for item in unknown])}")
            history_ids = [item for item in history_ids if item in catalog.item_index]
        history = catalog.indices(history_ids)
        profile = body.source_user_id or body.user_id
        known = catalog.history(profile) if profile else None
        if body.source_user_id is not None and known is None:
            raise HTTPException(422, f"unknown source user {shown(body.source_user_id)!r}")
        answer = await recommend_for(body.user_id, known[0] if known else 0, history, body.k)
        return answer.model_copy(update={"warnings": warnings})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """200 when a model is serving, 503 otherwise (for readiness probes)."""
        arms = pool.deployment.arms
        if not arms:
            raise HTTPException(503, "no model is serving")
        return {"status": "ok", "arms": {arm: version for arm, (version, _) in arms.items()}}

    @app.get("/models")
    async def models() -> dict[str, Any]:
        """The deployed versions with their manifests, and the registry's production version.

        ``content_hash`` is the registry's (what `evorec registry show` prints); ``source_hash`` the
        sha256 of the exact sources the artifact was trained from.
        """
        production = registry.production(config.model_name)
        deployed = pool.deployment.arms.items()
        hashes = {version: registry.get(version).content_hash for _, (version, _) in deployed}
        return {
            "production_version": production.id if production else None,
            "arms": {arm: _describe(version, m, hashes[version]) for arm, (version, m) in deployed},
        }

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _describe(version: int, model: LoadedModel, content_hash: str) -> dict[str, Any]:
    manifest = model.manifest
    return {"version": version, "candidate": manifest.candidate, "content_hash": content_hash,
            "source_hash": manifest.content_hash, "dataset": manifest.dataset, "metrics": manifest.metrics}  # fmt: skip


def _weights(config: ServerConfig, names: list[str]) -> list[float]:
    by_name = {arm.name: arm.weight for arm in config.arms}
    return [by_name.get(name, 1.0) for name in names]
