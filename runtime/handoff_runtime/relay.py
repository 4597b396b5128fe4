"""The outbox relay: publishes committed outbox rows in commit order, marking them sent only
after the broker acknowledged them.

It reads "every row not yet published", never "rows after the last id I saw", so a row whose
transaction committed late (a smaller id becoming visible after larger ones) is still found.
One relay per service holds a transaction-scoped advisory lock while it publishes, so with
several instances running, a lead's events still leave in the order they were committed.
Published rows are kept for a retention window so they can be re-driven if the broker loses
its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
import structlog
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncConnection

from . import crashpoints
from .aio import within
from .db import Database, driver_of
from .metrics import EVENTS_PRODUCED, OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, REDRIVES

log = structlog.get_logger(__name__)


class _Pending(NamedTuple):
    """An unpublished outbox row as the relay reads it."""

    id: int
    topic: str
    key: str | None
    value: bytes | None
    headers: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class _RelaySql:
    """The statements of a relay pass, for one service's outbox."""

    lock: str
    pending: str
    mark: str
    backlog: str

    @classmethod
    def of(cls, outbox: str) -> _RelaySql:
        return cls(
            lock="SELECT pg_try_advisory_xact_lock($1)",
            pending=(
                f"SELECT id, topic, key, value, headers, created_at FROM {outbox}"
                " WHERE published_at IS NULL ORDER BY id LIMIT $1"
            ),
            # `= ANY(array)`, not `IN (...)`: one statement text for any number of ids.
            mark=f"UPDATE {outbox} SET published_at = now() WHERE id = ANY($1::int8[])",
            backlog=f"SELECT count(*) FROM {outbox} WHERE published_at IS NULL",
        )


class OutboxRelay:
    """Moves committed outbox rows to Kafka (acks=all) for one service."""

    def __init__(
        self,
        db: Database,
        producer: AIOKafkaProducer,
        *,
        service: str,
        batch_size: int,
        poll_interval_s: float,
        send_timeout_s: float,
        retention: timedelta,
    ) -> None:
        self.db = db
        self.producer = producer
        self.service = service
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.send_timeout_s = send_timeout_s
        self.retention = retention
        self._wake = asyncio.Event()
        # One lock id per service schema, shared by all its instances.
        self._lock_id = zlib.crc32(f"handoff-outbox:{db.tables.schema}".encode())
        self._sql = _RelaySql.of(f'"{db.tables.schema}".outbox')
        db.on_events_committed(self.wake)

    def wake(self) -> None:
        """Ask the relay to look for rows now instead of at its next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Publish until cancelled; broker or database faults are logged and retried."""
        last_cleanup = datetime.now(UTC)
        while True:
            try:
                published = await self.publish_pending()
                if datetime.now(UTC) - last_cleanup > timedelta(minutes=5):
                    await self.delete_expired()
                    last_cleanup = datetime.now(UTC)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay pass failed; retrying")
                published = 0
                await asyncio.sleep(min(self.poll_interval_s * 4, 2.0))
            if published >= self.batch_size:
                continue  # more may be waiting
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), self.poll_interval_s)
            self._wake.clear()

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished rows; returns how many were acknowledged.

        Its statements go to the asyncpg connection directly (a pass runs several times a
        second at moderate rates, and through SQLAlchemy's asyncio layer each would cost
        several times the client CPU)."""
        async with self.db.engine.begin() as conn:
            driver = await driver_of(conn)
            if not await driver.fetchval(self._sql.lock, self._lock_id):
                return 0  # another instance of this service is publishing
            pending = await driver.fetch(self._sql.pending, self.batch_size)
            rows = [_Pending(*row) for row in pending]
            if not rows:
                OUTBOX_BACKLOG.labels(self.service).set(0)
                OUTBOX_OLDEST_AGE.labels(self.service).set(0)
                return 0
            # Set before sending: if the broker is down the send raises, and the gauge must
            # keep growing (the outbox-stuck alert watches it).
            oldest_row = min(row.created_at for row in rows)
            OUTBOX_OLDEST_AGE.labels(self.service).set(
                (datetime.now(UTC) - oldest_row).total_seconds()
            )
            acked = await self._send(rows)
            if acked:
                crashpoints.reached("after_publish")
                await driver.execute(self._sql.mark, acked)
            # A batch shorter than the limit took every unpublished row; only a full one
            # leaves rows behind that need counting.
            backlog = len(rows)
            if len(rows) >= self.batch_size:
                backlog = await driver.fetchval(self._sql.backlog) or 0
        OUTBOX_BACKLOG.labels(self.service).set(max(0, backlog - len(acked)))
        unacked = [r for r in rows if r.id not in set(acked)]
        oldest = (datetime.now(UTC) - unacked[0].created_at).total_seconds() if unacked else 0
        OUTBOX_OLDEST_AGE.labels(self.service).set(oldest)
        return len(acked)

    async def _send(self, rows: Sequence[_Pending]) -> list[int]:
        """Send rows, await the acks, and return the ids safe to mark: for each key, only
        the rows before its first failure, so a retry cannot reorder a lead's events."""
        futures: list[asyncio.Future[Any]] = []
        # One bound for handing the whole batch to the producer (each send returns at once
        # unless its buffer is full), not a timer per row.
        async with asyncio.timeout(self.send_timeout_s):
            for row in rows:
                headers = [(k, str(v).encode()) for k, v in row.headers.items()]
                future = await self.producer.send(
                    row.topic,
                    value=row.value,
                    key=row.key.encode() if row.key is not None else None,
                    headers=headers,
                )
                futures.append(future)
        results = await within(
            asyncio.gather(*futures, return_exceptions=True), self.send_timeout_s
        )
        acked: list[int] = []
        failed_keys: set[str | None] = set()
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException) or row.key in failed_keys:
                failed_keys.add(row.key)
                EVENTS_PRODUCED.labels(self.service, row.topic, "failed").inc()
                if isinstance(result, BaseException):
                    log.warning("publish failed", topic=row.topic, key=row.key, error=repr(result))
                continue
            acked.append(row.id)
            EVENTS_PRODUCED.labels(self.service, row.topic, "published").inc()
        return acked

    async def redrive(self, since: datetime) -> int:
        """Mark rows published since `since` as unpublished, so they are sent again in order."""
        async with self.db.engine.begin() as conn:
            count = await self.redrive_within(conn, since)
        if count:
            self.wake()
        return count

    async def redrive_within(self, conn: AsyncConnection, since: datetime) -> int:
        """`redrive` inside the caller's transaction (the relay wakes once it commits)."""
        outbox = self.db.tables.outbox
        # Wait for a publish in flight: rows it sent to the lost broker are marked when it
        # commits, and this update must come after that to send them again.
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(self._lock_id)))
        result = await conn.execute(
            outbox.update()
            .where(outbox.c.published_at.is_not(None), outbox.c.published_at >= since)
            .values(published_at=None)
        )
        count = result.rowcount or 0
        if count:
            REDRIVES.labels(self.service).inc()
            log.warning("outbox re-driven: the broker lost its log", rows=count)
        return count

    async def delete_expired(self) -> None:
        """Drop published rows older than the retention window."""
        outbox = self.db.tables.outbox
        cutoff = datetime.now(UTC) - self.retention
        async with self.db.engine.begin() as conn:
            await conn.execute(
                outbox.delete().where(
                    outbox.c.published_at.is_not(None), outbox.c.published_at < cutoff
                )
            )
