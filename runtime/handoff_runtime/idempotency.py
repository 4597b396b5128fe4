"""Idempotent webhook deliveries: a repeated delivery gets the first one's response.

Senders retry a delivery they are not sure arrived (a timeout, a 5xx, a lost response), with
the same `webhook-id` or `Idempotency-Key`. A route claims the key in the same unit of work
as its effect, and remembers its response there too, so the effect and the record that it
happened commit together:

    async with db.unit_of_work() as uow:
        stored = await claim(uow, delivery.key, body_hash(delivery.body))
        if stored is not None:
            return JSONResponse(stored.body, status_code=stored.status_code)
        ...  # the effect
        await remember(uow, delivery.key, 202, response)

Concurrent deliveries of one key are serialised by the table's primary key: the second
INSERT waits for the first transaction, then sees its committed row and replays its response
(or, if the first rolled back, inserts and goes ahead itself). This relies on READ COMMITTED,
PostgreSQL's default; under REPEATABLE READ the waiting INSERT fails with a serialisation
error instead.

The same key with a different body is a client error (409 `idempotency-key-reused`), never a
silent replay of another request's response.

Keys are kept until `delete_expired_keys` removes them; keep them longer than senders retry
(Standard Webhooks senders such as Svix retry for about a day), e.g. 72 hours.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from .db import UnitOfWork
from .problems import DomainError


class IdempotencyConflict(DomainError):
    """The idempotency key was already used for a request with a different body."""

    status = 409
    type = "idempotency-key-reused"
    title = "Idempotency key reused"


class DeliveryInProgress(DomainError):
    """The idempotency key is claimed by a request that has not finished yet."""

    status = 409
    type = "delivery-in-progress"
    title = "Delivery in progress"


@dataclass(frozen=True)
class StoredResponse:
    """The response given to the first delivery of a key, to be given again."""

    status_code: int
    body: Any


def body_hash(body: bytes) -> str:
    """The request hash stored with a key: SHA-256 of the raw body, hex."""
    return hashlib.sha256(body).hexdigest()


async def claim(uow: UnitOfWork, key: str, request_hash: str) -> StoredResponse | None:
    """Claim `key` for this request inside `uow`.

    Returns None when this is the key's first delivery (go ahead, then `remember`), or the
    stored response of an earlier delivery of the same body. Raises IdempotencyConflict when
    the key was used with another body, DeliveryInProgress when the key's first delivery has
    not stored its response (only possible within the transaction that claimed it).
    """
    table = uow.tables.idempotency_keys
    # A retention delete between the INSERT and the SELECT could leave nothing to read;
    # claiming again then succeeds.
    for _attempt in range(2):
        claimed = await uow.session.scalar(
            insert(table)
            .values(key=key, request_hash=request_hash)
            .on_conflict_do_nothing(index_elements=[table.c.key])
            .returning(table.c.key)
        )
        if claimed is not None:
            return None
        row = (
            await uow.session.execute(
                sa.select(table.c.request_hash, table.c.status_code, table.c.response).where(
                    table.c.key == key
                )
            )
        ).one_or_none()
        if row is None:
            continue
        if row.request_hash != request_hash:
            raise IdempotencyConflict(
                "This idempotency key was already used for a request with a different body.",
                key=key,
            )
        if row.status_code is None:
            break
        return StoredResponse(status_code=row.status_code, body=row.response)
    raise DeliveryInProgress(
        "A delivery with this idempotency key is still being processed; retry later.", key=key
    )


async def remember(uow: UnitOfWork, key: str, status_code: int, body: Any) -> None:
    """Store the response to `key`'s first delivery (JSON-serialisable `body`), in the same
    unit of work that claimed it."""
    table = uow.tables.idempotency_keys
    updated = await uow.session.scalar(
        table.update()
        .where(table.c.key == key)
        .values(status_code=status_code, response=body)
        .returning(table.c.key)
    )
    if updated is None:
        raise LookupError(f"idempotency key {key!r} was not claimed in this unit of work")


async def delete_expired_keys(uow: UnitOfWork, *, retention: timedelta) -> int:
    """Delete keys claimed longer than `retention` ago; returns how many were deleted.

    A sender retrying after this window would repeat the effect, so `retention` must exceed
    the longest retry schedule of any source.
    """
    table = uow.tables.idempotency_keys
    cutoff = datetime.now(UTC) - retention
    deleted = table.delete().where(table.c.created_at < cutoff).returning(table.c.key).cte()
    return int(await uow.session.scalar(sa.select(sa.func.count()).select_from(deleted)) or 0)
