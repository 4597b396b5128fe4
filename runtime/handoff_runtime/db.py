"""The database engine and the unit of work that owns each transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

import asyncpg
import orjson
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from handoff_schemas import CONTENT_TYPE, CloudEvent, encode, new_event

from . import crashpoints
from .grouping import GroupCommit
from .tables import RuntimeTables
from .tracing import continuing, current_traceparent

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


def async_url(url: str) -> str:
    """Turn any postgres URL into the asyncpg dialect URL SQLAlchemy needs."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url.split('@')[-1]}")


def create_engine(
    url: str, *, pool_size: int = 10, application_name: str = "handoff"
) -> AsyncEngine:
    """An asyncpg engine; JSON goes through orjson, the same encoder events use. Each
    connection names its service (`application_name`), so `pg_stat_activity` and the
    server's logs tell the services apart.

    No pre-ping: with asyncpg it is a transaction of its own on every checkout (BEGIN, a
    ping, ROLLBACK), three round trips before any work. A pooled connection whose socket the
    server closed (a restart, an idle timeout) is discarded at checkout instead, without a
    round trip (`_discard_closed`); one that dies silently fails its first statement, which
    invalidates the pool (the intake answers 503, a consumed batch is applied again)."""
    engine = create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        json_serializer=lambda v: orjson.dumps(v).decode(),
        json_deserializer=orjson.loads,
        connect_args={"server_settings": {"application_name": application_name}},
    )
    event.listen(engine.sync_engine, "checkout", _discard_closed)
    return engine


def _discard_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Refuse a pooled connection the server has closed; the pool then opens another."""
    if dbapi_connection.driver_connection.is_closed():
        raise sa_exc.DisconnectionError("the server closed this connection")


def announcement(
    data: BaseModel, *, source: str, topic: str, subject: str, traceparent: str | None
) -> tuple[CloudEvent[Any], dict[str, Any]]:
    """An event about `subject` and the outbox row that announces it: event_id, topic, key,
    value (the record's bytes) and headers."""
    event = new_event(data, source=source, subject=subject, traceparent=traceparent)
    headers = {"content-type": CONTENT_TYPE, "ce_type": event.type, "ce_id": event.id}
    row = {
        "event_id": event.id,
        "topic": topic,
        "key": subject,
        "value": encode(event),
        "headers": headers,
    }
    return event, row


@dataclass
class UnitOfWork:
    """One transaction: the state changes and the events announcing them commit together.

    Events are written to the service's outbox table in the same transaction, and the relay
    publishes them after the commit. Services never commit; the boundary that opened the
    unit of work (a route or a consumed batch) does.

    Staged records are held in memory and written to the outbox in one statement at the end
    of the innermost savepoint or of the transaction, so a consumed batch that announces a
    hundred events writes its outbox rows once, in the order they were staged. Rows of a
    service's other append-only tables (feedback's history, the router's decisions, the
    scorer's scorings) are staged the same way (`append`), without an ORM object each; a
    read of such a table in the transaction that staged them writes them first
    (`write_staged`, or `written_staged` for a repository that holds only the session).

    The runtime's own statements of every transaction (these writes, and a consumer's
    processed marks) go to the transaction's asyncpg connection directly (`driver`): through
    SQLAlchemy's asyncio layer each statement costs several times the client CPU, which at
    moderate rates, with a few records per batch, is most of what a batch costs.
    """

    session: AsyncSession
    tables: RuntimeTables
    source: str
    staged: int = 0
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    traces: dict[str, str] = field(default_factory=dict)
    """Trace ids by subject, while a batch of consumed events is applied: an event published
    about a lead continues the trace of the consumed event about that lead."""
    _unwritten: dict[sa.Table, list[dict[str, Any]]] = field(default_factory=dict)
    _driver: asyncpg.Connection | None = None

    def __post_init__(self) -> None:
        self.session.info[_UNIT_OF_WORK] = self

    async def publish(self, data: BaseModel, *, topic: str, subject: str) -> CloudEvent[Any]:
        """Stage an event for `topic`, keyed by `subject` (the lead id), in the current trace
        (that of the request, or of the consumed event about the same lead)."""
        event, row = self.announcement(data, topic=topic, subject=subject)
        self.stage_record(**row)
        return event

    def announcement(
        self, data: BaseModel, *, topic: str, subject: str
    ) -> tuple[CloudEvent[Any], dict[str, Any]]:
        """The event `publish` would stage, and its outbox row (event_id, topic, key, value,
        headers), for a statement that writes the row itself along with other rows; call
        `announced` once it has."""
        return announcement(
            data,
            source=self.source,
            topic=topic,
            subject=subject,
            traceparent=current_traceparent() or continuing(self.traces.get(subject)),
        )

    def announced(self, count: int = 1) -> None:
        """Count outbox rows written by a statement of the caller's own (see `announcement`),
        so the relay is woken when the transaction commits, as for staged events."""
        self.staged += count

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A savepoint: if the block raises, its writes are rolled back, and so are the events
        it staged and the after-commit callbacks it registered (a metric counted for work
        that was undone would otherwise be counted again when the work is redone)."""
        # What was staged before belongs to the enclosing scope: written now, so that a
        # rollback of this savepoint cannot take it along.
        await self.write_staged()
        staged, callbacks = self.staged, len(self.after_commit)
        try:
            async with self.session.begin_nested():
                yield
                await self.write_staged()
        except BaseException:
            self.staged = staged
            self._unwritten.clear()
            del self.after_commit[callbacks:]
            raise

    def stage_record(
        self,
        *,
        topic: str,
        key: str | None,
        value: bytes | None,
        headers: dict[str, str],
        event_id: str | None,
    ) -> None:
        """Stage a raw Kafka record (also used to dead-letter a message as it was)."""
        self.append(
            self.tables.outbox,
            {"event_id": event_id, "topic": topic, "key": key, "value": value, "headers": headers},
        )
        self.staged += 1

    def append(self, table: sa.Table, row: dict[str, Any]) -> None:
        """Stage a new row of an append-only table, written with the staged records (at the
        end of the innermost savepoint or of the transaction, or when `write_staged` is
        called). Every row staged for one table has the same columns. A read of the table
        in the same transaction must call `write_staged` first to see them."""
        self._unwritten.setdefault(table, []).append(row)

    async def write_staged(self) -> None:
        """Write the rows staged so far: one statement per table, in the order staged."""
        if not self._unwritten:
            return
        tables, self._unwritten = self._unwritten, {}
        # What the ORM holds goes first: a staged row may refer to a row it has yet to insert.
        await self.session.flush()
        driver = await self.driver()
        for table, rows in tables.items():
            statement, parameters = _insert_of(table, tuple(rows[0]))
            await driver.executemany(statement, [parameters(row) for row in rows])

    async def driver(self) -> asyncpg.Connection:
        """The asyncpg connection this transaction runs on (begun if it was not yet), for
        statements the runtime writes as SQL text with `$n` parameters. As SQLAlchemy's
        dialect set the connection up, JSON values are passed as text and read decoded."""
        if self._driver is None:
            self._driver = await driver_of(await self.session.connection())
        return self._driver


async def driver_of(connection: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under `connection`, inside the transaction `connection` has
    begun (begun now if no statement has been sent yet)."""
    pooled = await connection.get_raw_connection()
    adapted: Any = pooled.dbapi_connection
    # SQLAlchemy's asyncpg adapter sends BEGIN before its own first statement, not when the
    # transaction begins: a statement sent here first would run outside the transaction.
    # Begin it through the adapter, which then commits or rolls it back.
    if adapted._transaction is None:
        await adapted._start_transaction()
    driver: asyncpg.Connection = pooled.driver_connection
    return driver


@lru_cache(maxsize=64)
def _insert_of(
    table: sa.Table, columns: tuple[str, ...]
) -> tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]]:
    """The driver's INSERT of a table's rows with these columns, and what turns a staged row
    into its parameters (JSON columns encoded as the engine encodes them: orjson, and None as
    JSON null unless the column stores SQL NULL for it)."""
    name = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
    quoted = ", ".join(f'"{column}"' for column in columns)
    placeholders = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    statement = f"INSERT INTO {name} ({quoted}) VALUES ({placeholders})"
    as_json = tuple(
        (column, kind.none_as_null)
        for column in columns
        if isinstance(kind := table.c[column].type, sa.JSON)
    )

    def parameters(row: dict[str, Any]) -> tuple[Any, ...]:
        values = dict(row)
        for column, none_as_null in as_json:
            value = values[column]
            if value is not None or not none_as_null:
                values[column] = orjson.dumps(value).decode()
        return tuple(values[column] for column in columns)

    return statement, parameters


_UNIT_OF_WORK = "handoff.unit_of_work"


async def written_staged(session: AsyncSession) -> None:
    """Write the rows staged in the unit of work `session` belongs to, if any: what a read
    of an append-only table calls first when it holds only the session."""
    uow = session.info.get(_UNIT_OF_WORK)
    if isinstance(uow, UnitOfWork):
        await uow.write_staged()


class Database:
    """The service's engine, schema and outbox tables; hands out units of work."""

    def __init__(self, url: str, *, schema: str, source: str, pool_size: int = 10) -> None:
        self.engine = create_engine(url, pool_size=pool_size, application_name=f"handoff-{schema}")
        self.tables = RuntimeTables(schema)
        self.source = source
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._committed_listeners: list[Callable[[], None]] = []
        self._groups: dict[str, GroupCommit[Any, Any]] = {}

    def on_events_committed(self, listener: Callable[[], None]) -> None:
        """Call `listener` after any commit that staged events (the relay's wake-up)."""
        self._committed_listeners.append(listener)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        """Open a transaction; commit on normal exit, roll back on an exception."""
        async with self._sessions() as session, session.begin():
            uow = UnitOfWork(session=session, tables=self.tables, source=self.source)
            yield uow
            await uow.write_staged()
        if uow.staged:
            crashpoints.reached("after_db_commit")
            for listener in self._committed_listeners:
                listener()
        for callback in uow.after_commit:
            callback()

    def announcement(
        self, data: BaseModel, *, topic: str, subject: str
    ) -> tuple[CloudEvent[Any], dict[str, Any]]:
        """`UnitOfWork.announcement` outside any transaction, in the current request's trace:
        for an item a `GroupCommit` writes later, in its writer's own unit of work."""
        return announcement(
            data,
            source=self.source,
            topic=topic,
            subject=subject,
            traceparent=current_traceparent(),
        )

    def group_commit(
        self,
        name: str,
        write: Callable[[Sequence[ItemT]], Awaitable[Sequence[ResultT | BaseException]]],
        *,
        conflicts: Callable[[ItemT], Iterable[Hashable]],
        max_items: int = 100,
    ) -> GroupCommit[ItemT, ResultT]:
        """The service's group commit called `name`, made with these arguments on first use
        (see `handoff_runtime.grouping`); closed by `dispose`."""
        group = self._groups.get(name)
        if group is None:
            group = GroupCommit(
                name, write, conflicts=conflicts, max_items=max_items, service=self.tables.schema
            )
            self._groups[name] = group
        return group

    async def dispose(self) -> None:
        """Write what the group commits hold, then close every pooled connection."""
        for group in self._groups.values():
            await group.close()
        self._groups.clear()
        await self.engine.dispose()
