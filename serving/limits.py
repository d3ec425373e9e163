"""Request limits of the recommendation server: a cap on body size (413) and error answers that
never echo large input back (a 422 names the field and the problem, not the megabytes sent)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SHOWN_INPUT = 80  # characters of an offending value an error answer may repeat


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` is refused with 413, by its Content-Length when it
    declares one, else once the bytes read pass the cap (nothing past the cap is buffered)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes and not refused:
                    refused = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}  # the app stops reading; what it answers is dropped
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"the request body is over the limit of {self.max_bytes:,} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})  # fmt: skip


def shown(value: Any) -> str:
    """A value as an error message may repeat it: its start only."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= SHOWN_INPUT else f"{text[:SHOWN_INPUT]}... ({len(text):,} characters)"


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    """422 naming each field and problem; an offending value only by its start."""
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"], "input": shown(error.get("input"))}
        for error in exc.errors()[:20]
    ]
    return JSONResponse({"detail": problems}, status_code=422)
