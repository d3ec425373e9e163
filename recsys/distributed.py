"""Running the trainer under ``torchrun``: TorchRec's ``DistributedModelParallel`` over gloo or nccl.

The candidate's model is unchanged: its TorchRec tables are sharded table-wise (trained by the
fused row-wise Adagrad kernel in the backward pass), its dense layers are replicated and kept in
sync by DDP. The candidate's own optimizer then trains the dense parameters only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingCollection
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.types import ShardingType

from recsys.candidate_api import Batch


@dataclass(frozen=True)
class WorldInfo:
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_world(device: torch.device | None = None) -> WorldInfo:
    """Join the process group ``torchrun`` set up: nccl when training on CUDA, gloo on the CPU."""
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device is not None and device.type == "cuda" else "gloo")
    return WorldInfo(dist.get_rank(), dist.get_world_size())


class ShardedCandidateModel(nn.Module):
    """The candidate model's contract (forward, embed_items, score) over a DMP-wrapped model.

    ``forward`` goes through DMP so that DDP synchronises dense gradients; item lookups go through
    the sharded tables.
    """

    def __init__(
        self, model: nn.Module, embedding_lr: float, world: WorldInfo, device: torch.device | None = None
    ) -> None:
        super().__init__()
        fused = {"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": embedding_lr}
        sharders = [EmbeddingCollectionSharder(fused_params=fused), EmbeddingBagCollectionSharder(fused_params=fused)]
        table_names = [
            config.name
            for module in model.modules()
            if isinstance(module, EmbeddingCollection | EmbeddingBagCollection)
            for config in _configs(module)
        ]
        self.table_parameter_names = set(table_parameters(model))
        constraints = {
            name: ParameterConstraints(sharding_types=[ShardingType.TABLE_WISE.value]) for name in table_names
        }
        device = device or torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        planner = EmbeddingShardingPlanner(
            topology=Topology(world_size=world.world_size, compute_device=device.type), constraints=constraints
        )
        plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
        self.dmp = DistributedModelParallel(model, device=device, plan=plan, sharders=sharders)
        self.plan_text = str(plan)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.dmp(batch)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """DMP's own state dict (sharded tables as this rank's shards), which it knows how to load."""
        return self.dmp.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.dmp.load_state_dict(state_dict, strict=strict)

    def embed_items(self, ids: torch.Tensor) -> torch.Tensor:
        return self.dmp.module.embed_items(ids)

    def score(self, batch: Batch) -> torch.Tensor:
        return self.dmp.module.score(batch)

    def dense_parameters(self) -> list[nn.Parameter]:
        """Parameters outside the sharded tables: the ones the candidate's optimizer trains."""
        return [p for name, p in self.dmp.named_parameters() if name not in self.table_parameter_names]


def _configs(module: EmbeddingCollection | EmbeddingBagCollection) -> list[Any]:
    if isinstance(module, EmbeddingCollection):
        return list(module.embedding_configs())
    return list(module.embedding_bag_configs())


def table_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters of the model's TorchRec tables, by name."""
    names = {
        f"{module_name}.{p}" if module_name else p
        for module_name, module in model.named_modules()
        if isinstance(module, EmbeddingCollection | EmbeddingBagCollection)
        for p, _ in module.named_parameters()
    }
    return {name: p for name, p in model.named_parameters() if name in names}
