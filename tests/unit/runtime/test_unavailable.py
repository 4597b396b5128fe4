"""A database that is away is a 503 (retry), not a 500 (bug): how errors are told apart."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from handoff_runtime.problems import database_unavailable


def wrapped(cause: BaseException) -> BaseException:
    """An error raised while handling `cause`, as SQLAlchemy wraps driver errors."""
    try:
        raise cause
    except BaseException as inner:
        try:
            raise RuntimeError("while talking to the database") from inner
        except RuntimeError as outer:
            return outer


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        ConnectionRefusedError(111, "Connection refused"),
        FileNotFoundError(2, "No such file or directory: the server's Unix socket"),
        sa_exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
        wrapped(ConnectionResetError(104, "reset by peer")),
    ],
    ids=type,
)
def test_the_database_being_away_is_recognised(error: BaseException) -> None:
    assert database_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        sa_exc.DBAPIError("SELECT 1", {}, Exception("syntax"), connection_invalidated=False),
        wrapped(KeyError("lead")),
    ],
    ids=type,
)
def test_other_errors_are_not_mistaken_for_an_outage(error: BaseException) -> None:
    assert not database_unavailable(error)
