"""Where a lead's end-to-end time goes at a fixed rate: Handoff runs on a fresh embedded stack,
the load generator offers leads at `--rate` for `--seconds`, and for each lead this prints
how long each hop took, how full the services' consumed batches were, and how many SQL
statements each service sent per lead.

    python bench/hops.py [--rate 100] [--seconds 10]

A hop's time comes from two clocks on the same machine: an event's CloudEvents `time` (set
when the service staged it, inside the transaction that wrote it) and its Kafka record's
timestamp (set by the relay's producer as it sent the record). So "staged -> sent" is the
rest of that transaction, its commit and the relay; "sent -> staged" on the next topic is
the next consumer's fetch and its work up to that lead's event. Statements are counted from
PostgreSQL's own statement log (`log_statement = all` while the load runs), by the
`application_name` each service's connections carry.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families
from run import Infra, Phase, fresh_infra, handoff, measure, percentile

from handoff_runtime.db import create_engine
from handoff_schemas import LEAD_CREATED, LEAD_ROUTING, LEAD_SCORED

HOPS = (
    ("lead.created: intake commit and relay", "created", "staged", "created", "sent"),
    ("scorer: fetch and scoring", "created", "sent", "scored", "staged"),
    ("lead.scored: commit and relay", "scored", "staged", "scored", "sent"),
    ("router: fetch and routing", "scored", "sent", "routed", "staged"),
    ("lead.routing: commit and relay", "routed", "staged", "routed", "sent"),
)
ROUTED = ("assigned", "queued", "nurture_requested")


async def statement_log(database_url: str, on: bool) -> None:
    """Turn PostgreSQL's statement log on (with the application name on each line) or off."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(
                sa.text(f"ALTER SYSTEM SET log_statement = '{'all' if on else 'none'}'")
            )
            await conn.execute(sa.text("ALTER SYSTEM SET log_line_prefix = '@@%a@@ '"))
            await conn.execute(sa.text("SELECT pg_reload_conf()"))
    finally:
        await engine.dispose()


def statements_by_service(infra: Infra) -> Counter[str]:
    """Statements in the server's log, by the service whose connection sent them."""
    counted: Counter[str] = Counter()
    log = infra.workdir / "pg" / "log"
    for line in log.read_text(errors="replace").splitlines():
        if found := re.search(r"@@(handoff-\w+)@@ .*?(?:statement|execute [^:]*): ", line):
            counted[found.group(1)] += 1
    return counted


async def records(bootstrap: str) -> list[Any]:
    """Every record on the lead topics, read until they stay quiet."""
    topics = (LEAD_CREATED.name, LEAD_SCORED.name, LEAD_ROUTING.name)
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50
    )
    await consumer.start()
    read: list[Any] = []
    try:
        quiet = 0
        while quiet < 3:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            fetched = [r for recs in batches.values() for r in recs]
            quiet = 0 if fetched else quiet + 1
            read += fetched
    finally:
        await consumer.stop()
    return read


def hop_times(read: list[Any]) -> dict[str, list[float]]:
    """Milliseconds each lead spent in each hop (leads whose three events were all read)."""
    leads: dict[str, dict[str, dict[str, float]]] = {}
    for record in read:
        event = orjson.loads(record.value)
        kind = event["type"].split(".")[2]
        kind = "routed" if kind in ROUTED else kind
        staged = datetime.fromisoformat(event["time"]).timestamp() * 1000
        leads.setdefault(record.key.decode(), {}).setdefault(
            kind, {"staged": staged, "sent": float(record.timestamp)}
        )
    hops: dict[str, list[float]] = {name: [] for name, *_ in HOPS}
    for times in leads.values():
        if {"created", "scored", "routed"} <= times.keys():
            for name, start, start_clock, end, end_clock in HOPS:
                hops[name].append(times[end][end_clock] - times[start][start_clock])
    return hops


def batch_fill(metrics_url: str) -> str:
    """Records per consumed batch and the batches' mean wall time, from a service's metrics."""
    totals: defaultdict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(httpx.get(metrics_url, timeout=10).text):
        for sample in family.samples:
            totals[sample.name] += sample.value
    batches = totals["handoff_batch_processing_seconds_count"] or 1
    return (
        f"{totals['handoff_events_consumed_total'] / batches:5.1f} records per batch, "
        f"{1000 * totals['handoff_batch_processing_seconds_sum'] / batches:5.1f} ms per batch"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    phase = Phase("hops", "rate", rate=args.rate, duration_s=args.seconds, connections=32)
    with fresh_infra() as infra, handoff(infra) as running:
        asyncio.run(statement_log(infra.database_url, on=True))
        outcome = asyncio.run(measure("handoff", running, infra, phase))
        asyncio.run(statement_log(infra.database_url, on=False))
        fill = {name: batch_fill(url) for name, url in running.metrics.items()}
        read = asyncio.run(records(infra.bootstrap))
        statements = statements_by_service(infra)
    figures = outcome.figures
    routed = figures["routed"] or 1
    print(
        f"\nrouted {figures['routed']} at {figures['throughput_per_s']}/s; e2e {figures['e2e_ms']}"
    )
    print(f"cpu us/lead {figures['cpu_us_per_lead']}\n")
    for name, times in hop_times(read).items():
        print(
            f"{name:40s} p50 {statistics.median(times):6.1f}  p95 {percentile(times, 95):6.1f}"
            f"  p99 {percentile(times, 99):6.1f} ms  ({len(times)} leads)"
        )
    print()
    for name, line in fill.items():
        print(f"{name:9s} {line}")
    print()
    for service, count in sorted(statements.items()):
        print(f"{service:17s} {count / routed:5.1f} SQL statements per lead")


if __name__ == "__main__":
    main()
