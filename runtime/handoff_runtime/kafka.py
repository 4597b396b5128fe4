"""Broker plumbing: producer and consumer factories, topic creation, and the broker epoch.

Every broker call is bounded by a timeout: the embedded broker can vanish and come back
empty, and a call that waits forever would hang shutdown (see DESIGN.md).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from handoff_schemas import Topic
from handoff_schemas.catalogue import BROKER_EPOCH

from .aio import within

log = structlog.get_logger(__name__)

EPOCH_TOPIC = BROKER_EPOCH.name
"""Its first record names the broker's incarnation; a new one means the log was lost."""


async def close_quietly(closing: Awaitable[object], *, timeout_s: float, what: str) -> None:
    """Await a client's stop or close, bounded by `timeout_s`. A failure is logged, not
    raised: a client of a broker that vanished can fail to close in any way, aiokafka's
    consumer even re-raising the CancelledError of its own cancelled fetches, and closing
    must go on. A cancellation of the calling task itself still propagates."""
    try:
        await within(closing, timeout_s)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("closing a broker client was interrupted", client=what)
    except Exception as exc:
        log.warning("closing a broker client failed", client=what, error=repr(exc))


def make_producer(bootstrap: str, *, client_id: str, timeout_s: float) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas. No idempotence: the embedded broker
    refuses it, and exactly-once effects come from the outbox and idempotent consumers."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        request_timeout_ms=int(timeout_s * 1000),
        compression_type=None,
    )


def make_consumer(
    bootstrap: str,
    *,
    group_id: str,
    client_id: str,
    fetch_max_wait_ms: int,
    max_records: int,
    session_timeout_ms: int = 6000,
) -> AIOKafkaConsumer:
    """A group consumer with manual commits, starting at the earliest offset when it has none.

    The session timeout also paces joining: the embedded broker admits a new member after
    about half of it, so the 6 s minimum Apache Kafka accepts keeps start-up and fail-over
    quick (3 s) where aiokafka's default (10 s) would take 5 s to join."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        max_poll_records=max_records,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(500, session_timeout_ms // 6),
        isolation_level="read_uncommitted",
    )


class TopicCreationError(RuntimeError):
    """The broker refused to create topics (for another reason than that they exist)."""


TOPIC_ALREADY_EXISTS = 36
"""Kafka's error code for a topic created in the meantime (by another instance, say)."""


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[Topic],
    *,
    timeout_s: float = 30,
    replication_factor: int = 1,
) -> list[str]:
    """Create the topics that do not exist yet, with their partitions and configs (retention,
    cleanup policy), each partition on `replication_factor` brokers. Existing topics are left
    as they are. Returns the names created; a topic another client created first counts as
    there. Any other refusal raises TopicCreationError naming each topic and the reason (the
    admin client reports them in the answer, it does not raise them)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    await within(admin.start(), timeout_s)
    try:
        existing = set(await within(admin.list_topics(), timeout_s))
        missing = [
            NewTopic(
                name=t.name,
                num_partitions=t.partitions,
                replication_factor=replication_factor,
                topic_configs=t.configs(),
            )
            for t in topics
            if t.name not in existing
        ]
        if not missing:
            return []
        answer = await within(admin.create_topics(missing), timeout_s)
        errors = _creation_errors(answer)
        refused = {
            name: why for name, (code, why) in errors.items() if code != TOPIC_ALREADY_EXISTS
        }
        if refused:
            raise TopicCreationError(
                "the broker refused to create "
                + "; ".join(f"{name}: {why}" for name, why in sorted(refused.items()))
            )
        created = [t.name for t in missing if t.name not in errors]
        if created:
            log.info("topics created", topics=created, replication_factor=replication_factor)
        return created
    finally:
        await close_quietly(admin.close(), timeout_s=timeout_s, what="admin")


def _creation_errors(answer: Any) -> dict[str, tuple[int, str]]:
    """The topics a CreateTopics answer reports an error for: name -> (code, reason)."""
    errors: dict[str, tuple[int, str]] = {}
    for entry in getattr(answer, "topic_errors", ()):
        name, code = entry[0], int(entry[1])
        if code == 0:
            continue
        message = entry[2] if len(entry) > 2 and entry[2] else None
        error = for_code(code)
        errors[name] = (code, f"{error.message} ({message or error.description})")
    return errors


async def broker_epoch(bootstrap: str, *, timeout_s: float, replication_factor: int = 1) -> str:
    """The broker's incarnation: the first record of the epoch topic, written if absent.

    Several services may race to write it on a fresh broker; all of them read back the
    record at offset 0, so they agree on one epoch.
    """
    await ensure_topics(
        bootstrap, [BROKER_EPOCH], timeout_s=timeout_s, replication_factor=replication_factor
    )
    # A short first look: if it misses an existing record, the candidate written below loses
    # to it anyway, since everyone reads back offset 0.
    epoch = await _first_record(bootstrap, timeout_s=0.3)
    if epoch is None:
        producer = make_producer(bootstrap, client_id="handoff-epoch", timeout_s=timeout_s)
        await within(producer.start(), timeout_s)
        try:
            await within(
                producer.send_and_wait(EPOCH_TOPIC, uuid.uuid4().hex.encode(), partition=0),
                timeout_s,
            )
        finally:
            await close_quietly(producer.stop(), timeout_s=timeout_s, what="epoch producer")
        epoch = await _first_record(bootstrap, timeout_s=timeout_s)
    if epoch is None:
        raise TimeoutError("could not read the broker epoch")
    return epoch


async def _first_record(bootstrap: str, *, timeout_s: float) -> str | None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await within(consumer.start(), timeout_s + 10)
    try:
        tp = TopicPartition(EPOCH_TOPIC, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        batches = await consumer.getmany(tp, timeout_ms=int(timeout_s * 1000), max_records=1)
        for record in batches.get(tp, []):
            if record.offset == 0 and record.value:
                return bytes(record.value).decode()
        return None
    finally:
        await close_quietly(consumer.stop(), timeout_s=timeout_s + 10, what="epoch reader")
