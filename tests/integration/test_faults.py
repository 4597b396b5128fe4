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
import subprocess
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
    SETTLE_TIMEOUT_S,
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

LEADS = 600 if soak() else 90
ROUNDS = 3 if soak() else 1
GROUPS = ("handoff-scorer", "handoff-router", "handoff-feedback")
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
    ("scorer", "after_db_commit", 6),  # commits that staged events: intake groups and batches
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
        assert set(load.server_errors) <= {503}, load.server_errors
        assert len(load.accepted) == LEADS
        settle(await check_history(cluster, load, fault_at=crashed_at), f"crash {service} {point}")
    await wait_for_zero_lag(cluster)


GRACE_PERIOD_S = 30
"""What a deployment gives a pod between SIGTERM and SIGKILL (Kubernetes' default)."""


@pytest.mark.parametrize("service", ["scorer", "router"])
async def test_sigterm_mid_load_drains_within_the_grace_period_and_loses_no_lead(
    cluster: Cluster, service: str
) -> None:
    """A rolling deploy: SIGTERM mid-load. In-flight requests are answered, consumers stop
    after their batch, the relay flushes the outbox, and the process exits in time; the
    replacement carries on and every accepted lead ends."""
    load = Load()
    leads = [lead_profile(f"sigterm{service}", i) for i in range(LEADS)]
    sending = asyncio.create_task(
        send_leads(cluster.url("scorer"), leads, concurrency=2, load=load)
    )
    await when_accepted(load, LEADS // 3)
    stopping = cluster.instances[service]
    asked = time.monotonic()
    stopping.process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(stopping.process.wait, GRACE_PERIOD_S + 30)
    except subprocess.TimeoutExpired:
        stuck = await asyncio.to_thread(stopping.diagnose)
        sending.cancel()
        # Killed and replaced, so the module's later scenarios still have a whole cluster.
        await asyncio.to_thread(cluster.restart, service)
        pytest.fail(f"{service} still running {GRACE_PERIOD_S + 30} s after SIGTERM\n{stuck}")
    took = time.monotonic() - asked
    events = [str(r.get("event")) for r in stopping.log_records()]
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete.
    assert code in (0, -signal.SIGTERM), f"exit code {code}"
    assert "Application shutdown complete." in events, "\n".join(events[-30:])
    assert took < GRACE_PERIOD_S, f"{service} took {took:.1f} s to stop"
    await asyncio.to_thread(cluster.restart, service)
    restarted_at = time.monotonic()
    await sending
    assert not load.refused
    assert set(load.server_errors) <= {503}, load.server_errors
    settle(
        await check_history(cluster, load, fault_at=restarted_at),
        f"SIGTERM {service} ({took:.1f} s to stop)",
    )


async def recoveries(cluster: Cluster) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=5) as client:
        return {
            name: metric_total(
                (await client.get(f"{cluster.url(name)}/metrics")).text,
                "handoff_broker_recoveries_total",
            )
            for name in SERVICES
        }


async def all_ready(cluster: Cluster, timeout_s: float = 60) -> dict[str, int]:
    """Each service's /readyz status, once all answer 200 or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            statuses = {
                name: (await client.get(f"{cluster.url(name)}/readyz")).status_code
                for name in SERVICES
            }
            if set(statuses.values()) == {200} or time.monotonic() > deadline:
                return statuses
            await asyncio.sleep(0.5)


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
        # While PostgreSQL was away, intake answered 503 (retry later), never 500.
        assert set(load.server_errors) <= {503}, load.server_errors
        settle(
            await check_history(cluster, load, fault_at=restarted_at),
            "PostgreSQL immediate restart",
        )
        await wait_for_zero_lag(cluster)
        assert await all_ready(cluster) == dict.fromkeys(SERVICES, 200)


async def test_a_whole_system_stopped_mid_load_resumes_everything_in_flight(
    cluster: Cluster,
) -> None:
    """What Ctrl-C on `make run` does mid-load: the services stop, then the broker (its log
    is gone); on the next start every lead that got a 202 still ends, re-driven from the
    services' outboxes."""
    for round_ in range(ROUNDS):
        load = Load()
        leads = [lead_profile(f"restart{round_}", i) for i in range(LEADS)]
        sending = asyncio.create_task(
            send_leads(cluster.url("scorer"), leads, concurrency=2, load=load)
        )
        await when_accepted(load, LEADS // 3)
        await asyncio.to_thread(cluster.stop_services)
        cluster.kill_broker()
        cluster.start_broker()
        await asyncio.to_thread(cluster.start_services)
        started_at = time.monotonic()
        await sending
        assert not load.refused
        settle(
            await check_history(cluster, load, fault_at=started_at),
            "whole system stopped and started",
        )
        await wait_for_zero_lag(cluster)


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
            lines = sorted(row for (row,) in rows.all())
            digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
            fingerprints[f"{schema}.{table}"] = f"{len(lines)} rows {digest}"
    return fingerprints


async def records_before(bootstrap: str, ends: dict[TopicPartition, int]) -> int:
    """How many records each partition holds before its end offset, as a fetch sees them
    (after a restart the embedded broker's offsets can have gaps, so offsets are no count)."""
    if not ends:
        return 0
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        reader.assign(list(ends))
        for tp in ends:
            reader.seek(tp, 0)
        counted = dict.fromkeys(ends, 0)
        pending = set(ends)
        deadline = time.monotonic() + 60
        while pending:
            assert time.monotonic() < deadline, f"could not read {sorted(pending)[:3]}"
            for tp, records in (await reader.getmany(*pending, timeout_ms=500)).items():
                counted[tp] += sum(1 for r in records if r.offset < ends[tp])
                if records and records[-1].offset >= ends[tp] - 1:
                    pending.discard(tp)
            for tp in list(pending):
                if await reader.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return sum(counted.values())
    finally:
        await reader.stop()


async def rewind_groups(bootstrap: str) -> int:
    """Commit offset 0 for every consumer group on every partition of every topic, as a
    member of the group (the services are stopped, so it is the only one; the broker takes
    commits only from members); returns how many records will be replayed."""
    replayed = 0
    for group in GROUPS:
        consumer = AIOKafkaConsumer(
            *(topic.name for topic in TOPICS),
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        await consumer.start()
        try:
            deadline = time.monotonic() + 60
            while not consumer.assignment():
                assert time.monotonic() < deadline, f"could not join {group}"
                await consumer.getmany(timeout_ms=200)
            partitions = sorted(consumer.assignment())
            committed = {tp: await consumer.committed(tp) for tp in partitions}
            replayed += await records_before(
                bootstrap, {tp: end for tp, end in committed.items() if end}
            )
            await consumer.commit({tp: OffsetAndMetadata(0, "") for tp in partitions})
            assert all([await consumer.committed(tp) == 0 for tp in partitions]), group
        finally:
            await consumer.stop()
    return replayed


async def settled_fingerprints(
    engine: AsyncEngine, timeout_s: float = SETTLE_TIMEOUT_S
) -> dict[str, str]:
    """Table fingerprints once two readings 3 s apart agree (everything in flight applied)."""
    deadline = time.monotonic() + timeout_s
    last = await table_fingerprints(engine)
    while True:
        await asyncio.sleep(3)
        now = await table_fingerprints(engine)
        if now == last:
            return now
        assert time.monotonic() < deadline, "the system never settled"
        last = now


async def duplicates_seen(cluster: Cluster) -> float:
    """Records the running services recognised as already processed, since they started."""
    total = 0.0
    async with httpx.AsyncClient(timeout=5) as client:
        for name in SERVICES:
            metrics = (await client.get(f"{cluster.url(name)}/metrics")).text
            total += metric_total(metrics, "handoff_events_consumed_total", 'outcome="duplicate"')
    return total


async def test_replaying_every_topic_from_offset_zero_changes_no_table(
    cluster: Cluster, engine: AsyncEngine
) -> None:
    await wait_for_zero_lag(cluster)
    before = await settled_fingerprints(engine)
    await asyncio.to_thread(cluster.stop_services)
    replayed = await rewind_groups(cluster.env["KAFKA_BOOTSTRAP_SERVERS"])
    assert replayed > LEADS, "the groups had consumed too little for a meaningful replay"
    await asyncio.to_thread(cluster.start_services)
    started = time.monotonic()
    # The restarted services consumed every record again and recognised each one.
    while (seen := await duplicates_seen(cluster)) < replayed:
        assert time.monotonic() - started < SETTLE_TIMEOUT_S, f"{seen:.0f} of {replayed} replayed"
        await asyncio.sleep(0.5)
    after = await settled_fingerprints(engine)
    changed = sorted(table for table in before if before[table] != after.get(table))
    assert not changed, f"replay changed {[(t, before[t], after.get(t)) for t in changed]}"
    assert set(after) == set(before)
    SUMMARY.append(f"{'replay from offset 0':<34} records {replayed}, tables changed 0")


async def test_a_service_stops_within_its_grace_period_while_the_broker_is_down(
    cluster: Cluster,
) -> None:
    """SIGTERM with the broker gone: every broker call on the way out is bounded, so the
    service exits cleanly inside the 30 s a deployment gives it, and comes back after."""
    cluster.kill_broker()
    feedback = cluster.instances["feedback"]
    asked = time.monotonic()
    feedback.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(feedback.process.wait, 60)
    took = time.monotonic() - asked
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete.
    events = [str(r.get("event")) for r in feedback.log_records()]
    assert code in (0, -signal.SIGTERM), f"exit code {code}"
    assert "Application shutdown complete." in events, "\n".join(events[-30:])
    assert "Application shutdown failed. Exiting." not in events
    assert took < 30, f"feedback took {took:.1f} s to stop"
    cluster.start_broker()
    await asyncio.to_thread(cluster.restart, "feedback")
    SUMMARY.append(f"{'stop with the broker down':<34} clean exit in {took:.1f} s")
    # The others noticed the new broker by themselves and are consuming again.
    await wait_for_zero_lag(cluster)
    assert await all_ready(cluster) == dict.fromkeys(SERVICES, 200)
