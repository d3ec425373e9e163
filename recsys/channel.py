"""Length-prefixed JSON messages over a pipe pair: how a sandboxed trainer talks to its judge.

Kept apart from :mod:`recsys.heldout` so that the sandbox's first process can name the channel
without loading torch.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from typing import Any

from recsys.errors import EvorecError

MAX_MESSAGE_BYTES = 256 * 2**20
CHANNEL_ENV = "EVOREC_JUDGE_FDS"  # "<read fd>,<write fd>" of the sandboxed trainer's end of the pipe
_HEADER = struct.Struct(">I")


class ChannelError(EvorecError):
    """A message that breaks the framing: too large, cut short, or not a JSON object."""


def write_message(fd: int, message: dict[str, Any]) -> None:
    """One length-prefixed JSON message on a pipe."""
    body = json.dumps(message, separators=(",", ":")).encode()
    data = _HEADER.pack(len(body)) + body
    while data:
        written = os.write(fd, data)
        data = data[written:]


def read_message(fd: int) -> dict[str, Any] | None:
    """The next message, or None at the end of the stream; a malformed one raises ChannelError."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_MESSAGE_BYTES:
        raise ChannelError(f"a message of {size} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
    body = _read_exactly(fd, size)
    if body is None:
        raise ChannelError("the stream ended inside a message")
    try:
        message = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ChannelError(f"a message is not valid JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ChannelError("a message must be a JSON object")
    return message


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, 2**20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def serve(fd_in: int, fd_out: int, handle: Callable[[dict[str, Any]], dict[str, Any]]) -> str | None:
    """Answer requests until the other end closes; returns why serving stopped early, if it did."""
    while True:
        try:
            message = read_message(fd_in)
        except ChannelError as exc:
            return str(exc)
        except OSError as exc:
            return f"the channel failed: {exc}"
        if message is None:
            return None
        try:
            write_message(fd_out, handle(message))
        except OSError:
            return None  # the trainer is gone; what it sent is recorded
