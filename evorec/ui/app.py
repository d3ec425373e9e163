"""The review console's app factory: pages, sessions, security headers, and error pages.

Run with ``evorec ui`` (uvicorn), or build the app with :func:`create_app`. Every page but the
sign-in form needs a signed-in reviewer; every state-changing request needs the session's CSRF
token (:mod:`evorec.ui.auth`).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from evorec.ui import experiments, login, overview, rewards, runs, versions
from evorec.ui.auth import LoginRequired, SignInThrottle, current_user, login_redirect
from evorec.ui.config import UIConfig
from evorec.ui.rendering import render, template_environment
from serving.registry import Registry

STATIC = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "evorec_ui_session"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def create_app(config: UIConfig, registry: Registry) -> FastAPI:
    """The console over ``registry`` and the run folders ``config`` names."""
    run_store = runs.RunStore(registry, config.runs_dir, config.fitness)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        run_store.close()

    app = FastAPI(title="evorec review console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config = config
    app.state.sign_in_throttle = SignInThrottle(config.failed_sign_ins)
    app.state.registry = registry
    app.state.runs = run_store
    app.state.reward_logs = rewards.AlignmentLogs(config)
    app.state.templates = template_environment()

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    secret = config.session_secret.get_secret_value() if config.session_secret else secrets.token_urlsafe(32)
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie=SESSION_COOKIE,
        max_age=int(config.session_hours * 3600),
        same_site="strict",
        https_only=config.secure_cookies,
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(login.router)
    for area in (overview, runs, experiments, versions, rewards):
        app.include_router(area.router, dependencies=[Depends(current_user)])

    @app.exception_handler(LoginRequired)
    async def sign_in_first(request: Request, _: LoginRequired) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            return login_redirect(request)  # a browser: to the sign-in form, and back after it
        return JSONResponse({"detail": "sign in first"}, status_code=401)

    @app.exception_handler(StarletteHTTPException)
    async def error_page(request: Request, exc: StarletteHTTPException) -> Response:
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        return render(request, "error.html", {"status": exc.status_code, "detail": exc.detail}, exc.status_code)

    return app
