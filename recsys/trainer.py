"""The trusted training harness: it owns the loop, the optimizers, budgets, early stopping,
checkpoints and the final test evaluation; the candidate's blocks only supply the model, the
train task, the plan and the reward weights.

Seeded and deterministic on CPU. The trainer owns the arithmetic too (``recsys.precision``): on
the configured device (CPU by default, CUDA when asked for), in bfloat16 autocast where the
hardware multiplies it fast, with batches bucketed by history length so that little of a step runs
on padding, and evaluation on the same path. Candidates need no change for any of it. Only the
full-softmax loss's kernels are compiled (``recsys.fast_losses``); the candidate's model is not:
compiling SASRec took minutes on 2 cores and its step ran no faster than eager.

Early stopping and the best epoch are chosen on validation NDCG@10 only; the test split is
evaluated once, on the best epoch's weights.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from tqdm.auto import tqdm

from recsys.batches import training_batches
from recsys.candidate import Candidate
from recsys.candidate_api import ModelSpec, TrainingPlan
from recsys.data.prepared import PreparedDataset
from recsys.distributed import (
    ShardedCandidateModel,
    WorldInfo,
    init_world,
    launched_by_torchrun,
    table_parameters,
)
from recsys.errors import EvorecError
from recsys.evaluation import SELECTION_METRIC, ItemCatalog, RankedLists, rank_lists
from recsys.event_table import from_interactions
from recsys.heldout import SAVED_EPOCH, HeldOut, LocalHeldOut
from recsys.precision import Precision, PrecisionName, resolve_device
from recsys.scoring import Scorer
from recsys.sequences import SPLIT_CODES, Stage, UserSequences

log = logging.getLogger(__name__)


class TrainingError(EvorecError):
    """Training could not go on (a NaN loss, a model that does not fit the contract's shapes)."""


@dataclass(frozen=True)
class TrainerConfig:
    """Harness knobs: none of them changes the protocol.

    ``max_epochs`` caps the candidate's plan. ``budget_seconds`` stops this invocation's training
    (even mid-epoch) once spent, however long earlier sessions of a resumed run took.
    ``checkpoint_dir`` holds ``last.pt`` (to resume) and ``best.pt``. ``device`` is ``cpu``,
    ``cuda`` or ``cuda:N``; ``precision`` ``auto`` takes bfloat16 autocast where the device has
    bfloat16 matrix units and float32 elsewhere; ``bucketing`` batches users of similar history
    length together. ``precision="float32", bucketing=False`` is the plain float32 path.
    """

    seed: int = 0
    max_epochs: int | None = None
    budget_seconds: float | None = None
    max_len: int | None = None
    max_users: int | None = None  # train and evaluate on the first users only (smoke runs)
    eval_batch_size: int = 512
    threads: int | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    progress: bool = True
    device: str = "cpu"
    precision: PrecisionName = "auto"
    bucketing: bool = True


@dataclass
class TrainResult:
    candidate: str
    content_hash: str
    dataset: str
    best_epoch: int
    epochs: int
    stopped: str
    seconds: float
    valid: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    world_size: int = 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build_optimizer(candidate: Candidate, plan: TrainingPlan, model: nn.Module) -> torch.optim.Optimizer:
    """The candidate's optimizer; with ``rowwise_adagrad`` the tables get TorchRec's row-wise Adagrad."""
    make_dense: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] = candidate.function(
        "optim", "build_optimizer"
    )
    if plan.embedding_optimizer == "dense":
        return make_dense(model.parameters())
    tables = table_parameters(model)
    dense = {name: p for name, p in model.named_parameters() if name not in tables}
    optimizers: list[tuple[str, Any]] = [
        ("embeddings", KeyedOptimizerWrapper(tables, lambda ps: RowWiseAdagrad(ps, lr=plan.embedding_lr)))
    ]
    if dense:
        optimizers.append(("dense", KeyedOptimizerWrapper(dense, lambda ps: make_dense(ps))))
    return CombinedOptimizer(optimizers)


class Trainer:
    """Train one candidate on one prepared dataset.

    Example::

        result = Trainer(load_candidate(path), PreparedDataset.open(folder)).fit()
        result.test["ndcg@10"]
    """

    def __init__(
        self,
        candidate: Candidate,
        prepared: PreparedDataset,
        config: TrainerConfig | None = None,
        epoch_log: TextIO | None = None,
        heldout: HeldOut | None = None,
    ) -> None:
        """``heldout`` judges the ranked lists; by default a judge in this process, on ``prepared``'s
        targets (trusted candidates only: generated code trains on a view without them, judged outside)."""
        self.candidate = candidate
        self.prepared = prepared
        self.config = config or TrainerConfig()
        self.epoch_log = epoch_log
        self.model: nn.Module | None = None  # the best epoch's model, once fit() returns
        self.device = resolve_device(self.config.device)
        self.world = init_world(self.device) if launched_by_torchrun() else WorldInfo(0, 1)
        if self.world.world_size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", self.world.rank % torch.cuda.device_count())
        self.precision = Precision.choose(self.config.precision, self.device)
        batches = "batches bucketed by history length" if self.config.bucketing else "random batches"
        log.info("%s trains on %s, %s", candidate.name, self.precision.describe(), batches)
        if self.world.world_size > 1 and self.config.resume:
            raise TrainingError("resuming is supported in single-process training only")
        plan: TrainingPlan = candidate.function("optim", "training_plan")()
        if self.config.max_epochs is not None:
            plan = replace(plan, epochs=min(plan.epochs, self.config.max_epochs))
        if self.config.max_len is not None:
            plan = replace(plan, max_len=self.config.max_len)
        self.plan = plan
        self.sequences = UserSequences.from_prepared(prepared)
        if self.config.max_users is not None:
            self.sequences = self.sequences.head(self.config.max_users)
        self.catalog = ItemCatalog.build(prepared, self.sequences)
        self.spec = ModelSpec(
            prepared.num_items,
            prepared.num_users,
            plan.max_len,
            item_popularity=self.catalog.popularity.to(self.device, copy=True),
            item_genres=self.catalog.genres.to(self.device, copy=True),
            device=str(self.device),
        )
        self.event_weights = self._event_weights()
        self.heldout = heldout or LocalHeldOut(self.sequences, self.catalog)

    def _event_weights(self) -> np.ndarray:
        """A weight per event from the reward block, which sees the training events only: valid and
        test events are never training targets (they weigh 1) and must not shape the reward."""
        count = len(self.sequences.items)
        train = self.sequences.split == SPLIT_CODES["train"]
        events = from_interactions(self.prepared.interactions.iloc[:count][train], self.prepared.items)
        weights = np.asarray(self.candidate.function("reward", "event_weights")(events), dtype=np.float32)
        if weights.shape != (len(events),) or not np.isfinite(weights).all():
            raise TrainingError(
                f"reward.py: event_weights must return one finite weight per training event ({len(events)}), "
                f"got shape {weights.shape}"
            )
        full = np.ones(count, dtype=np.float32)
        full[train] = weights
        return full

    def _lists(
        self, model: nn.Module, stage: Stage, sequences: UserSequences, users: np.ndarray | None = None
    ) -> RankedLists:
        """The model's ranked lists for ``stage`` (of ``users``, by default all the judge evaluates): all
        that leaves this process for judging."""
        model.eval()
        scorer = Scorer(model, self.precision, self.prepared.num_items)
        size, max_len = self.config.eval_batch_size, self.plan.max_len
        users = self.heldout.users(stage) if users is None else users
        return rank_lists(scorer, sequences, stage, users, size, max_len, by_length=self.config.bucketing)

    def fit(self) -> TrainResult:
        config, plan = self.config, self.plan
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        generator = np.random.default_rng(config.seed)
        model: nn.Module = self.candidate.function("model", "build_model")(self.spec).to(self.device)
        task: nn.Module = self.candidate.function("loss", "build_train_task")(self.spec)
        if isinstance(task, nn.Module):
            task = task.to(self.device)
        if self.world.world_size > 1:
            sharded = ShardedCandidateModel(model, plan.embedding_lr, self.world, self.device)
            optimizer = self.candidate.function("optim", "build_optimizer")(sharded.dense_parameters())
            model = sharded
        else:
            optimizer = build_optimizer(self.candidate, plan, model)
        scheduler = None
        if hasattr(self.candidate.modules["optim"], "build_scheduler"):
            steps_per_epoch = math.ceil(self.sequences.num_users / (plan.batch_size * self.world.world_size))
            scheduler = self.candidate.function("optim", "build_scheduler")(optimizer, steps_per_epoch * plan.epochs)
        state = _TrainState()
        checkpoint = config.checkpoint_dir if self.world.is_main else None
        if checkpoint is not None:
            checkpoint.mkdir(parents=True, exist_ok=True)
            if config.resume and (checkpoint / "last.pt").exists():
                state = _TrainState.load(checkpoint / "last.pt", model, optimizer, generator, scheduler, self.device)
                self.heldout.resumed(state.epoch, state.best_epoch, state.best_valid)
                log.info("resumed %s after epoch %d", self.candidate.name, state.epoch)
        started = time.monotonic() - state.seconds  # total training time, across resumed sessions
        invocation = time.monotonic()  # the budget applies to this invocation only
        stopped = "epochs"
        while state.epoch < plan.epochs:
            if state.bad_epochs >= plan.patience:
                stopped = "patience"
                break
            if config.budget_seconds is not None and time.monotonic() - invocation >= config.budget_seconds:
                stopped = "budget"
                break
            epoch = state.epoch + 1
            loss, steps, partial = self._train_epoch(model, task, optimizer, scheduler, generator, epoch, invocation)
            valid = self.heldout.score(self._lists(model, "valid", self.sequences))
            improved = valid[SELECTION_METRIC] > state.best_metric
            if improved:
                state.best_metric, state.best_epoch = valid[SELECTION_METRIC], epoch
                state.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                state.best_valid = valid
                state.bad_epochs = 0
            else:
                state.bad_epochs += 1
            state.epoch = epoch
            state.seconds = time.monotonic() - started
            line = {
                "epoch": epoch,
                "loss": loss,
                "steps": steps,
                "valid_ndcg@10": round(valid["ndcg@10"], 6),
                "valid_hr@10": round(valid["hr@10"], 6),
                "best_epoch": state.best_epoch,
                "seconds": round(state.seconds, 2),
            }
            state.history.append(line)
            self._log_epoch(line)
            if checkpoint is not None:
                _save_checkpoint(checkpoint, state, model, optimizer, generator, scheduler, improved)
            if partial:
                stopped = "budget"
                break
        if state.best_state is None:
            raise TrainingError(f"{self.candidate.name}: no epoch was completed within the budget")
        model.load_state_dict(state.best_state)
        valid = self.heldout.final(self._lists(model, "valid", self.sequences, self.heldout.final_users()))
        test = self.heldout.score(self._lists(model, "test", self.heldout.test_inputs()))
        if self.world.world_size == 1:
            model.to("cpu")  # what reads the trained model afterwards (diagnosis, export) works on the CPU
        self.model = model
        return TrainResult(
            candidate=self.candidate.name,
            content_hash=self.candidate.content_hash,
            dataset=self.prepared.name,
            best_epoch=state.best_epoch,
            epochs=state.epoch,
            stopped=stopped,
            seconds=round(time.monotonic() - started, 2),
            valid=valid,
            test=test,
            history=state.history,
            world_size=self.world.world_size,
        )

    def _train_epoch(
        self,
        model: nn.Module,
        task: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        generator: np.random.Generator,
        epoch: int,
        started: float,
    ) -> tuple[float, int, bool]:
        """One pass over the users; returns the mean loss, the steps and whether the budget cut it short."""
        model.train()
        batches = training_batches(
            self.sequences,
            self.plan.batch_size,
            self.plan.max_len,
            generator,
            self.event_weights,
            self.world.rank,
            self.world.world_size,
            bucketed=self.config.bucketing,
        )
        total, steps = 0.0, 0
        budget = self.config.budget_seconds
        show = self.config.progress and self.world.is_main
        bar = tqdm(batches, desc=f"{self.candidate.name} epoch {epoch}", leave=False, disable=not show)
        for batch in bar:
            with self.precision.autocast():
                loss = task(model, batch.to(self.device))
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"{self.candidate.name}: the loss became {loss.item()} at epoch {epoch}, step {steps}"
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.item()
            steps += 1
            bar.set_postfix(loss=f"{total / steps:.4f}")
            if budget is not None and time.monotonic() - started >= budget:
                bar.close()
                return total / steps, steps, True
        return total / max(steps, 1), steps, False

    def _log_epoch(self, line: dict[str, Any]) -> None:
        if not self.world.is_main:
            return
        text = json.dumps(line)
        if self.epoch_log is not None:  # the caller's stream instead of the log, so each epoch shows once
            self.epoch_log.write(text + "\n")
            self.epoch_log.flush()
        else:
            log.info("%s %s", self.candidate.name, text)
        if self.config.checkpoint_dir is not None:
            with (self.config.checkpoint_dir / "epochs.jsonl").open("a") as handle:
                handle.write(text + "\n")


def _save_checkpoint(
    folder: Path,
    state: _TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: np.random.Generator,
    scheduler: Any,
    improved: bool,
) -> None:
    """``last.pt``, ``best.pt`` when the epoch improved, then the note of the epoch both hold; each file is
    written aside and moved into place, so a kill at any moment leaves whole files and a note that is not
    ahead of them."""
    state.save(folder / "last.pt", model, optimizer, generator, scheduler)
    if improved:
        _replace_with(folder / "best.pt", lambda path: torch.save(state.best_state, path))
    note = json.dumps({"epoch": state.epoch, "best_epoch": state.best_epoch})
    _replace_with(folder / SAVED_EPOCH, lambda path: path.write_text(note))


def _replace_with(path: Path, write: Callable[[Path], object]) -> None:
    temporary = path.with_suffix(".tmp")
    write(temporary)
    temporary.replace(path)


@dataclass
class _TrainState:
    """Everything needed to resume training exactly where it stopped."""

    epoch: int = 0
    best_epoch: int = 0
    best_metric: float = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    best_valid: dict[str, float] = field(default_factory=dict)
    bad_epochs: int = 0
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    def save(
        self,
        path: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        generator: np.random.Generator,
        scheduler: Any = None,
    ) -> None:
        payload = {
            **asdict(self),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": generator.bit_generator.state,
        }
        _replace_with(path, lambda temporary: torch.save(payload, temporary))

    @classmethod
    def load(
        cls,
        path: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        generator: np.random.Generator,
        scheduler: Any = None,
        device: torch.device | None = None,
    ) -> _TrainState:
        payload = torch.load(path, weights_only=False, map_location=device)
        model.load_state_dict(payload.pop("model"))
        optimizer.load_state_dict(payload.pop("optimizer"))
        scheduler_state = payload.pop("scheduler", None)
        if scheduler is not None and scheduler_state is not None:
            scheduler.load_state_dict(scheduler_state)
        torch.set_rng_state(payload.pop("torch_rng").cpu())
        generator.bit_generator.state = payload.pop("numpy_rng")
        return cls(**payload)
