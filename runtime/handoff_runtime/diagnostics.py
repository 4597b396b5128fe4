"""What a running service is waiting on: `kill -USR1 <pid>` logs every asyncio task of the
process with the chain of awaits it is suspended in, innermost last. For a service that does
not stop, or a consumer that makes no progress, when a profiler is not at hand."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import AsyncGenerator, Coroutine, Generator
from typing import Any

import structlog

log = structlog.get_logger(__name__)

SIGNAL = signal.SIGUSR1


def await_chain(awaitable: object) -> list[str]:
    """`file:line function` of each coroutine in the chain `awaitable` is suspended in, from
    the task's own coroutine inwards; the last entry names what the innermost one awaits
    when that is not a coroutine (a future, another task)."""
    chain: list[str] = []
    current: object = awaitable
    while current is not None:
        frame = next(
            (
                getattr(current, attr)
                for attr in ("cr_frame", "gi_frame", "ag_frame")
                if getattr(current, attr, None) is not None
            ),
            None,
        )
        if frame is None:
            generator = _async_generator_of(current)
            if generator is not None:  # an `async with` of an async generator's context
                current = generator
                continue
            if current is not awaitable:
                chain.append(f"awaits {_awaited(current)!r}"[:300])
            break
        chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        current = next(
            (
                getattr(current, attr)
                for attr in ("cr_await", "gi_yieldfrom", "ag_await")
                if getattr(current, attr, None) is not None
            ),
            None,
        )
    return chain


def _async_generator_of(awaitable: object) -> AsyncGenerator[Any, Any] | None:
    """The async generator an `asend`/`athrow` awaitable steps (it exposes no attribute for
    it, only a reference the garbage collector sees)."""
    if type(awaitable).__name__ not in ("async_generator_asend", "async_generator_athrow"):
        return None
    return next((r for r in gc.get_referents(awaitable) if isinstance(r, AsyncGenerator)), None)


def _awaited(awaitable: object) -> object:
    """The future behind a future's `__await__` iterator, whose repr says what it is."""
    if type(awaitable).__name__ == "FutureIter":
        return next(
            (r for r in gc.get_referents(awaitable) if isinstance(r, asyncio.Future)), awaitable
        )
    return awaitable


def log_tasks() -> int:
    """Log each task of the running loop and where it waits; returns how many there were."""
    tasks = asyncio.all_tasks()
    for task in sorted(tasks, key=lambda t: t.get_name()):
        coro: Coroutine[Any, Any, Any] | Generator[Any, Any, Any] = task.get_coro()
        log.warning("task waiting", task=task.get_name(), awaits=await_chain(coro))
    return len(tasks)


def install() -> None:
    """Log the tasks on SIGUSR1 (main thread only; elsewhere nothing is installed)."""
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(SIGNAL, log_tasks)
