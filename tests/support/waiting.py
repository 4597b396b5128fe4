"""Waiting for the system to catch up, bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(
    check: Callable[[], Awaitable[T]], timeout_s: float = 20, interval_s: float = 0.1
) -> T:
    """The first truthy result of `check`, or its last result once `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval_s)
