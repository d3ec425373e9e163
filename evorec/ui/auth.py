"""Who may use the console: sign-in against the configured reviewers, the session, CSRF tokens.

A reviewer signs in with their name and password (or token) from :class:`~evorec.ui.config.UIConfig`;
the session cookie (signed, HttpOnly, SameSite=Strict) then carries their name, which is the actor
of every registry change they make. Every state-changing request carries the session's CSRF token
(a form field, or the ``X-CSRF-Token`` header for scripts) and is refused with 403 without it.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Annotated
from urllib.parse import quote

import limits
from fastapi import Depends, HTTPException, Request
from fastapi.responses import RedirectResponse

from evorec.ui.config import UIConfig

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class LoginRequired(Exception):
    """The request needs a signed-in reviewer; pages redirect to the sign-in form, scripts get 401."""


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use (so the sign-in form has one too)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def check_csrf(request: Request) -> None:
    """Refuse (403) a state-changing request whose CSRF token is missing or not the session's."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    expected = request.session.get("csrf")
    if not sent or not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise HTTPException(403, "This form has expired or did not come from this console: reload the page and retry.")


def current_user(request: Request) -> str:
    """The signed-in reviewer's name; a reviewer removed from the config, or signed in too long ago, is signed out.

    The sign-in time bounds the session: the cookie's own age restarts whenever the session changes.
    """
    user, since = request.session.get("user"), request.session.get("signed_in_at")
    config: UIConfig = request.app.state.config
    if not isinstance(user, str) or user not in config.users or not isinstance(since, int | float):
        raise LoginRequired
    if time.time() - since > config.session_hours * 3600:
        request.session.clear()
        raise LoginRequired
    return user


def start_session(request: Request, user: str) -> None:
    """A fresh session for ``user``: nothing kept from before sign-in (no fixation), a new CSRF token."""
    request.session.clear()
    request.session["user"] = user
    request.session["signed_in_at"] = time.time()
    csrf_token(request)


Reviewer = Annotated[str, Depends(current_user)]
CsrfChecked = Depends(check_csrf)


def authenticate(config: UIConfig, name: str, password: str) -> bool:
    """Whether ``password`` is ``name``'s; compared in constant time, also for unknown names."""
    secret = config.users.get(name)
    expected = secret.get_secret_value() if secret is not None else secrets.token_urlsafe(32)
    return hmac.compare_digest(password.encode(), expected.encode()) and secret is not None


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this console only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_redirect(request: Request) -> RedirectResponse:
    """To the sign-in form, then back to the page asked for (a refused form post goes back to the start)."""
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = quote(path, safe="") if request.method == "GET" else "%2F"
    return RedirectResponse(f"/login?next={target}", status_code=303)


class SignInThrottle:
    """Failed sign-ins counted per client address and per reviewer name in moving windows (``limits``):
    past the limit a client, or anyone trying that name, must wait, which makes guessing a password
    slow while one reviewer's typo costs nothing. The counts live in this process (one console)."""

    def __init__(self, notation: str) -> None:
        self.windows = limits.parse_many(notation)
        self.limiter = limits.strategies.MovingWindowRateLimiter(limits.storage.MemoryStorage())

    def _keys(self, client: str, name: str) -> tuple[tuple[str, str], ...]:
        return (("client", client), ("name", name.strip().casefold()))

    def wait_seconds(self, client: str, name: str) -> float:
        """0 when a sign-in may be tried now, else the seconds until the earliest full window frees a slot."""
        waits = [
            self.limiter.get_window_stats(window, *key).reset_time - time.time()
            for window in self.windows
            for key in self._keys(client, name)
            if not self.limiter.test(window, *key)
        ]
        return max(max(waits, default=0.0), 0.0)

    def failed(self, client: str, name: str) -> None:
        for window in self.windows:
            for key in self._keys(client, name):
                self.limiter.hit(window, *key)
