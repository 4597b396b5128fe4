"""The scorer's own background work: re-scoring leads when asked to."""

from __future__ import annotations

import asyncio

import structlog

from handoff_runtime.service import ServiceRuntime

from . import service

log = structlog.get_logger(__name__)

RESCORE_BATCH = 200
IDLE_POLL_S = 1.0


async def rescore_jobs(runtime: ServiceRuntime) -> None:
    """Advance running re-score jobs one batch (one transaction) at a time, until cancelled.
    A job survives restarts: it resumes after the last lead it re-scored."""
    while True:
        try:
            async with runtime.db.unit_of_work() as uow:
                job = await service.rescore_next_batch(uow, batch_size=RESCORE_BATCH)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("re-score batch failed; retrying")
            job = None
        if job is None:
            await asyncio.sleep(IDLE_POLL_S)
        elif job.state == "done":
            log.info("re-score finished", job_id=job.id, leads=job.done, changed=job.changed)
