"""Dataset statistics as a tensorflow-metadata ``DatasetFeatureStatisticsList``.

Numeric features are summarised by an additive accumulator ``(count, sum, sum_sq, zeros, min,
max)`` that Beam combines across workers; id features by their per-id counts (unique ids and the
most frequent ones). The output is what TFDV would write, so Facets and TFDV read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import statistics_pb2


@dataclass(frozen=True)
class NumericSummary:
    """Sufficient statistics of one numeric feature, as merged by the pipeline's combiner."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    zeros: int = 0
    low: float = math.inf
    high: float = -math.inf

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        if not self.count:
            return 0.0
        return math.sqrt(max(self.total_sq / self.count - self.mean**2, 0.0))


@dataclass(frozen=True)
class IdSummary:
    """Counts of one id feature: how many distinct ids, and the most frequent ones."""

    unique: int
    top: tuple[tuple[str, int], ...]
    mean_length: float


def statistics_proto(
    name: str,
    num_examples: int,
    numeric: dict[str, NumericSummary],
    ids: dict[str, IdSummary],
) -> statistics_pb2.DatasetFeatureStatisticsList:
    """Assemble the statistics of the validated rows of one dataset."""
    result = statistics_pb2.DatasetFeatureStatisticsList()
    dataset = result.datasets.add(name=name, num_examples=num_examples)
    for feature_name, summary in sorted(numeric.items()):
        feature = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.FLOAT)
        feature.path.step.append(feature_name)
        stats = feature.num_stats
        _common(stats.common_stats, summary.count, num_examples)
        stats.mean, stats.std_dev, stats.num_zeros = summary.mean, summary.std, summary.zeros
        if summary.count:
            stats.min, stats.max = summary.low, summary.high
    for feature_name, id_summary in sorted(ids.items()):
        feature = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.STRING)
        feature.path.step.append(feature_name)
        string_stats = feature.string_stats
        _common(string_stats.common_stats, num_examples, num_examples)
        string_stats.unique = id_summary.unique
        string_stats.avg_length = id_summary.mean_length
        for value, frequency in id_summary.top:
            string_stats.top_values.add(value=value, frequency=frequency)
    return result


def _common(common: statistics_pb2.CommonStatistics, present: int, total: int) -> None:
    common.num_non_missing = present
    common.num_missing = total - present
    common.min_num_values = common.max_num_values = 1 if present else 0
    common.avg_num_values = 1.0 if present else 0.0
    common.tot_num_values = present


def save_statistics(stats: statistics_pb2.DatasetFeatureStatisticsList, path: Path) -> None:
    path.write_text(text_format.MessageToString(stats))
