"""Bulk intake benchmark: how long a 1,000-lead batch takes to be accepted, scored and routed.

Starts its own embedded PostgreSQL and broker (temporary, free ports) and the three
services, seeds a team and the demo ICP, posts the batch once, and follows the leads with an
independent consumer. Every lead must be accounted for — scored once and routed once
(assigned, queued or nurture) — or the run fails. Prints a summary and writes
bench/out/intake_batch.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from handoff_runtime.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from handoff_runtime.launcher import Stack
from handoff_schemas import LEAD_ROUTING, LEAD_SCORED, decode
from handoff_scorer.scoring import load_demo_icp

OUT = Path(__file__).parent / "out"


def synthetic_leads(count: int) -> list[dict[str, Any]]:
    """A webinar attendee list: varied fit, one person each."""
    industries = ["Software", "Fintech", "Manufacturing", "E-commerce", "Education"]
    countries = ["DE", "GB", "US", "SE", "BR", "FR"]
    titles = ["CTO", "VP Engineering", "Developer", "Head of Data", "Student", "Director IT"]
    run = uuid.uuid4().hex[:6]
    return [
        {
            "email": f"attendee{i}.{run}@company{i % 97}.io",
            "company": f"Company {i % 97}",
            "title": titles[i % len(titles)],
            "industry": industries[i % len(industries)],
            "employees": 20 + (i * 37) % 2000,
            "country": countries[i % len(countries)],
            "source": "import",
            "campaign": "webinar-bench",
        }
        for i in range(count)
    ]


async def follow(
    bootstrap: str, topic: str, keys: set[bytes], timeout_s: float
) -> dict[bytes, int]:
    """Count, per lead, the records of `topic` about it, until each was seen or time is up."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        seen: dict[bytes, int] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(seen) < len(keys):
            for records in (await consumer.getmany(timeout_ms=100)).values():
                for record in records:
                    if record.key in keys:
                        decode(record.value)  # every record must be a valid event
                        seen[record.key] = seen.get(record.key, 0) + 1
        return seen
    finally:
        await consumer.stop()


async def measure(system: Stack, bootstrap: str, count: int) -> dict[str, Any]:
    scorer, router = system.url("scorer"), system.url("router")
    headers = {"webhook-source": "local", "authorization": f"Bearer {system.admin_token}"}
    async with httpx.AsyncClient(timeout=120, headers=headers) as http:
        assert (
            await http.post(f"{scorer}/v1/icp", json=load_demo_icp().model_dump(mode="json"))
        ).status_code == 201
        team = (await http.post(f"{router}/v1/teams", json={"name": "Bench"})).json()
        for n in range(5):
            await http.post(
                f"{router}/v1/reps",
                json={
                    "team_id": team["id"],
                    "name": f"Rep {n}",
                    "email": f"rep{n}@bench.io",
                    "capacity": 50,
                },
            )
        leads = synthetic_leads(count)
        started = time.monotonic()
        answer = await http.post(f"{scorer}/v1/leads:batch", json={"leads": leads})
        accepted_after = time.monotonic() - started
    answer.raise_for_status()
    keys = {r["lead_id"].encode() for r in answer.json()["results"] if r["lead_id"]}
    scored, routed = await asyncio.gather(
        follow(bootstrap, LEAD_SCORED.name, keys, timeout_s=300),
        follow(bootstrap, LEAD_ROUTING.name, keys, timeout_s=300),
    )
    return {
        "leads": count,
        "accepted": len(keys),
        "http_seconds": round(accepted_after, 3),
        "scored": len(scored),
        "routed": len(routed),
        "routed_twice": sum(1 for n in routed.values() if n > 1),
        "all_routed_seconds": round(time.monotonic() - started, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="handoff-bench-"))
    postgres = EmbeddedPostgres(workdir / "pg", temporary=True)
    kafka = EmbeddedKafka(port=free_port(), log_path=workdir / "tansu.log")
    try:
        url, bootstrap = postgres.start(), kafka.start()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "HANDOFF_SCORER_PORT": str(free_port()),
            "HANDOFF_ROUTER_PORT": str(free_port()),
            "HANDOFF_FEEDBACK_PORT": str(free_port()),
        }
        system = Stack(workdir, env=env)
        try:
            system.start()
            result = asyncio.run(measure(system, bootstrap, args.leads))
        finally:
            system.stop()
    finally:
        kafka.stop()
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "intake_batch.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\nbatch of {result['leads']}: accepted in {result['http_seconds']} s, "
        f"all scored and routed in {result['all_routed_seconds']} s "
        f"(scored {result['scored']}, routed {result['routed']}, "
        f"routed twice {result['routed_twice']})"
    )
    lost = result["accepted"] - result["routed"]
    if (
        result["accepted"] != args.leads
        or lost
        or result["routed_twice"]
        or result["scored"] != result["accepted"]
    ):
        print(
            f"FAILED: {lost} lead(s) not routed, {result['routed_twice']} routed twice",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
