"""The benchmark's baseline: the chain Handoff runs, with no business logic, written as simply
as it can be, on the same stack (FastAPI on uvicorn, aiokafka, asyncpg).

    http    POST /leads -> produce the body to bench.intake (wait for the ack) -> 202
    worker  consume bench.intake in batches -> one INSERT per batch -> produce each lead to
            bench.routed (wait for the acks) -> commit the offsets

No signature check, no dedupe, no scoring, no routing, no outbox: what the HTTP server, the
broker and PostgreSQL cost on this machine for a lead's round trip, so Handoff's figures can
be read as a ratio to it. Run as `python bench/baseline.py http|worker`, configured by
`DATABASE_URL`, `KAFKA_BOOTSTRAP_SERVERS` and `BASELINE_PORT`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

INTAKE, ROUTED = "bench.intake", "bench.routed"
PARTITIONS = 3


async def create_topics(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)
            for name in (INTAKE, ROUTED)
            if name not in existing
        ]
        if wanted:
            await admin.create_topics(wanted)
    finally:
        await admin.close()


def http() -> None:
    import uvicorn
    from aiokafka import AIOKafkaProducer

    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await create_topics(bootstrap)
        app.state.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await app.state.producer.start()
        yield
        await app.state.producer.stop()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/leads", status_code=202)
    async def leads(request: Request) -> JSONResponse:
        lead = await request.json()
        lead_id = uuid.uuid4().hex
        lead["lead_id"] = lead_id
        await request.app.state.producer.send_and_wait(
            INTAKE, json.dumps(lead).encode(), key=lead_id.encode()
        )
        return JSONResponse({"lead_id": lead_id}, status_code=202)

    port = int(os.environ.get("BASELINE_PORT", "8090"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def worker() -> None:
    import asyncpg
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    database = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    await create_topics(bootstrap)
    db = await asyncpg.connect(database)
    await db.execute(
        "CREATE TABLE IF NOT EXISTS bench_leads "
        "(id text PRIMARY KEY, lead jsonb NOT NULL, stored_at timestamptz DEFAULT now())"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    consumer = AIOKafkaConsumer(
        INTAKE,
        bootstrap_servers=bootstrap,
        group_id="bench-baseline",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # The broker settings Handoff's consumers use: the embedded broker does not wake a
        # waiting fetch, so the fetch wait is the floor on consume latency.
        fetch_max_wait_ms=50,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await producer.start()
    await consumer.start()
    ready = os.environ.get("BASELINE_READY_FILE")
    try:
        while True:
            if ready and consumer.assignment():
                # admitted to the group: the benchmark may start
                await asyncio.to_thread(Path(ready).touch)
                ready = None
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            records = [r for batch in batches.values() for r in batch]
            if not records:
                continue
            ids = [r.key.decode() for r in records if r.key is not None]
            await db.execute(
                "INSERT INTO bench_leads (id, lead) "
                "SELECT * FROM unnest($1::text[], $2::jsonb[]) ON CONFLICT (id) DO NOTHING",
                ids,
                [r.value.decode() for r in records if r.value is not None],
            )
            sent = [
                await producer.send(ROUTED, r.value, key=r.key)
                for r in records
                if r.value is not None
            ]
            await asyncio.gather(*sent)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
        await db.close()


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "http":
        http()
    elif role == "worker":
        try:
            import uvloop

            uvloop.run(worker())
        except ImportError:
            asyncio.run(worker())
    else:
        sys.exit("usage: baseline.py http|worker")
