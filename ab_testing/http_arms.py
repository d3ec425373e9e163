"""Experiment arms served by a running recommendation server over HTTP.

With ``server_url`` in the plan, each arm's slates come from ``POST /recommend`` on a real server
(:mod:`serving.server`), which routes every simulated user to an arm by salted hash. The server's
experiment must be the plan's (same salt, same arms in the same order, same weights:
:func:`server_config` builds it), and every answer is checked against the plan's assignment, so a
server configured otherwise fails the run loudly instead of mixing arms. Requests go out
concurrently over pooled connections, with retries and backoff on connection errors and 5xx; the
latency guardrail is the measured round trip of each request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import numpy as np
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ab_testing.experiment import ExperimentError, ExperimentPlan, InstrumentedPolicy, simulated_user_ids
from recsys.data.prepared import PreparedDataset
from recsys.evaluation import ItemCatalog
from serving.catalog import ServingCatalog, UnknownItems
from serving.server import ExperimentArm, ServerConfig

CONCURRENCY = 16  # requests in flight at once (and pooled connections)
TIMEOUT_SECONDS = 30.0
ATTEMPTS = 4  # tries per request on connection errors and 5xx
BACKOFF_SECONDS = 0.2  # first wait between tries; doubles each time
MATCH_HINT = "start the server with the plan's experiment (ab_testing.http_arms.server_config)"


def server_config(plan: ExperimentPlan, versions: Mapping[str, int] | None = None, **settings: Any) -> ServerConfig:
    """Server settings whose experiment routes every user to the arm ``plan`` assigns them.

    ``versions`` pins arms to registry versions (by default each arm's planned version, where none
    means production); ``settings`` are the other ``ServerConfig`` fields (registry_url, port, ...).
    """
    pinned = versions or {}
    arms = tuple(
        ExperimentArm(name=arm.name, version=pinned.get(arm.name, arm.version), weight=arm.weight) for arm in plan.arms
    )
    return ServerConfig.model_validate(
        {"dataset": plan.dataset, **settings, "salt": plan.assignment_salt, "arms": arms}
    )


@dataclass(frozen=True)
class Served:
    """One answer of the server: the arm and registry version that served it, its item ids, its round trip."""

    arm: str
    version: int
    items: list[str]
    milliseconds: float


class _ServerError(Exception):
    """A 5xx answer, worth another try."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class RecommendationClient:
    """One server's API from many threads: pooled connections, bounded concurrency, retries with backoff."""

    def __init__(
        self,
        url: str,
        concurrency: int = CONCURRENCY,
        timeout: float = TIMEOUT_SECONDS,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF_SECONDS,
    ) -> None:
        self.url = url.rstrip("/")
        self.attempts = attempts
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.Client(base_url=self.url, limits=limits, timeout=timeout)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="evorec-http-arm")
        self._retrying = Retrying(
            retry=retry_if_exception_type((httpx.TransportError, _ServerError)),
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=backoff),
            reraise=True,
        )

    def deployment(self) -> dict[str, int]:
        """The arms the server deploys, in its routing order (``GET /health``): arm name -> registry version."""
        response, _ = self._send("GET", "/health", None)
        return {str(arm): int(version) for arm, version in response.json()["arms"].items()}

    def recommend_all(self, bodies: list[dict[str, Any]]) -> list[Served]:
        """One ``POST /recommend`` per body, at most ``concurrency`` at a time; answers in the bodies' order."""
        return list(self._pool.map(self._recommend, bodies))

    def _recommend(self, body: dict[str, Any]) -> Served:
        response, milliseconds = self._send("POST", "/recommend", body)
        answer = response.json()
        items = [str(item["item_id"]) for item in answer["items"]]
        return Served(str(answer["arm"]), int(answer["model_version"]), items, milliseconds)

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[httpx.Response, float]:
        try:
            return self._retrying(self._attempt, method, path, body)
        except httpx.TransportError as exc:
            raise ExperimentError(
                f"cannot reach the recommendation server at {self.url} ({method} {path}, {self.attempts} tries): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        except _ServerError as exc:
            raise ExperimentError(
                f"the recommendation server at {self.url} answered {method} {path} with "
                f"{exc.response.status_code} {_detail(exc.response)} ({self.attempts} tries)"
            ) from exc

    def _attempt(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[httpx.Response, float]:
        """One try; its round trip in milliseconds (a request's latency is that of the try that succeeded)."""
        began = time.perf_counter()
        response = self._client.request(method, path, json=body)
        milliseconds = (time.perf_counter() - began) * 1000
        if response.is_server_error:
            raise _ServerError(response)
        if response.is_error:
            raise ExperimentError(
                f"the recommendation server at {self.url} refused {method} {path}: "
                f"{response.status_code} {_detail(response)}"
            )
        return response, milliseconds

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        self._client.close()

    def __enter__(self) -> RecommendationClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:500]


@dataclass(frozen=True)
class _Audience:
    """What every request of a run says of its simulated users, and how to read the server's item ids."""

    client: RecommendationClient
    plan: ExperimentPlan
    user_ids: np.ndarray  # simulated user -> the id the server routes on
    source_ids: np.ndarray  # simulated user -> the real user's id, whose learned profile scores them
    items: ServingCatalog


class HttpArmPolicy(InstrumentedPolicy):
    """One arm's slates from the server; every answer must come from this arm (and its registry version)."""

    def __init__(
        self, audience: _Audience, arm: str, version: int | None, catalog: ItemCatalog, slate_size: int
    ) -> None:
        super().__init__(catalog, slate_size)
        self.audience = audience
        self.arm = arm
        self.version = version

    def _slates(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        audience = self.audience
        bodies = [
            {"user_id": audience.user_ids[user], "source_user_id": audience.source_ids[user],
             "history": audience.items.item_ids[history].tolist(), "k": self.slate_size}
            for user, history in zip(users.tolist(), histories, strict=True)
        ]  # fmt: skip
        answers = audience.client.recommend_all(bodies)
        slates = np.zeros((len(users), self.slate_size), dtype=np.int64)
        for row, (user, answer) in enumerate(zip(users.tolist(), answers, strict=True)):
            self._check(user, answer)
            slates[row, : len(answer.items)] = self._indices(answer.items)
        self.latencies_ms.extend(answer.milliseconds for answer in answers)
        return slates

    def _check(self, user: int, answer: Served) -> None:
        if answer.arm == self.arm and self.version in (None, answer.version):
            return
        audience = self.audience
        planned = self.arm if self.version is None else f"{self.arm} (v{self.version})"
        raise ExperimentError(
            f"the recommendation server at {audience.client.url} served {audience.user_ids[user]} from arm "
            f"{answer.arm} (v{answer.version}) but plan {audience.plan.name} assigns it to {planned}: the server's "
            f"experiment (salt, arms, weights) is not the plan's (salt {audience.plan.assignment_salt!r}); {MATCH_HINT}"
        )

    def _indices(self, item_ids: list[str]) -> np.ndarray:
        try:
            return self.audience.items.indices(item_ids)
        except UnknownItems as exc:
            raise ExperimentError(
                f"the recommendation server at {self.audience.client.url} recommends items that dataset "
                f"{self.audience.plan.dataset} does not have ({exc}): does it serve another dataset?"
            ) from exc


def http_policies(
    plan: ExperimentPlan,
    client: RecommendationClient,
    prepared: PreparedDataset,
    source_user: np.ndarray,
    catalog: ItemCatalog,
    versions: Mapping[str, int],
) -> dict[str, InstrumentedPolicy]:
    """The plan's arms as policies served by ``client``'s server, once its deployment is checked against the plan.

    ``source_user`` maps each simulated user to the real user they were drawn from; ``versions``
    are the registry versions the arms must be served by (arms left out are not checked).
    """
    check_deployment(plan, client, versions)
    items = ServingCatalog.build(prepared)
    real_ids = np.empty(len(items.user_index), dtype=object)
    real_ids[list(items.user_index.values())] = list(items.user_index)
    simulated = np.array(simulated_user_ids(len(source_user)), dtype=object)
    audience = _Audience(client, plan, simulated, real_ids[source_user], items)
    slate_size = plan.population_config().slate_size
    return {
        arm.name: HttpArmPolicy(audience, arm.name, versions.get(arm.name), catalog, slate_size) for arm in plan.arms
    }


def check_deployment(plan: ExperimentPlan, client: RecommendationClient, versions: Mapping[str, int]) -> None:
    """Fail before the run when the server deploys other arms (or versions) than the plan's."""
    deployed = client.deployment()
    planned = [arm.name for arm in plan.arms]
    if list(deployed) != planned:
        raise ExperimentError(
            f"the recommendation server at {client.url} serves the arms {list(deployed)} but plan {plan.name} has "
            f"{planned}; {MATCH_HINT}"
        )
    wrong = [f"{arm}: v{deployed[arm]} instead of v{version}" for arm, version in versions.items()
             if deployed.get(arm) != version]  # fmt: skip
    if wrong:
        raise ExperimentError(
            f"the recommendation server at {client.url} serves other versions than plan {plan.name}: "
            f"{'; '.join(wrong)}; {MATCH_HINT}"
        )
