"""Bounded awaits and task shutdown that never lose a cancellation.

On Python 3.11, `asyncio.wait_for` returns the result when the task awaiting it is
cancelled in the instant its awaitable completes: the cancellation is consumed and the
task runs on. A loop built on it (the outbox relay waiting for a wake-up, a consumer
committing offsets) then ignores the one `cancel()` shutdown sends it, and the service
never stops. `within` bounds an await with `asyncio.timeout`, which keeps the cancellation;
`cancel_and_wait` cancels again until each task has ended, for what third-party code may
still swallow."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")

CANCEL_AGAIN_AFTER_S = 1.0
"""How long a cancelled task may take to end before it is cancelled once more."""


async def within(awaitable: Awaitable[T], timeout_s: float) -> T:
    """Await `awaitable`, raising TimeoutError after `timeout_s` (it is cancelled then)."""
    async with asyncio.timeout(timeout_s):
        return await awaitable


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and return once every one has ended, cancelling again each second
    whichever is still running (its code swallowed the cancellation)."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    rounds = 0
    while pending:
        if rounds:
            log.warning(
                "tasks ignored cancellation; cancelling again",
                tasks=sorted(task.get_name() for task in pending),
            )
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN_AFTER_S)
        rounds += 1
    for task in tasks:  # retrieved, so asyncio does not report it as never retrieved
        if not task.cancelled():
            task.exception()
