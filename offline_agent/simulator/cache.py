"""Language-model replies kept on disk, so that the same question is never paid for twice.

The key is the sha256 of (model, system prompt, prompt): a persona shown the same list asks the
same question, so reruns and repeated candidates cost nothing. Only replies that passed validation
are stored, so a bad reply is asked again on the next run instead of being pinned.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TypeVar

from offline_agent.llm.base import LLM, Spend

T = TypeVar("T")


class ReplyCache:
    """A SQLite file (WAL) of reply texts by key; one connection per call, so any thread may use it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, text TEXT NOT NULL)")

    @staticmethod
    def key(model: str, system: str, prompt: str) -> str:
        """JSON-encoded before hashing, so that no two different triples share a key."""
        return hashlib.sha256(json.dumps([model, system, prompt]).encode()).hexdigest()

    def get(self, key: str) -> str | None:
        with self._connection() as conn:
            row = conn.execute("SELECT text FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, text: str) -> None:
        with self._connection() as conn:
            conn.execute("INSERT OR REPLACE INTO replies (key, text) VALUES (?, ?)", (key, text))

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as conn, conn:
            yield conn


def cached_answer(
    llm: LLM, cache: ReplyCache, spend: Spend | None, system: str, prompt: str, parse: Callable[[str], T]
) -> T:
    """``parse`` of the cached reply, or of a new one (charged to ``spend``, stored once it parses).

    ``parse`` raises :class:`~offline_agent.llm.base.LLMError` on an unusable reply.
    """
    key = ReplyCache.key(llm.name, system, prompt)
    text = cache.get(key)
    if text is not None:
        return parse(text)
    reply = spend.ask(llm, system, prompt) if spend is not None else llm.generate(system, prompt)
    answer = parse(reply.text)
    cache.put(key, reply.text)
    return answer
