"""Signing in and out of the console (the credentials and session rules live in :mod:`evorec.ui.auth`)."""

from __future__ import annotations

import logging
import math
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from evorec.ui.auth import CsrfChecked, SignInThrottle, authenticate, safe_next, start_session
from evorec.ui.rendering import render

log = logging.getLogger(__name__)
router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next_path: Annotated[str, Query(alias="next")] = "/") -> Response:
    return render(request, "login.html", {"next": safe_next(next_path), "name": "", "failed": False})


@router.post("/login", response_class=HTMLResponse, dependencies=[CsrfChecked])
def login(
    request: Request,
    name: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next_path: Annotated[str, Form(alias="next")] = "/",
) -> Response:
    """Sign in: a new session that names the reviewer (the actor of every change they make)."""
    throttle: SignInThrottle = request.app.state.sign_in_throttle
    client = request.client.host if request.client else "unknown"
    wait = throttle.wait_seconds(client, name)
    if wait > 0:
        log.warning("sign-in refused for %r from %s: too many failed attempts", name, client)
        context = {"next": safe_next(next_path), "name": name, "failed": False, "wait_seconds": math.ceil(wait)}
        response = render(request, "login.html", context, status_code=429)
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    if not authenticate(request.app.state.config, name, password):
        throttle.failed(client, name)
        log.warning("failed sign-in for %r from %s", name, client)
        context = {"next": safe_next(next_path), "name": name, "failed": True}
        return render(request, "login.html", context, status_code=401)
    start_session(request, name)
    return RedirectResponse(safe_next(next_path), status_code=303)


@router.post("/logout", dependencies=[CsrfChecked])
def logout(request: Request) -> RedirectResponse:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
