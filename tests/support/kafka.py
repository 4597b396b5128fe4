"""Independent Kafka clients for tests: read what the system published, as a subscriber would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition


@asynccontextmanager
async def _from_start(
    bootstrap: str, topic: str, deadline: float
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A consumer (no group) assigned every partition of `topic`, each at offset 0."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            await consumer.client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
            await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(partitions or [])]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        yield consumer, tps
    finally:
        await consumer.stop()


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: int | None = None,
    timeout_s: float = 20,
    where: object = None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` from offset 0 (no group), waiting until `until` records match
    `where` (a predicate on the record, or None for all) or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    async with _from_start(bootstrap, topic, deadline) as (consumer, _):
        found: list[ConsumerRecord[bytes, bytes]] = []
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                found.extend(r for r in records if where is None or where(r))  # type: ignore[operator]
            if until is not None and len(found) >= until:
                break
        return found


async def read_to_end(
    bootstrap: str, topic: str, *, timeout_s: float = 60, where: object = None
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` up to the end each partition had when reading began, that
    matches `where`. Raises TimeoutError if the end is not reached in time: a partial read
    must not pass for a complete one (counting matches instead stops early once a record
    published twice makes up for one not read yet)."""
    deadline = time.monotonic() + timeout_s
    async with _from_start(bootstrap, topic, deadline) as (consumer, tps):
        ends = await consumer.end_offsets(tps)

        async def behind() -> dict[int, str]:
            """Partition -> 'position/end', for each not read to its end yet."""
            positions = {tp: await consumer.position(tp) for tp in tps}
            return {
                tp.partition: f"{positions[tp]}/{ends[tp]}"
                for tp in tps
                if positions[tp] < ends[tp]
            }

        found: list[ConsumerRecord[bytes, bytes]] = []
        while unread := await behind():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end in {timeout_s} s: {unread}")
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                found.extend(r for r in records if where is None or where(r))  # type: ignore[operator]
        return found


async def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]
) -> None:
    """Produce (key, value) records in order and wait for the broker's acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()
