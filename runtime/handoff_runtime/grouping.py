"""Group commit: the writes of concurrent requests made together, in one transaction.

A burst of webhooks is many small requests, each of which would otherwise be its own
transaction (a pool checkout, BEGIN, a statement, COMMIT and its WAL flush). A `GroupCommit`
queues each request's item and one writer task writes whatever has queued, up to
`max_items`, with one call of the service's `write` (one unit of work, set-based). A request
waits for its own item's result, so it is answered only once its write has committed, as
before. Nothing waits for a group to fill: the first item is written at once, and the items
that arrive while a transaction runs make the next group, so a quiet intake keeps its
latency and a busy one commits less often.

Two items that `conflicts` gives a common name for (the same idempotency key, the same
person) are never in one group: the later waits for the next, so each group's statement
sees distinct rows and the outcome is that of one delivery after the other.

A group that fails is written again one item at a time, so one bad item fails only its own
request. An item's result may be an exception, which is raised to its request alone."""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog

from .aio import cancel_and_wait
from .metrics import GROUP_COMMIT_ITEMS

log = structlog.get_logger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class GroupCommitClosed(RuntimeError):
    """The group commit was closed (the service is stopping) before the item was written."""


@dataclass
class _Entry(Generic[ItemT, ResultT]):
    item: ItemT
    names: frozenset[Hashable]
    future: asyncio.Future[ResultT] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit(Generic[ItemT, ResultT]):
    """Writes items submitted concurrently in groups; see the module's documentation.

    `write(items)` makes every item's write in one transaction and returns one result per
    item, in order (an exception instance for an item that failed on its own). It runs in
    the writer task, not in the submitting request's context: what an item needs from its
    request (its trace, its answer) is built into the item before it is submitted."""

    def __init__(
        self,
        name: str,
        write: Callable[[Sequence[ItemT]], Awaitable[Sequence[ResultT | BaseException]]],
        *,
        conflicts: Callable[[ItemT], Iterable[Hashable]] = lambda _: (),
        max_items: int = 100,
        service: str = "",
    ) -> None:
        self.name = name
        self._sizes = GROUP_COMMIT_ITEMS.labels(service=service, group=name)
        self._write = write
        self._conflicts = conflicts
        self.max_items = max_items
        self._waiting: deque[_Entry[ItemT, ResultT]] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._writing: list[_Entry[ItemT, ResultT]] = []
        self._closed = False

    async def submit(self, item: ItemT) -> ResultT:
        """Queue `item`, and return its result once its group has been written (or raise
        the exception its write ended in)."""
        if self._closed:
            raise GroupCommitClosed(f"{self.name} is closed")
        entry: _Entry[ItemT, ResultT] = _Entry(item, frozenset(self._conflicts(item)))
        self._waiting.append(entry)
        self._wake.set()
        if self._writer is None or self._writer.done():
            # A context of its own: the writer serves every request, so it must not carry
            # the trace and log fields of the one that happened to start it.
            self._writer = asyncio.create_task(
                self._run(), name=f"group-commit-{self.name}", context=contextvars.Context()
            )
            self._writer.add_done_callback(self._writer_ended)
        # The request may be cancelled (its client gone); the write goes on and its result
        # is dropped, as a commit the client did not wait for would be.
        return await asyncio.shield(entry.future)

    def next_group(self) -> list[_Entry[ItemT, ResultT]]:
        """Take the next group from the queue: in order, up to `max_items`, leaving for a
        later group each item that shares a conflict name with one taken before it."""
        group: list[_Entry[ItemT, ResultT]] = []
        later: list[_Entry[ItemT, ResultT]] = []
        taken: set[Hashable] = set()
        while self._waiting and len(group) < self.max_items:
            entry = self._waiting.popleft()
            (later if entry.names & taken else group).append(entry)
            # an item left for later keeps its names taken too: what comes after it must
            # not overtake it
            taken |= entry.names
        self._waiting.extendleft(reversed(later))
        return group

    async def _run(self) -> None:
        while self._waiting or not self._closed:
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._writing = self.next_group()
            await self._write_group(self._writing)
            self._writing = []

    async def _write_group(self, group: list[_Entry[ItemT, ResultT]]) -> None:
        try:
            results = await self._write([entry.item for entry in group])
        except asyncio.CancelledError:
            self._fail(group, GroupCommitClosed(f"{self.name} closed while writing"))
            raise
        except Exception as exc:
            if len(group) == 1:
                self._fail(group, exc)
                return
            log.warning(
                "group write failed; writing its items one by one",
                group=self.name,
                items=len(group),
                error=repr(exc),
            )
            for entry in group:
                await self._write_group([entry])
            return
        if len(results) != len(group):
            self._fail(
                group, RuntimeError(f"{self.name}: {len(results)} results for {len(group)} items")
            )
            return
        self._sizes.observe(len(group))
        for entry, result in zip(group, results, strict=True):
            if entry.future.done():
                continue
            if isinstance(result, BaseException):
                entry.future.set_exception(result)
            else:
                entry.future.set_result(result)

    def _writer_ended(self, writer: asyncio.Task[None]) -> None:
        """A writer that ended by an error of its own fails what was queued, rather than
        leave those requests waiting for a writer that is gone (the next item starts one)."""
        if writer.cancelled() or writer.exception() is None:
            return
        log.error("group commit writer failed", group=self.name, error=repr(writer.exception()))
        self._fail(
            [*self._writing, *self._waiting], GroupCommitClosed(f"{self.name}: writer failed")
        )
        self._writing = []
        self._waiting.clear()

    @staticmethod
    def _fail(group: Iterable[_Entry[Any, Any]], exc: BaseException) -> None:
        for entry in group:
            if not entry.future.done():
                entry.future.set_exception(exc)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Take no more items, let the writer write those queued already for up to
        `timeout_s`, then stop it; an item still not written fails with
        `GroupCommitClosed`."""
        self._closed = True
        self._wake.set()
        if self._writer is not None:
            await asyncio.wait({self._writer}, timeout=timeout_s)
            await cancel_and_wait([self._writer])
        self._fail(self._waiting, GroupCommitClosed(f"{self.name} is closed"))
        self._waiting.clear()
