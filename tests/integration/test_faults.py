"""Faults under load, on the real stack: processes killed at named crash points, the broker
killed (losing its whole log) and PostgreSQL stopped in immediate mode mid-load, and every
topic replayed from offset 0. After each, with no manual step, the history checker proves
that every lead answered with 2xx ended in exactly one visible state, was published, and had
no duplicate effect; consumer lag returns to zero.

`make test` runs a reduced count; `make chaos` (HANDOFF_CHAOS=soak) runs more leads and
rounds, and prints the summary: leads accepted, ended, duplicated, lost, and the time to
recover after each fault.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from sqlalchemy.ext.asyncio import AsyncEngine
from support.chaos import (
    SERVICES,
    Cluster,
    History,
    Load,
    check_history,
    lead_profile,
    metric_total,
    running_cluster,
    send_leads,
    soak,
    wait_for_zero_lag,
    wait_until_dead,
)

from handoff_runtime.db import create_engine
from handoff_schemas import TOPICS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600 if soak() else 420)]

LEADS = 600 if soak() else 120
ROUNDS = 3 if soak() else 1
GROUPS = ("handoff-scorer", "handoff-router", "handoff-feedback", "handoff-feedback-kpis")
SUMMARY: list[str] = []


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster("handoff-faults-") as started:
        yield started
    print("\n" + "\n".join(["fault summary:", *SUMMARY]))


@pytest.fixture
async def engine(cluster: Cluster) -> AsyncIterator[AsyncEngine]:
    db = create_engine(cluster.database_url, pool_size=2)
    yield db
    await db.dispose()


def settle(history: History, scenario: str) -> None:
    """Record the scenario's line of the summary, then hold it to the promise."""
    SUMMARY.append(history.summary(scenario))
    print(SUMMARY[-1])
    history.assert_clean()


async def when_accepted(load: Load, count: int, timeout_s: float = 60) -> None:
    """Until `count` leads of a running load were accepted (the fault lands mid-load)."""
    deadline = time.monotonic() + timeout_s
    while len(load.accepted) < count:
        assert time.monotonic() < deadline, f"only {len(load.accepted)} leads accepted"
        await asyncio.sleep(0.05)


# Which process crashes where, and on which hit of the point: the scorer's intake commit and
# relay, the router's consumer after its commit and in the middle of a batch.
CRASH_POINTS = [
    ("scorer", "after_db_commit", 25),
    ("scorer", "after_publish", 3),
    ("router", "after_process", 3),
    ("router", "mid_batch", 2),
]


@pytest.mark.parametrize("rounds", [ROUNDS])
@pytest.mark.parametrize(("service", "point", "hit"), CRASH_POINTS)
async def test_a_process_killed_at_a_crash_point_loses_and_doubles_nothing(
    cluster: Cluster, service: str, point: str, hit: int, rounds: int
) -> None:
    for round_ in range(rounds):
        armed = await asyncio.to_thread(cluster.restart, service, HANDOFF_CRASH_AT=f"{point}:{hit}")
        tag = f"{point.replace('_', '')}{round_}"
        sending = asyncio.create_task(
            send_leads(cluster.url("scorer"), [lead_profile(tag, i) for i in range(LEADS)])
        )
        code = await asyncio.to_thread(wait_until_dead, armed, 60)
        assert code == -signal.SIGKILL, f"{service} exited with {code}, not at its crash point"
        events = [str(r.get("event", "")) for r in armed.log_records()]
        assert any(e.startswith("crash point reached") for e in events), armed.log_tail()
        crashed_at = time.monotonic()
        await asyncio.to_thread(cluster.restart, service)
        load = await sending
        assert not load.refused, f"leads refused: {load.refused[:5]}"
        assert len(load.accepted) == LEADS
        settle(await check_history(cluster, load, fault_at=crashed_at), f"crash {service} {point}")
    await wait_for_zero_lag(cluster)


async def recoveries(cluster: Cluster) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=5) as client:
        return {
            name: metric_total(
                (await client.get(f"{cluster.url(name)}/metrics")).text,
                "handoff_broker_recoveries_total",
            )
            for name in SERVICES
        }


async def all_ready(cluster: Cluster) -> dict[str, int]:
    async with httpx.AsyncClient(timeout=5) as client:
        return {
            name: (await client.get(f"{cluster.url(name)}/readyz")).status_code for name in SERVICES
        }


async def test_a_broker_killed_mid_load_is_noticed_and_everything_is_re_driven(
    cluster: Cluster,
) -> None:
    for round_ in range(ROUNDS):
        before = await recoveries(cluster)
        load = Load()
        leads = [lead_profile(f"broker{round_}", i) for i in range(LEADS)]
        sending = asyncio.create_task(
            send_leads(cluster.url("scorer"), leads, concurrency=2, load=load)
        )
        await when_accepted(load, LEADS // 3)
        cluster.kill_broker()
        await asyncio.sleep(1)
        cluster.start_broker()
        restarted_at = time.monotonic()
        await sending
        history = await check_history(cluster, load, fault_at=restarted_at)
        settle(history, "broker kill -9 and restart")
        lag_s = await wait_for_zero_lag(cluster)
        after = await recoveries(cluster)
        # Every running service noticed the new, empty broker by itself.
        assert all(after[name] > before[name] for name in SERVICES), (before, after)
        assert await all_ready(cluster) == dict.fromkeys(SERVICES, 200)
        print(f"consumer lag back to zero {lag_s:.1f} s after the history settled")


async def test_postgres_restarted_in_immediate_mode_mid_load_loses_nothing(
    cluster: Cluster,
) -> None:
    for round_ in range(ROUNDS):
        load = Load()
        leads = [lead_profile(f"postgres{round_}", i) for i in range(LEADS)]
        sending = asyncio.create_task(
            send_leads(cluster.url("scorer"), leads, concurrency=2, load=load)
        )
        await when_accepted(load, LEADS // 3)
        await asyncio.to_thread(cluster.restart_postgres)
        restarted_at = time.monotonic()
        await sending
        assert not load.refused
        settle(
            await check_history(cluster, load, fault_at=restarted_at),
            "PostgreSQL immediate restart",
        )
        await wait_for_zero_lag(cluster)
        assert await all_ready(cluster) == dict.fromkeys(SERVICES, 200)


async def table_fingerprints(engine: AsyncEngine) -> dict[str, str]:
    """Table -> row count and a hash of every row, for each table of the three services
    (the broker-epoch row records when it was last checked, so it is left out)."""
    fingerprints: dict[str, str] = {}
    async with engine.connect() as conn:
        tables = await conn.execute(
            sa.text(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema IN ('scorer', 'router', 'feedback') "
                "AND table_type = 'BASE TABLE' AND table_name <> 'broker_epoch'"
            )
        )
        for schema, table in tables.all():
            rows = await conn.execute(sa.text(f'SELECT t::text FROM "{schema}"."{table}" t'))
            text = "\n".join(sorted(row for (row,) in rows.all()))
            fingerprints[f"{schema}.{table}"] = hashlib.sha256(text.encode()).hexdigest()
    return fingerprints


async def rewind_groups(bootstrap: str) -> int:
    """Commit offset 0 for every consumer group on every partition of every topic (the
    services are stopped, so the groups are empty); returns the records to be replayed."""
    replayed = 0
    for group in GROUPS:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topic.name, p)
                for topic in TOPICS
                for p in sorted(consumer.partitions_for_topic(topic.name) or ())
            ]
            consumer.assign(partitions)
            committed = {tp: await consumer.committed(tp) for tp in partitions}
            replayed += sum(offset or 0 for offset in committed.values())
            await consumer.commit({tp: OffsetAndMetadata(0, "") for tp in partitions})
        finally:
            await consumer.stop()
    return replayed


async def test_replaying_every_topic_from_offset_zero_changes_no_table(
    cluster: Cluster, engine: AsyncEngine
) -> None:
    await wait_for_zero_lag(cluster)
    before = await table_fingerprints(engine)
    await asyncio.to_thread(cluster.stop_services)
    replayed = await rewind_groups(cluster.env["KAFKA_BOOTSTRAP_SERVERS"])
    assert replayed > LEADS, "the groups had consumed too little for a meaningful replay"
    await asyncio.to_thread(cluster.start_services)
    started = time.monotonic()

    async def duplicates_seen() -> float:
        total = 0.0
        async with httpx.AsyncClient(timeout=5) as client:
            for name in SERVICES:
                metrics = (await client.get(f"{cluster.url(name)}/metrics")).text
                total += sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in metrics.splitlines()
                    if line.startswith("handoff_events_consumed_total{")
                    and 'outcome="duplicate"' in line
                )
        return total

    # The restarted services consumed every record again and recognised each one.
    while await duplicates_seen() < replayed:
        assert time.monotonic() - started < 120, "the replay did not finish"
        await asyncio.sleep(0.5)
    await wait_for_zero_lag(cluster)
    after = await table_fingerprints(engine)
    changed = sorted(table for table in before if before[table] != after.get(table))
    assert not changed, f"replay changed {changed}"
    assert set(after) == set(before)
    SUMMARY.append(f"{'replay from offset 0':<34} records {replayed}, tables changed 0")
