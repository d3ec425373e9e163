"""Reward weights in the console: edit a spec's weights, see at once whether the edited reward is
valid and how well it predicts the north-star on the simulated A/B logs, and save it as a new version.

Everything here is :mod:`reward_lib`'s: the spec and its checks, :func:`~reward_lib.validate.validate`
on each log's events, :func:`~reward_lib.alignment.measure`, and the store, which only ever adds
a version (the saved file's header says who edited it, from which version, and why). The A/B logs
are the experiment folders of the console (each ``events.parquet``), read once per change of file.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from evorec.ui.auth import CsrfChecked, Reviewer
from evorec.ui.config import UIConfig
from evorec.ui.rendering import flash, render
from recsys.errors import EvorecError
from recsys.settings import get_settings
from reward_lib import RewardError, RewardSpec, RewardStore, ValidationReport, validate
from reward_lib.alignment import Alignment, AlignmentData, measure
from reward_lib.logs import LogFile
from reward_lib.rewards import Reward, spec_reward

router = APIRouter()
WEIGHT_FIELD = "weight-{}"


class AlignmentLogs:
    """The A/B logs under the experiments folder, prepared for alignment and kept until their file changes."""

    def __init__(self, config: UIConfig) -> None:
        self.config = config
        self._cache: dict[Path, tuple[int, AlignmentData]] = {}
        self._lock = threading.Lock()

    def load(self) -> list[AlignmentData]:
        root = self.config.experiments_dir
        files = sorted(root.glob("*/events.parquet")) if root.is_dir() else []
        with self._lock:
            out = []
            for path in files:
                stamp = path.stat().st_mtime_ns
                cached = self._cache.get(path)
                if cached is None or cached[0] != stamp:
                    log = LogFile.find(path.parent)
                    try:
                        cached = (stamp, log.read(self._items(log.dataset)))
                    except RewardError:
                        continue  # too short to split into an early and a later part: no evidence either way
                    self._cache[path] = cached
                out.append(cached[1])
            return out

    def _items(self, dataset: str | None) -> pd.DataFrame | None:
        """The items (with genres) of the log's dataset when it is prepared here; genre signals need them."""
        if dataset is None:
            return None
        from recsys.data.prepared import PreparedDataset

        folder = get_settings(self.config.data_dir).prepared_dir / dataset
        return PreparedDataset.open(folder, verify=False).items if (folder / "manifest.json").exists() else None


@dataclass(frozen=True)
class Preview:
    """An edit of a spec's weights: why it is not a valid spec, or its validation and alignment."""

    base: Reward
    spec: RewardSpec | None
    errors: list[str]
    reports: list[ValidationReport]
    alignment: Alignment | None
    baseline: Alignment | None

    @property
    def ok(self) -> bool:
        return self.spec is not None and not self.errors and all(report.ok for report in self.reports)


def _measured(reward: Reward, logs: list[AlignmentData]) -> Alignment | None:
    try:
        return measure(reward, logs) if logs else None
    except RewardError:
        return None  # invalid on the logs: the validation says why


def preview(
    base: Reward, base_spec: RewardSpec, weights: dict[str, float], errors: list[str], logs: list[AlignmentData]
) -> Preview:
    """Validate ``base``'s spec with ``weights`` (by component name), then the reward on every log."""
    baseline = _measured(base, logs)
    edited = base_spec.with_weights(weights, base_spec.version, base.key)
    try:
        spec = RewardSpec.model_validate(edited.model_dump(mode="json"))  # with_weights does not check ranges
    except ValidationError as exc:
        return Preview(base, None, errors + _messages(exc, base_spec), [], None, baseline)
    if errors:
        return Preview(base, spec, errors, [], None, baseline)
    reward = spec_reward(spec, f"an edit of {base.key}")
    reports = [validate(reward, data.events, f"log {data.name}") for data in logs]
    alignment = _measured(reward, logs) if all(report.ok for report in reports) else None
    return Preview(base, spec, [], reports, alignment, baseline)


def _messages(exc: ValidationError, spec: RewardSpec) -> list[str]:
    out = []
    for error in exc.errors():
        where = error["loc"]
        if len(where) >= 2 and where[0] == "components" and isinstance(where[1], int):
            subject = f"component {spec.components[where[1]].label}"
        else:
            subject = ".".join(map(str, where)) or "the spec"
        out.append(f"{subject}: {str(error['msg']).removeprefix('Value error, ')}")
    return out


def _weights(form: Any, spec: RewardSpec) -> tuple[dict[str, float], list[str]]:
    """The weights a form sends (``weight-<index>``), and what is not a number."""
    weights, errors = {}, []
    for index, component in enumerate(spec.components):
        raw = str(form.get(WEIGHT_FIELD.format(index), component.weight)).strip()
        try:
            weights[component.label] = float(raw)
        except ValueError:
            errors.append(f"component {component.label}: weight {raw!r} is not a number")
    return weights, errors


def _store(request: Request) -> RewardStore:
    return RewardStore(request.app.state.config.rewards_dir)


def _editable(request: Request, name: str, version: int | None) -> Reward:
    try:
        reward = _store(request).load(name, version)
    except RewardError as exc:
        raise HTTPException(404, str(exc)) from exc
    return reward


@router.get("/rewards", response_class=HTMLResponse)
def rewards_page(request: Request) -> Response:
    store = _store(request)
    rewards = [(store.load(name), sorted(store.versions(name))) for name in store.names()]
    return render(request, "rewards.html", {"rewards": rewards, "root": store.root})


@router.get("/rewards/{name}", response_class=HTMLResponse)
def reward_page(request: Request, name: str, version: int | None = None) -> Response:
    base = _editable(request, name, version)
    logs: AlignmentLogs = request.app.state.reward_logs
    shown = None
    if base.spec is not None:
        shown = preview(base, base.spec, {c.label: c.weight for c in base.spec.components}, [], logs.load())
    store = _store(request)
    context = {"reward": base, "preview": shown, "versions": sorted(store.versions(name)),
               "next_version": store.next_version(name)}  # fmt: skip
    return render(request, "reward.html", context)


async def _preview_of_form(request: Request, name: str, version: int) -> tuple[Reward, Preview, Any]:
    """The reward being edited, the preview of the weights the form sends, and the form."""
    base = _editable(request, name, version)
    spec = base.spec
    if spec is None:
        raise HTTPException(400, f"{base.key} is a Python reward: its weights are code, not a spec")
    form = await request.form()
    weights, errors = _weights(form, spec)
    logs: AlignmentLogs = request.app.state.reward_logs
    shown = await run_in_threadpool(lambda: preview(base, spec, weights, errors, logs.load()))
    return base, shown, form


@router.post("/rewards/{name}/preview", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def reward_preview(request: Request, name: str, version: int) -> Response:
    """The preview fragment the page's script swaps in as the weights change (no state changes)."""
    _, shown, _ = await _preview_of_form(request, name, version)
    environment = request.app.state.templates
    return HTMLResponse(environment.get_template("reward_preview.html").render(preview=shown))


@router.post("/rewards/{name}", dependencies=[CsrfChecked])
async def save_reward(request: Request, name: str, version: int, user: Reviewer) -> Response:
    """Save the edited weights as the next version of ``name``, if the edit is valid and a reason given."""
    base, shown, form = await _preview_of_form(request, name, version)
    back = f"/rewards/{name}?version={version}"
    reason = str(form.get("reason", "")).strip()
    if not reason:
        flash(request, "error", "Not saved: say why you change the weights (it goes into the saved file).")
        return RedirectResponse(back, status_code=303)
    if not shown.ok or shown.spec is None:
        problems = shown.errors + [i.message for r in shown.reports for i in r.issues if i.severity == "error"]
        flash(request, "error", "Not saved: " + "; ".join(problems))
        return RedirectResponse(back, status_code=303)
    header = f"Edited in the review console by {user} from {base.key} ({base.source}).\nReason: {reason}"
    try:
        saved, path = _store(request).save_new_version(shown.spec, header)
    except (EvorecError, OSError) as exc:
        flash(request, "error", f"Not saved: {exc}")
        return RedirectResponse(back, status_code=303)
    flash(request, "success", f"Saved {saved.key} in {path}; {base.key} is unchanged.")
    return RedirectResponse(f"/rewards/{name}?version={saved.version}", status_code=303)
