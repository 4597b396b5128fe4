"""Crash points: a test-only hook that kills the service process at a named point of the
delivery pipeline, to prove that a crash there loses and doubles nothing.

Off unless `HANDOFF_CRASH_AT` names a point (`<point>` or `<point>:<n>` to crash on the n-th
time the point is reached); refused when `HANDOFF_ENVIRONMENT=production` (see settings).
The process kills itself with SIGKILL: no `finally`, no shutdown hook, no flushed buffer runs,
as when a machine loses power.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

POINTS: dict[str, str] = {
    "after_db_commit": "a transaction that staged events has committed; the relay has not "
    "published them yet",
    "after_publish": "the broker acknowledged a batch of outbox rows; they are not marked "
    "published yet",
    "after_process": "a consumed batch is committed to the database; its offsets are not "
    "committed to the broker yet",
    "mid_batch": "half of a consumed batch is applied inside its open transaction",
}


@dataclass
class _Armed:
    point: str
    on_hit: int
    hits: int = 0


_armed: _Armed | None = None


def parse(spec: str) -> tuple[str, int]:
    """`<point>[:<n>]` as (point, n); raises ValueError naming the known points."""
    point, _, count = spec.partition(":")
    if point not in POINTS:
        raise ValueError(f"unknown crash point {point!r}; known: {', '.join(sorted(POINTS))}")
    try:
        on_hit = int(count) if count else 1
    except ValueError:
        raise ValueError(f"crash point count must be a whole number, not {count!r}") from None
    if on_hit < 1:
        raise ValueError("crash point count must be at least 1")
    return point, on_hit


def arm(spec: str | None) -> None:
    """Arm the crash point `spec` (or disarm with None)."""
    global _armed
    if spec is None:
        _armed = None
        return
    point, on_hit = parse(spec)
    _armed = _Armed(point, on_hit)
    log.warning("crash point armed: this process will kill itself", point=point, on_hit=on_hit)


def reached(point: str) -> None:
    """Mark that the pipeline reached `point`; kills the process if it is the armed one."""
    armed = _armed
    if armed is None or armed.point != point:
        return
    armed.hits += 1
    if armed.hits >= armed.on_hit:
        log.warning("crash point reached: killing the process", point=point, hit=armed.hits)
        os.kill(os.getpid(), signal.SIGKILL)


def is_armed(point: str) -> bool:
    """Whether `point` is the armed crash point (work before it may then need doing first,
    for the crash to happen where the point says)."""
    return _armed is not None and _armed.point == point
