"""RFC 9457 problem+json errors: one renderer for every error a client can cause."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://handoff.dev/problems/"

log = structlog.get_logger(__name__)


_UNAVAILABLE: tuple[type[BaseException], ...] = (
    # Socket-level: refused, reset, or (on a Unix socket) the socket file gone while the
    # server restarts, which surfaces as FileNotFoundError.
    OSError,
    asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.InterfaceError,  # e.g. "connection is closed"
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # no pooled connection came free in time
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, crashed
    asyncpg.exceptions.ConnectionDoesNotExistError,
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the database is away rather than a bug."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _UNAVAILABLE):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


class DomainError(Exception):
    """An error a client can cause, with its HTTP status and a stable problem type."""

    status: int = 400
    type: str = "bad-request"
    title: str = "Bad request"
    headers: dict[str, str] = {}
    """Response headers the error needs (e.g. `WWW-Authenticate` with a 401)."""

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    """The resource named in the path does not exist."""

    status = 404
    type = "not-found"
    title = "Not found"


class Conflict(DomainError):
    """The request conflicts with the resource's current state."""

    status = 409
    type = "conflict"
    title = "Conflict"


def problem(
    status: int,
    type_: str,
    title: str,
    detail: str,
    instance: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Build a problem+json response."""
    body = {
        "type": TYPE_BASE + type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _documented_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the app's OpenAPI document lists for `path` (HEAD wherever GET is)."""
    templates: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        app.state, "method_templates", None
    )
    if templates is None:
        templates = []
        for template, item in app.openapi().get("paths", {}).items():
            pattern = "".join(
                "[^/]+" if part.startswith("{") else re.escape(part)
                for part in re.split(r"(\{[^}]+\})", template)
            )
            methods = [m.upper() for m in _HTTP_METHODS if m in item]
            if "GET" in methods and "HEAD" not in methods:
                methods.append("HEAD")
            templates.append((re.compile(pattern), methods))
        app.state.method_templates = templates
    return sorted({m for pattern, methods in templates if pattern.fullmatch(path) for m in methods})


def install_problem_handlers(app: FastAPI) -> None:
    """Render validation errors, HTTP errors, domain errors and crashes as problem+json."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                # a JSON syntax error's location ends in a character position, not a field
                "field": "body" if err["type"] == "json_invalid" else _field_path(err["loc"]),
                "reason": err["msg"]
                + (f" (at position {err['loc'][-1]})" if err["type"] == "json_invalid" else ""),
                "type": err["type"],
            }
            for err in exc.errors()
        ]
        fields = ", ".join(e["field"] for e in errors[:5])
        return problem(
            422,
            "validation-error",
            "Request is not valid",
            f"Invalid field(s): {fields}",
            request.url.path,
            errors=errors,
        )

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return problem(
            exc.status,
            exc.type,
            exc.title,
            exc.detail,
            request.url.path,
            headers=exc.headers or None,
            **exc.extra,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # RFC 9110: a 405 names every method the path allows, not only those of the
            # first route that matched it.
            allowed = _documented_methods(app, request.url.path)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
        return problem(
            exc.status_code,
            f"http-{exc.status_code}",
            title,
            str(exc.detail),
            request.url.path,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        if database_unavailable(exc):
            # Not the client's fault and not a bug: the database is restarting or out of
            # reach. Nothing was committed; the same request can be sent again shortly.
            log.warning("database unavailable", path=request.url.path, error=repr(exc))
            return problem(
                503,
                "service-unavailable",
                "Service unavailable",
                "The database is unavailable; nothing was stored. Retry shortly.",
                request.url.path,
                headers={"Retry-After": "1"},
            )
        log.exception("unhandled error", path=request.url.path)
        return problem(
            500, "internal-error", "Internal error", "The error was logged.", request.url.path
        )


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem: what went wrong, and for a request that is not "
    "valid, every field at fault with the reason.",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {
                    "field": {"type": "string"},
                    "reason": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def document_problems(document: dict[str, Any]) -> None:
    """Make an OpenAPI document say what the handlers above answer: a 422 is problem+json
    (not FastAPI's default `HTTPValidationError`), every operation with a path parameter can
    answer 404, since each one names a resource that may not exist, and every operation with
    a body can answer 400 when the body cannot be read at all."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = _problem_response(
                    responses["422"].get("description") or "The request is not valid"
                )
            has_path_parameter = any(
                parameter.get("in") == "path" for parameter in operation.get("parameters", [])
            )
            if has_path_parameter and "404" not in responses:
                responses["404"] = _problem_response("No such resource")
            if "requestBody" in operation and "400" not in responses:
                responses["400"] = _problem_response("The body could not be read")
