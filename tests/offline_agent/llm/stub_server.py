"""A local HTTP server that answers each POST with the next scripted reply or fault, and records what it got.

A script entry is ``(status, body)`` (a JSON-able body, or a string sent as it is) or a fault from
this module: a reply that hangs past the client's timeout, a connection dropped before any answer,
a body cut short, or any bytes at all.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Action = Callable[[BaseHTTPRequestHandler], None]


def gemini_body(text: str, prompt_tokens: int = 120, output_tokens: int = 40, finish: str = "STOP") -> dict:
    return {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish, "index": 0}],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
        },
        "modelVersion": "gemini-2.5-flash",
    }


def gemini_blocked_prompt(prompt_tokens: int = 70) -> dict:
    """The prompt refused for safety: no candidates, the prompt's tokens billed."""
    return {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
    }


def gemini_blocked_reply(prompt_tokens: int = 80) -> dict:
    """The reply stopped for safety: a candidate without content."""
    ratings = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]
    return {
        "candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": ratings}],
        "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
    }


def gemini_empty(prompt_tokens: int = 90) -> dict:
    return {"candidates": [], "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}}


def openai_body(text: str | None, finish: str = "stop", prompt_tokens: int = 50, output_tokens: int = 10) -> dict:
    return {
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": output_tokens},
    }


def raw(status: int, payload: bytes, headers: dict[str, str] | None = None) -> Action:
    """Exactly these bytes as the body (e.g. JSON cut in the middle, or HTML from a proxy)."""

    def act(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    return act


def hang(seconds: float) -> Action:
    """No answer for ``seconds`` (past the client's read timeout), then the connection closes."""

    def act(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        handler.close_connection = True

    return act


def drop(handler: BaseHTTPRequestHandler) -> None:
    """The connection closes before any answer."""
    handler.close_connection = True


def cut_short(body: dict) -> Action:
    """A 200 whose body stops a third of the way through the length its header announced."""

    def act(handler: BaseHTTPRequestHandler) -> None:
        payload = json.dumps(body).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload[: len(payload) // 3])
        handler.wfile.flush()
        handler.close_connection = True

    return act


class StubServer:
    """Answers each POST with the next scripted entry and records the requests (path, headers, raw body)."""

    def __init__(self) -> None:
        self.script: deque[tuple[int, Any] | Action] = deque()
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw_body = self.rfile.read(length)
                try:
                    body = json.loads(raw_body)
                except ValueError:
                    body = None
                stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body, "raw": raw_body})
                entry = stub.script.popleft() if stub.script else (500, {"error": "the script is spent"})
                if callable(entry):
                    entry(self)
                    return
                status, reply = entry
                raw(status, reply.encode() if isinstance(reply, str) else json.dumps(reply).encode())(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
