"""Independent Kafka clients for tests: read what the system published, as a subscriber would."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition


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
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + timeout_s
        while not partitions and time.monotonic() < deadline:
            await consumer.client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
            await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(partitions or [])]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        found: list[ConsumerRecord[bytes, bytes]] = []
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                found.extend(r for r in records if where is None or where(r))  # type: ignore[operator]
            if until is not None and len(found) >= until:
                break
        return found
    finally:
        await consumer.stop()


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
