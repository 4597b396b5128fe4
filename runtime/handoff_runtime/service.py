"""The app factory every service uses: lifespan (database, producer, relay, consumers),
health endpoints, metrics, problem+json errors and JSON logs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.dialects.postgresql import insert

from handoff_schemas import DEAD_LETTER_TOPICS, TOPICS

from . import collector, crashpoints, diagnostics
from .aio import cancel_and_wait, within
from .consumer import Consumer, ConsumerLoop, ConsumerSettings
from .db import Database
from .intake import add_request_models
from .kafka import broker_epoch, close_quietly, ensure_topics, make_consumer, make_producer
from .logs import configure_logging
from .metrics import BROKER_RECOVERIES, HttpMetrics, metrics_response
from .problems import document_problems, install_problem_handlers
from .relay import OutboxRelay
from .settings import ServiceSettings
from .webhooks import refuse_nul_characters

log = structlog.get_logger(__name__)

SETTLE_FACTOR = 3
"""Broker checks to wait after a recovery before the settling re-drive."""


Worker = Callable[["ServiceRuntime"], Coroutine[Any, Any, None]]
"""A service's own background loop (e.g. re-scoring), started and stopped with it."""


class ServiceRuntime:
    """Everything a running service holds: database, producer, relay, consumer loops and
    the service's own background workers."""

    def __init__(
        self,
        settings: ServiceSettings,
        consumers: Sequence[Consumer],
        workers: Sequence[Worker] = (),
    ) -> None:
        self.settings = settings
        self.service = settings.service_name
        self.db = Database(
            settings.database_url,
            schema=self.service,
            source=f"/handoff/{self.service}",
            pool_size=settings.db_pool_size,
        )
        self.consumers = consumers
        self.workers = workers
        self.producer: AIOKafkaProducer | None = None
        self.relay: OutboxRelay | None = None
        self._kafka_consumers: list[AIOKafkaConsumer] = []
        self._loops: list[ConsumerLoop] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._consumer_tasks: list[asyncio.Task[None]] = []
        self._epoch: str | None = None
        self._settling: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect to the broker, re-drive the outbox if the broker lost its log, and start
        the relay, the consumer loops, the broker watch and the service's workers."""
        s = self.settings
        crashpoints.arm(s.crash_at)
        diagnostics.install()
        await ensure_topics(
            s.kafka_bootstrap_servers,
            [*TOPICS, *DEAD_LETTER_TOPICS],
            timeout_s=s.kafka_timeout_s,
            replication_factor=s.kafka_replication_factor,
        )
        self.producer = make_producer(
            s.kafka_bootstrap_servers,
            client_id=f"handoff-{self.service}",
            timeout_s=s.kafka_timeout_s,
        )
        await within(self.producer.start(), s.kafka_timeout_s)
        self.relay = OutboxRelay(
            self.db,
            self.producer,
            service=self.service,
            batch_size=s.relay_batch_size,
            poll_interval_s=s.relay_poll_interval_ms / 1000,
            send_timeout_s=s.kafka_timeout_s,
            retention=timedelta(hours=s.outbox_retention_hours),
        )
        self._epoch, lost = await self.check_broker_epoch()
        self._tasks.append(asyncio.create_task(self.relay.run(), name=f"{self.service}-relay"))
        await self._start_consumers(from_beginning=lost)
        self._tasks.append(
            asyncio.create_task(self.watch_broker(), name=f"{self.service}-broker-watch")
        )
        for worker in self.workers:
            name = f"{self.service}-{getattr(worker, '__name__', 'worker')}"
            self._tasks.append(asyncio.create_task(worker(self), name=name))
        for task in self._tasks:
            task.add_done_callback(_log_crash)
        collector.tune(s.gc_threshold)

    async def _start_consumers(self, *, from_beginning: bool = False) -> None:
        """Join each consumer group; a group without committed offsets starts at the earliest,
        and `from_beginning` reads every partition from its start (after a lost log)."""
        s = self.settings
        for spec in self.consumers:
            kafka = make_consumer(
                s.kafka_bootstrap_servers,
                group_id=f"handoff-{spec.group}",
                client_id=f"handoff-{self.service}",
                fetch_max_wait_ms=s.fetch_max_wait_ms,
                max_records=s.consumer_max_records,
                session_timeout_ms=s.consumer_session_timeout_ms,
            )
            await within(kafka.start(), s.kafka_timeout_s)
            self._kafka_consumers.append(kafka)
            loop = ConsumerLoop(
                spec,
                kafka,
                self.db,
                ConsumerSettings(
                    service=self.service,
                    max_records=s.consumer_max_records,
                    max_attempts=s.max_attempts,
                    retry_backoff_s=s.retry_backoff_ms / 1000,
                    commit_timeout_s=s.kafka_timeout_s,
                    commit_interval_s=s.consumer_commit_interval_ms / 1000,
                ),
                from_beginning=from_beginning,
            )
            self._loops.append(loop)
            task = asyncio.create_task(loop.run(), name=f"{self.service}-{spec.group}")
            task.add_done_callback(_log_crash)
            self._consumer_tasks.append(task)

    async def _stop_consumers(self, *, commit: bool = True) -> None:
        """Cancel the consumer loops; for each group, commit the offsets of what its loop
        applied (unless the broker lost the log they are offsets in) and leave the group,
        the two together bounded by one broker call's timeout."""
        await cancel_and_wait(self._consumer_tasks)
        applied = {id(loop.kafka): loop for loop in self._loops} if commit else {}
        for kafka in self._kafka_consumers:
            await close_quietly(
                leave_group(kafka, applied.get(id(kafka))),
                timeout_s=self.settings.kafka_timeout_s,
                what="consumer",
            )
        for loop in self._loops:
            loop.forget_all_lag()
        self._consumer_tasks, self._kafka_consumers, self._loops = [], [], []

    async def check_broker_epoch(self) -> tuple[str, bool]:
        """Read the broker's epoch and, when it is not the one this service last published
        to, re-publish the retained outbox (the embedded broker forgets everything on
        restart; consumers dedupe the repeats). Returns the epoch and whether it changed."""
        assert self.relay is not None
        s = self.settings
        epoch = await broker_epoch(
            s.kafka_bootstrap_servers,
            timeout_s=s.kafka_timeout_s,
            replication_factor=s.kafka_replication_factor,
        )
        if epoch != self._epoch:
            # Before anything is re-published: the embedded broker acknowledges records sent
            # to a topic it has not created yet, and then loses them.
            await ensure_topics(
                s.kafka_bootstrap_servers,
                [*TOPICS, *DEAD_LETTER_TOPICS],
                timeout_s=s.kafka_timeout_s,
                replication_factor=s.kafka_replication_factor,
            )
        table = self.db.tables.broker_epoch
        async with self.db.engine.begin() as conn:
            known = await conn.scalar(
                sa.select(table.c.epoch).where(table.c.id == 1).with_for_update()
            )
            await conn.execute(
                insert(table)
                .values(id=1, epoch=epoch)
                .on_conflict_do_update(
                    index_elements=[table.c.id], set_={"epoch": epoch, "seen_at": sa.func.now()}
                )
            )
            lost = known is not None and known != epoch
            if lost:
                # In the transaction that records the new epoch, so a crash cannot record it
                # and skip the re-drive. Instances of a service share the outbox: the one
                # that swaps the recorded epoch re-drives it, once.
                since = datetime.now(UTC) - timedelta(hours=s.outbox_retention_hours)
                await self.relay.redrive_within(conn, since)
        if lost:
            self.relay.wake()
        return epoch, lost

    async def watch_broker(self) -> None:
        """Check the broker epoch every few seconds while running. When the broker lost its
        log, recreate the topics, re-drive the outbox, and re-join the consumer groups from
        the start of the new log (the old positions point past its end)."""
        while True:
            await asyncio.sleep(self.settings.broker_check_interval_s)
            try:
                epoch, _ = await self.check_broker_epoch()
                if epoch != self._epoch:
                    noticed = datetime.now(UTC)
                    await self.recover_from_broker_loss()
                    self._epoch = epoch
                    self._settling = asyncio.create_task(self._redrive_after_settling(noticed))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker or database away: look again next time
                log.warning("broker check failed; retrying", error=repr(exc))

    async def _redrive_after_settling(self, noticed: datetime) -> None:
        """Re-publish once more what was published around the broker's restart, once the
        broker has settled: in its first seconds the embedded broker has acknowledged
        records that no fetch ever returned (its log shows offsets written twice)."""
        assert self.relay is not None
        s = self.settings
        await asyncio.sleep(SETTLE_FACTOR * s.broker_check_interval_s + s.kafka_timeout_s)
        since = noticed - timedelta(seconds=s.broker_check_interval_s + s.kafka_timeout_s)
        try:
            rows = await self.relay.redrive(since)
        except Exception as exc:
            log.warning("settling re-drive failed", error=repr(exc))
        else:
            log.info("outbox re-driven again after the broker settled", rows=rows)

    async def recover_from_broker_loss(self) -> None:
        """Restart this process's consumers on the new log (its topics exist by now)."""
        started = time.monotonic()
        log.warning("the broker lost its log: re-joining the consumer groups")
        await self._stop_consumers(commit=False)
        await self._start_consumers(from_beginning=True)
        BROKER_RECOVERIES.labels(self.service).inc()
        log.warning("consumers restarted on the new log", seconds=time.monotonic() - started)

    async def stop(self) -> None:
        """Stop consuming, let the relay publish what is committed, then disconnect."""
        relay_task = self._tasks[0] if self._tasks else None
        settling = [self._settling] if self._settling is not None else []
        await cancel_and_wait([*settling, *self._tasks[1:]])
        await self._stop_consumers()
        if self.relay is not None:
            await close_quietly(
                self.relay.publish_pending(),
                timeout_s=self.settings.kafka_timeout_s,
                what="outbox relay",
            )
        if relay_task is not None:
            await cancel_and_wait([relay_task])
        if self.producer is not None:
            await close_quietly(
                self.producer.stop(), timeout_s=self.settings.kafka_timeout_s, what="producer"
            )
        await self.db.dispose()

    async def readiness(self) -> dict[str, str]:
        """Which dependencies answer: 'ok' or the error, per dependency."""
        checks: dict[str, str] = {}
        try:
            async with self.db.engine.connect() as conn:
                await within(conn.execute(sa.text("SELECT 1")), 2)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        try:
            assert self.producer is not None, "not started"
            await within(self.producer.client.fetch_all_metadata(), 2)
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unreachable: {type(exc).__name__}"
        crashed = [t.get_name() for t in [*self._tasks, *self._consumer_tasks] if t.done()]
        checks["workers"] = "ok" if not crashed else f"stopped: {', '.join(crashed)}"
        waiting = [loop.spec.group for loop in self._loops if not loop.joined]
        checks["consumers"] = "ok" if not waiting else f"joining group: {', '.join(waiting)}"
        return checks


async def leave_group(kafka: AIOKafkaConsumer, loop: ConsumerLoop | None) -> None:
    """Commit what `loop` applied, if given, then leave the consumer group."""
    if loop is not None:
        await loop.commit_applied()
    await kafka.stop()


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task crashed", task=task.get_name(), error=repr(task.exception()))


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    description: str,
    routers: Sequence[APIRouter],
    consumers: Sequence[Consumer] = (),
    workers: Sequence[Worker] = (),
    version: str = "0.1.0",
) -> FastAPI:
    """Build a service's FastAPI app with the shared lifespan and operations endpoints."""
    configure_logging(settings.service_name, settings.log_level)
    runtime = ServiceRuntime(settings, consumers, workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        log.info("service started", port=settings.port)
        try:
            yield
        finally:
            await runtime.stop()
            log.info("service stopped")

    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=lifespan,
        dependencies=[Depends(refuse_nul_characters)],
    )
    app.state.runtime = runtime
    app.add_middleware(HttpMetrics, service=settings.service_name)
    install_problem_handlers(app)

    ops = APIRouter(tags=["operations"])

    @ops.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": settings.service_name}

    @ops.get("/readyz", summary="Database and broker reachable", responses={503: {}})
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @ops.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return metrics_response()

    app.include_router(ops)
    for router in routers:
        app.include_router(router)
    _complete_openapi(app)
    return app


def _complete_openapi(app: FastAPI) -> None:
    """Let the app's OpenAPI document describe what FastAPI cannot see: request bodies parsed
    from raw JSON, and the problem+json answers of the shared error handlers."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            add_request_models(document)
            document_problems(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def runtime_of(request: Request) -> Any:
    """The ServiceRuntime of the app serving `request` (for route dependencies)."""
    return request.app.state.runtime


async def database(request: Request) -> Database:
    """Route dependency: the service's database (routes open their own unit of work).
    Coroutine dependencies run on the event loop; a plain function would be sent to the
    thread pool on every request."""
    db: Database = request.app.state.runtime.db
    return db
