"""Counting the SQL statements a service's database connections send, for the tests and
the benchmark that hold a batch to a fixed number of them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from .db import Database

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
INTROSPECTION = ("typeinfo_tree", "set_config('jit'")
"""What the driver's own type introspection sends (once per connection and type): not the
service's statements."""


@contextmanager
def statements_sent(db: Database) -> Iterator[list[str]]:
    """The SQL statements `db`'s connections send while the block runs, through the session
    or on the asyncpg connection itself (`UnitOfWork.driver`); BEGIN, COMMIT and savepoints
    are not statements, nor is the driver's type introspection. For tests that hold a batch
    to a fixed number of them.

    SQLAlchemy reports the session's statements before sending them. The driver reports to
    its query loggers just after (`call_soon`) what it sends by `execute`, `fetch` or
    `executemany`: the runtime's own statements, and the session's executemany once more
    (skipped). Every statement but COMMIT is followed by an await of the database, so by
    the time a unit of work has committed all of them are in."""
    sent: list[str] = []
    session_executemany: Counter[str] = Counter()
    listening = [True]  # a connection checked in after the block keeps its logger

    def session_statement(*args: Any) -> None:
        statement, executemany = str(args[2]), args[5]
        sent.append(statement)
        if executemany:
            session_executemany[statement] += 1

    def driver_statement(record: Any) -> None:
        query = str(record.query)
        if not listening[0] or query.lstrip().upper().startswith(TRANSACTION_CONTROL):
            return
        if any(marker in query for marker in INTROSPECTION):
            return
        if session_executemany[query]:
            session_executemany[query] -= 1
            return
        sent.append(query)

    def checked_out(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(driver_statement)

    def checked_in(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection is not None:
            dbapi_connection.driver_connection.remove_query_logger(driver_statement)

    engine = db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", session_statement)
    sa.event.listen(engine, "checkout", checked_out)
    sa.event.listen(engine, "checkin", checked_in)
    try:
        yield sent
    finally:
        listening[0] = False
        sa.event.remove(engine, "before_cursor_execute", session_statement)
        sa.event.remove(engine, "checkout", checked_out)
        sa.event.remove(engine, "checkin", checked_in)
