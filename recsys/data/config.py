"""Configuration of `evorec data prepare`: filtering, splitting and tolerance for bad rows."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys.config_files import load_yaml_model
from recsys.data.rows import MAX_FIELD_CHARS
from recsys.data.splits import SplitMethod


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FilterConfig(_Strict):
    """k-core filtering. The protocol's ML-1M filter is one round of items with >= 5 interactions.

    Each round drops items below ``min_item_interactions`` and then users below
    ``min_user_interactions``; more rounds approach a true k-core.
    """

    min_item_interactions: int = Field(default=5, ge=1)
    min_user_interactions: int = Field(default=3, ge=3, description="a split needs 3 events per user")
    rounds: int = Field(default=1, ge=1, le=20)


class SplitConfig(_Strict):
    method: SplitMethod = "leave_one_out"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> SplitConfig:
        if abs(sum(self.ratios) - 1.0) > 1e-6 or min(self.ratios) <= 0:
            raise ValueError(f"split ratios {self.ratios} must be positive and add up to 1")
        return self


class PrepareConfig(_Strict):
    filter: FilterConfig = FilterConfig()
    split: SplitConfig = SplitConfig()
    max_bad_fraction: float = Field(
        default=0.01, ge=0.0, le=1.0, description="the run fails above this share of dead-lettered rows"
    )
    drop_duplicates: bool = Field(default=True, description="exact repeats of a row are dead-lettered")
    max_field_chars: int = Field(
        default=MAX_FIELD_CHARS, ge=1, description="a longer field is dead-lettered, with only its first characters"
    )
    shards: int = Field(default=1, ge=1, description="interaction Parquet files, split by user")


def load_prepare_config(path: Path) -> PrepareConfig:
    return load_yaml_model(path, PrepareConfig, "prepare config", section="prepare")
