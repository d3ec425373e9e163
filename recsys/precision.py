"""Which device and arithmetic the trainer runs on: float32, or bfloat16 autocast where the hardware has it.

bfloat16 pays on CPUs with matrix units for it (Intel AMX, or the AVX512-BF16 instructions), where
oneDNN multiplies bfloat16 matrices several times faster than float32; elsewhere it is emulated and
slower, so ``auto`` keeps float32 there. The weights stay float32 (autocast casts copies for the
matrix products) and losses are computed in float32.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import torch

from recsys.errors import EvorecError

log = logging.getLogger(__name__)

PrecisionName = Literal["auto", "float32", "bfloat16"]
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


class DeviceError(EvorecError):
    """The configured device or precision is not available on this machine."""


@cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU's bfloat16 matrix flags found in ``/proc/cpuinfo`` (empty off Linux or without them)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return tuple(flag for flag in BF16_CPU_FLAGS if flag in flags)


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; asking for CUDA where there is none is an error, not a silent fallback."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(f"device {name!r}: expected 'cpu', 'cuda' or 'cuda:N'") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} was asked for, but this machine has no CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"device {name!r}: only 'cpu' and 'cuda' are supported")
    return device


def bf16_is_fast(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(cpu_bf16_flags())


@dataclass(frozen=True)
class Precision:
    """The arithmetic of a run: ``dtype`` is what matrix products run in (float32 or bfloat16)."""

    device: torch.device
    dtype: torch.dtype
    reason: str

    @classmethod
    def choose(cls, requested: PrecisionName, device: torch.device) -> Precision:
        if requested == "float32":
            return cls(device, torch.float32, "float32 asked for")
        fast = bf16_is_fast(device)
        if requested == "bfloat16":
            return cls(device, torch.bfloat16, "bfloat16 asked for" + ("" if fast else " (emulated: no bf16 units)"))
        if fast:
            units = "GPU" if device.type == "cuda" else "CPU flags " + ", ".join(cpu_bf16_flags())
            return cls(device, torch.bfloat16, f"auto: bfloat16 matrix units ({units})")
        return cls(device, torch.float32, "auto: no bfloat16 matrix units, float32")

    @property
    def is_mixed(self) -> bool:
        return self.dtype != torch.float32

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast to ``dtype`` on the device; a no-op in float32."""
        if not self.is_mixed:
            yield
            return
        with torch.autocast(self.device.type, dtype=self.dtype):
            yield

    def describe(self) -> str:
        return f"{self.device} {str(self.dtype).removeprefix('torch.')} ({self.reason})"
