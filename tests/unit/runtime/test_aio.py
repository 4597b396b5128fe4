"""Bounded awaits and task shutdown keep every cancellation (Python 3.11's `asyncio.wait_for`
does not: a relay loop waiting on it for a wake-up could ignore the one cancel shutdown sends,
and the service never exited), and the task dump names where each task waits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from handoff_runtime.aio import cancel_and_wait, within
from handoff_runtime.diagnostics import await_chain


async def wake_loop(wake: asyncio.Event) -> None:
    """The outbox relay's shape: wait for a wake-up or a poll interval, forever."""
    while True:
        with contextlib.suppress(TimeoutError):
            await within(wake.wait(), 5)
        wake.clear()


async def steps(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


@pytest.mark.parametrize("delay", range(6))
async def test_a_loop_woken_as_it_is_cancelled_still_stops(delay: int) -> None:
    wake = asyncio.Event()
    task = asyncio.create_task(wake_loop(wake))
    await steps(2)
    wake.set()
    await steps(delay)  # the cancel lands at each point of the wake-up's completion
    task.cancel()
    await steps(20)
    stopped = task.done()
    await cancel_and_wait([task])
    assert stopped, f"the cancellation was lost {delay} steps after the wake-up"
    assert task.cancelled()


async def test_within_raises_timeout_and_cancels_what_it_awaited() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        await within(slow(), 0.05)
    assert started.is_set()
    assert cancelled.is_set()
    assert await within(asyncio.sleep(0, result="done"), 1) == "done"


async def test_cancel_and_wait_outlasts_a_task_that_swallows_a_cancellation() -> None:
    cancels = 0

    async def stubborn() -> None:
        nonlocal cancels
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancels += 1
                if cancels >= 3:
                    raise

    async def failing() -> None:
        raise RuntimeError("crashed earlier")

    tasks = [asyncio.create_task(stubborn()), asyncio.create_task(failing())]
    await steps(2)
    await within(cancel_and_wait(tasks), 10)
    assert all(task.done() for task in tasks)
    assert cancels == 3
    assert tasks[0].cancelled()
    assert isinstance(tasks[1].exception(), RuntimeError)


async def test_the_task_dump_follows_awaits_through_async_context_managers() -> None:
    @contextlib.asynccontextmanager
    async def holding() -> AsyncIterator[None]:
        yield
        await asyncio.Event().wait()

    async def stopping() -> None:
        async with holding():
            pass

    task = asyncio.create_task(stopping())
    await steps(2)
    chain = await_chain(task.get_coro())
    await cancel_and_wait([task])
    names = [entry.rsplit(" ", 1)[-1] for entry in chain[:-1]]
    assert names == ["stopping", "__aexit__", "holding", "wait"], chain
    assert chain[-1].startswith("awaits <Future pending"), chain
