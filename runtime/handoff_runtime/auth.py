"""Bearer-token authentication of the admin APIs (teams, reps, routing rules, the ICP).

Admin callers send `Authorization: Bearer <token>`; the token must be one of the service's
`HANDOFF_ADMIN_TOKEN` (comma-separated, so a new token can be rolled out before the old one is
withdrawn). A service with no admin token configured refuses every admin call: it fails closed.
Every refusal is a 401 problem+json with `WWW-Authenticate: Bearer`, and neither the sent token
nor a configured one ever appears in an answer.

Put the dependency on the router that holds a service's admin routes:

    admin = APIRouter(dependencies=[Depends(require_admin)], responses=UNAUTHORIZED_RESPONSE)
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .problems import PROBLEM_JSON, TYPE_BASE, DomainError

if TYPE_CHECKING:
    from .settings import ServiceSettings

ADMIN_TOKEN_ENV = "HANDOFF_ADMIN_TOKEN"


class Unauthorized(DomainError):
    """The caller of an admin API could not be authenticated."""

    status = 401
    type = "unauthorized"
    title = "Unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


# auto_error=False: a missing or non-Bearer header reaches require_admin as None, so it is
# refused with the service's own problem+json rather than FastAPI's plain error; the scheme
# also puts `securitySchemes` and each admin operation's `security` into the OpenAPI document.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description=f"An admin token, one of {ADMIN_TOKEN_ENV}.",
)

UNAUTHORIZED_RESPONSE: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "No admin token, not a Bearer token, or not an admin token (also when "
        "the service has no admin token configured)",
        "headers": {
            "WWW-Authenticate": {
                "description": "The authentication scheme: `Bearer`.",
                "schema": {"type": "string"},
            }
        },
        "content": {
            PROBLEM_JSON: {
                "schema": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "instance"],
                    "properties": {
                        "type": {"type": "string", "enum": [TYPE_BASE + Unauthorized.type]},
                        "title": {"type": "string"},
                        "status": {"type": "integer", "enum": [401]},
                        "detail": {"type": "string"},
                        "instance": {"type": "string"},
                    },
                }
            }
        },
    }
}
"""The 401 every admin route can answer, for the routes' OpenAPI `responses`."""


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Route dependency: let the call through only with a configured admin token.

    Raises Unauthorized (401) when no admin token is configured, the `Authorization` header is
    missing or not `Bearer <token>`, or the token is none of the configured ones.
    """
    settings: ServiceSettings = request.app.state.runtime.settings
    accepted = settings.admin_tokens()
    if not accepted:
        raise Unauthorized(
            f"No admin token is configured ({ADMIN_TOKEN_ENV}), so admin APIs are refused."
        )
    if credentials is None:
        if request.headers.get("authorization") is None:
            raise Unauthorized("Admin APIs need an `Authorization: Bearer <admin token>` header.")
        raise Unauthorized("The Authorization header is not `Bearer <admin token>`.")
    if not token_matches(credentials.credentials, accepted):
        raise Unauthorized("The bearer token is not an admin token.")


def token_matches(sent: str, accepted: list[str]) -> bool:
    """Whether `sent` is one of `accepted`, compared in constant time.

    Every accepted token is compared, so the time taken does not tell which one (or how much
    of one) matched.
    """
    given = sent.encode()
    matched = False
    for token in accepted:
        matched |= hmac.compare_digest(given, token.encode())
    return matched
