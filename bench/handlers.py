"""What one consumed batch costs each service, in process, with no broker and no HTTP: the
services' own consumer groups apply batches of the load generator's leads on the embedded
PostgreSQL, each stage fed the records the stage before it wrote to its outbox (what its relay
would publish), and the CPU and the SQL statements of every batch are counted.

    python bench/handlers.py [--sizes 4 40] [--batches 10] [--profile]

For each service and batch size it prints the CPU per lead and the statements per batch by
kind (every statement its connections send, through the session or on the asyncpg
connection itself; `BEGIN`, `COMMIT` and savepoints not counted). A statement
sent more often in larger batches is a read or write per lead that a set-based handler
should not have (an ORM lookup that autoflushes, say): the printout flags it. `--profile`
also writes each service's batches' cProfile statistics (CPU time) to
bench/out/handlers-<service>.prof and prints their costliest functions. A profile of the
running services (`bench/profile_services.py`) shows where a process spends its time but
not which statements a batch sends, nor what one handler costs on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, cast

import sqlalchemy as sa
from aiokafka.structs import ConsumerRecord
from loadgen import lead
from run import OUT

from handoff_feedback.consumers import feedback_consumer
from handoff_feedback.settings import FeedbackSettings
from handoff_router import service as router_service
from handoff_router.consumers import routing_consumer
from handoff_router.settings import RouterSettings
from handoff_runtime import collector
from handoff_runtime.consumer import Consumer, ConsumerLoop, ConsumerSettings
from handoff_runtime.db import Database
from handoff_runtime.embedded import EmbeddedPostgres
from handoff_runtime.logs import configure_logging
from handoff_runtime.migrations import upgrade
from handoff_runtime.settings import ServiceSettings
from handoff_runtime.statements import statements_sent
from handoff_schemas import LeadProfile
from handoff_scorer import service as scorer_service
from handoff_scorer.consumers import leads as scorer_consumer
from handoff_scorer.scoring import load_demo_icp

Record: TypeAlias = ConsumerRecord[bytes, bytes]
SERVICES = ("scorer", "router", "feedback")


@dataclass
class Batch:
    """What one service spent on one batch."""

    leads: int
    cpu_s: float
    statements: Counter[str]


class Service:
    """One service's database and consumer groups, and the statements its connections send."""

    def __init__(self, url: str, name: str, consumers: list[Consumer]) -> None:
        self.name = name
        self.profile: cProfile.Profile | None = None
        self.db = Database(url, schema=name, source=f"/handoff/{name}")
        settings = ConsumerSettings(
            service=name, max_records=10_000, max_attempts=1, retry_backoff_s=0, commit_timeout_s=1
        )
        # process_batch never touches the broker client; there is none here.
        self.loops = [ConsumerLoop(c, cast(Any, None), self.db, settings) for c in consumers]

    async def apply(self, records: list[Record], leads: int) -> Batch:
        """Every consumer group of the service applies `records` as one consumed batch."""
        with statements_sent(self.db) as sent:
            started = time.process_time()
            if self.profile is not None:
                self.profile.enable()
            try:
                for loop in self.loops:
                    await loop.process_batch(records)
            finally:
                if self.profile is not None:
                    self.profile.disable()
            cpu_s = time.process_time() - started
        return Batch(leads, cpu_s, Counter(" ".join(text.split())[:90] for text in sent))

    async def published(self) -> list[Record]:
        """The outbox rows not yet published, as the records the relay would send; marked
        published."""
        outbox = self.db.tables.outbox
        async with self.db.engine.begin() as conn:
            rows = (
                await conn.execute(
                    sa.update(outbox)
                    .where(outbox.c.published_at.is_(None))
                    .values(published_at=sa.func.now())
                    .returning(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.value)
                )
            ).all()
        return [
            ConsumerRecord(
                row.topic, 0, row.id, 0, 0, (row.key or "").encode(), row.value, None, 0, 0, ()
            )
            for row in sorted(rows, key=lambda r: r.id)
        ]


async def measure(
    url: str, sizes: list[int], batches: int, *, profile: bool = False
) -> dict[str, dict[int, list[Batch]]]:
    scorer = Service(url, "scorer", [scorer_consumer])
    router = Service(url, "router", [routing_consumer(RouterSettings())])
    feedback = Service(url, "feedback", [feedback_consumer(FeedbackSettings().policy())])
    async with scorer.db.unit_of_work() as uow:
        await scorer_service.publish_icp(uow, load_demo_icp(), now=scorer_service.utcnow())
    async with router.db.unit_of_work() as uow:
        team = await router_service.create_team(uow, "Bench")
        await uow.session.flush()
        for n in range(10):
            await router_service.create_rep(
                uow, team_id=team.id, name=f"Rep {n}", email=f"rep{n}@bench.io", capacity=10_000
            )
    await scorer.published()  # the ICP announcement
    collector.tune(ServiceSettings().gc_threshold)  # as each service does once started
    results: dict[str, dict[int, list[Batch]]] = {s: {} for s in SERVICES}
    sent = 0
    for size in sizes:
        for round_ in range(batches + 1):  # the first of each size warms up
            for n in range(size):  # the intake, one delivery at a time
                async with scorer.db.unit_of_work() as uow:
                    await scorer_service.accept_lead(
                        uow, LeadProfile.model_validate(lead(sent + n, "handlers"))
                    )
            sent += size
            created = await scorer.published()
            scored_batch = await scorer.apply(created, size)
            scored = await scorer.published()
            routed_batch = await router.apply(scored, size)
            routed = await router.published()
            feedback_batch = await feedback.apply(created + scored + routed, size)
            if round_ == 0 and profile:  # from the first measured batch on
                for each in (scorer, router, feedback):
                    each.profile = cProfile.Profile(time.process_time)
            if round_:
                for name, batch in zip(
                    SERVICES, (scored_batch, routed_batch, feedback_batch), strict=True
                ):
                    results[name].setdefault(size, []).append(batch)
    for each in (scorer, router, feedback):
        await each.db.dispose()
        if each.profile is not None:
            write_profile(each.name, each.profile)
    return results


def write_profile(name: str, profile: cProfile.Profile, top: int = 25) -> None:
    """Save a service's statistics and print its costliest functions, on their own and with
    what they call."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"handlers-{name}.prof"
    profile.dump_stats(path)
    print(f"\n{name}: {path}")
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(top)
    ours = r"handoff_|pydantic/main|sqlalchemy/orm/session"
    stats.sort_stats("cumulative").print_stats(ours, top)


def report(results: dict[str, dict[int, list[Batch]]]) -> None:
    for name, by_size in results.items():
        sizes = sorted(by_size)
        print(f"\n{name}")
        for size in sizes:
            done = by_size[size]
            cpu = sum(b.cpu_s for b in done) / sum(b.leads for b in done) * 1000
            statements = sum(sum(b.statements.values()) for b in done) / len(done)
            print(
                f"  {size:4d} leads per batch: {cpu:6.2f} ms CPU per lead, "
                f"{statements:6.1f} statements per batch"
            )
        small, large = by_size[sizes[0]], by_size[sizes[-1]]
        per_batch = {
            size: _mean_counts(by_size[size]) for size in (sizes[0], sizes[-1]) if by_size[size]
        }
        growing = {
            text: (per_batch[sizes[0]].get(text, 0), count)
            for text, count in per_batch[sizes[-1]].items()
            if count >= 2 * per_batch[sizes[0]].get(text, 0) + 2
        }
        if small is large or not growing:
            print("  no statement is sent more often in larger batches")
        for text, (few, many) in sorted(growing.items(), key=lambda item: -item[1][1]):
            print(f"  GROWS {few:5.1f} -> {many:5.1f} per batch: {text}")


def _mean_counts(batches: list[Batch]) -> dict[str, float]:
    total: Counter[str] = Counter()
    for batch in batches:
        total.update(batch.statements)
    return {text: count / len(batches) for text, count in total.items()}


@contextmanager
def database() -> Iterator[str]:
    """An embedded PostgreSQL with the three services' schemas, removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="handoff-handlers-"))
    postgres = EmbeddedPostgres(workdir / "pg", temporary=True)
    try:
        url = postgres.start()
        for name in SERVICES:
            upgrade(name, url)
        yield url
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 40])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="cProfile each service's batches")
    args = parser.parse_args()
    configure_logging("bench", "WARNING")
    with database() as url:
        report(asyncio.run(measure(url, sorted(args.sizes), args.batches, profile=args.profile)))


if __name__ == "__main__":
    main()
