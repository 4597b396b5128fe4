"""The shared KPIs on the real stack: the feedback service runs as a process on a real
PostgreSQL and a Kafka-protocol broker, the events of eleven leads of two campaigns (and one
without) are produced straight onto the lead topics — some out of order, one twice — and
the figures served over HTTP must be exactly the ones worked out by hand below.

The leads (created minutes after T0 = 2026-11-02 09:00 UTC; statuses seconds after that):

    W1 webinar  A  anna    contacted 300s, qualified, converted, won 30,000   (statuses
                                                        produced before its assignment; the
                                                        won event produced twice)
    W2 webinar  A  ben     accepted, contacted 600s (produced before accepted), qualified,
                           converted, lost (competitor)  (re-scored: the later A over B)
    W3 webinar  A  anna    qualified 900s without accepted/contacted, won 12,000.50
    W4 webinar  C  ben     SLA breached, reassigned to anna, contacted 18,000s,
                           disqualified (no_budget)
    W5 webinar  D  -       nurture for low fit: not an MQL
    W6 webinar  B  -       queued in inbound: an MQL, not assigned
    E1 ebook    A  cara    contacted 120s, recycled (no_timeline)
    E2 ebook    B  cara    accepted, disqualified (no_need)
    E3 ebook    A  ben     scored before created; contacted 1,800s, ..., won 50,000
    E4 ebook    A  anna    lead.created twice (a merge: the later one, produced first, names
                           webinar; first touch is ebook), assigned, not touched yet
    N1 (none)   C  cara    accepted
    O1 webinar  A  anna    created 2026-10-20, outside the range; contacted 100s, won 1,000
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import BaseModel
from support.infra import embedded_infra, service_database
from support.kafka import produce
from support.processes import running_instances

from handoff_feedback.kpi_models import Stage
from handoff_feedback.kpis import project
from handoff_feedback.rebuild import rebuild_kpis
from handoff_feedback.settings import FeedbackSettings
from handoff_runtime.aio import within
from handoff_runtime.db import Database, create_engine
from handoff_schemas import (
    WORKING_STATUSES,
    CloudEvent,
    FitGrade,
    LeadAssignedV1,
    LeadCreatedV1,
    LeadNurtureRequestedV1,
    LeadProfile,
    LeadQueuedV1,
    LeadScoredV1,
    LeadSlaBreachedV1,
    LeadStatus,
    LeadStatusChangedV1,
    NurtureReason,
    RoutingDecision,
    decode,
    encode,
    new_event,
)
from handoff_schemas.catalogue import event_type_of

pytestmark = pytest.mark.integration

S = LeadStatus
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
WEBINAR, EBOOK = "webinar-2026-11", "ebook-2026-11"
INBOUND, ENTERPRISE = "team-inbound", "team-enterprise"
ANNA, BEN, CARA = "rep-anna", "rep-ben", "rep-cara"
NOVEMBER_2 = {"from": "2026-11-02", "to": "2026-11-03"}

Record = tuple[str, bytes, bytes]


@dataclass
class Stack:
    database_url: str
    bootstrap: str
    feedback: str
    seeded: bool = False


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with embedded_infra("handoff-kpis-") as infra:
        workdir = infra.workdir
        database_url = infra.database_url
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
        }
        with running_instances(
            "handoff_feedback", 1, env=env, port_env="HANDOFF_FEEDBACK_PORT", workdir=workdir
        ) as (feedback,):
            yield Stack(database_url, infra.bootstrap, feedback.base_url)


# --- the events ------------------------------------------------------------------------


def record(data: BaseModel, source: str) -> Record:
    """The Kafka record a producer would write: on the event's topic, keyed by the lead."""
    lead_id: str = getattr(data, "lead_id")  # noqa: B009
    event = new_event(data, source=f"/handoff/{source}", subject=lead_id)
    return event_type_of(type(data)).topics[0], lead_id.encode(), encode(event)


@dataclass(frozen=True)
class Lead:
    id: str
    created: datetime
    campaign: str | None
    source: str | None

    def at(self, seconds: float) -> datetime:
        return self.created + timedelta(seconds=seconds)

    def created_event(
        self, *, at: datetime | None = None, campaign: str | None = None, source: str | None = None
    ) -> Record:
        profile = LeadProfile(
            email=f"{self.id}@kpi-test.io",
            campaign=campaign if at else self.campaign,
            source=source if at else self.source,
        )
        data = LeadCreatedV1(lead_id=self.id, received_at=at or self.created, lead=profile)
        return record(data, "scorer")

    def scored(self, grade: str, *, seconds: float = 30) -> Record:
        data = LeadScoredV1(
            lead_id=self.id,
            icp_version=1,
            score={"A": 90, "B": 70, "C": 50, "D": 20}[grade],
            grade=FitGrade(grade),
            engagement_level=2,
            contributions=[],
            scored_at=self.at(seconds),
            received_at=self.created,
            lead=LeadProfile(email=f"{self.id}@kpi-test.io", campaign=self.campaign),
        )
        return record(data, "scorer")

    def assigned(self, rep: str, team: str, *, seconds: float = 60) -> Record:
        decision = RoutingDecision(
            rule="default", team_id=team, icp_version=1, score=80, grade=FitGrade.A
        )
        data = LeadAssignedV1(
            lead_id=self.id,
            rep_id=rep,
            rep_name=rep.removeprefix("rep-"),
            team_id=team,
            assigned_at=self.at(seconds),
            decision=decision,
        )
        return record(data, "router")

    def queued(self, team: str, *, seconds: float = 60) -> Record:
        decision = RoutingDecision(
            rule="default", team_id=team, icp_version=1, score=70, grade=FitGrade.B
        )
        data = LeadQueuedV1(
            lead_id=self.id, team_id=team, queued_at=self.at(seconds), decision=decision
        )
        return record(data, "router")

    def nurtured(self) -> Record:
        data = LeadNurtureRequestedV1(
            lead_id=self.id,
            reason=NurtureReason.LOW_FIT,
            requested_at=self.at(60),
            requested_by="router",
        )
        return record(data, "router")

    def breached(self, rep: str, team: str, *, assigned: float, seconds: float) -> Record:
        data = LeadSlaBreachedV1(
            lead_id=self.id,
            rep_id=rep,
            team_id=team,
            assigned_at=self.at(assigned),
            due_at=self.at(seconds - 1),
            breached_at=self.at(seconds),
            reassignments=1,
        )
        return record(data, "router")

    def journey(self, rep: str, team: str, *steps: Step, start: S = S.ASSIGNED) -> list[Record]:
        """Status changes as feedback publishes them, each moving from the previous one."""
        records, previous = [], start
        for step in steps:
            data = LeadStatusChangedV1(
                lead_id=self.id,
                from_status=previous,
                to_status=step.status,
                rep_id=rep,
                team_id=team,
                reason=step.reason,
                occurred_at=self.at(step.seconds),
                working=step.status in WORKING_STATUSES,
                amount=step.amount,
            )
            records.append(record(data, "feedback"))
            previous = step.status
        return records


@dataclass(frozen=True)
class Step:
    seconds: float
    status: S
    reason: str | None = None
    amount: float | None = None


def lead(name: str, minutes: float, campaign: str | None, source: str | None) -> Lead:
    return Lead(f"kpi-{name}", T0 + timedelta(minutes=minutes), campaign, source)


W1 = lead("w1", 0, WEBINAR, "hubspot")
W2 = lead("w2", 10, WEBINAR, "hubspot")
W3 = lead("w3", 20, WEBINAR, "website")
W4 = lead("w4", 30, WEBINAR, "hubspot")
W5 = lead("w5", 40, WEBINAR, "hubspot")
W6 = lead("w6", 50, WEBINAR, "website")
E1 = lead("e1", 5, EBOOK, "linkedin")
E2 = lead("e2", 15, EBOOK, "linkedin")
E3 = lead("e3", 25, EBOOK, "linkedin")
E4 = lead("e4", 35, EBOOK, None)
N1 = lead("n1", 45, None, "website")
O1 = Lead("kpi-o1", datetime(2026, 10, 20, 12, 0, tzinfo=UTC), WEBINAR, "hubspot")

W1_WON = W1.journey(
    ANNA,
    INBOUND,
    Step(300, S.CONTACTED),
    Step(3600, S.QUALIFIED),
    Step(7200, S.CONVERTED),
    Step(10800, S.WON, amount=30000),
)


def early_records() -> list[Record]:
    """Produced first and applied before the rest exists: W1's statuses (and its creation,
    so they show) before its assignment, and E3's score before its creation."""
    return [E3.scored("A"), W1.created_event(), *W1_WON]


def later_records() -> list[Record]:
    w2_accepted, w2_contacted, *w2_rest = W2.journey(
        BEN,
        INBOUND,
        Step(240, S.ACCEPTED),
        Step(600, S.CONTACTED),
        Step(3600, S.QUALIFIED),
        Step(7200, S.CONVERTED),
        Step(9000, S.LOST, reason="competitor"),
    )
    return [
        W1.scored("A"),
        W1.assigned(ANNA, INBOUND),
        W1_WON[-1],  # the same won event again
        W2.created_event(),
        W2.scored("A", seconds=86400),  # the later score, delivered first
        W2.scored("B"),
        W2.assigned(BEN, INBOUND),
        w2_contacted,  # delivered before the accepted it followed
        w2_accepted,
        *w2_rest,
        W3.created_event(),
        W3.scored("A"),
        W3.assigned(ANNA, INBOUND),
        *W3.journey(ANNA, INBOUND, Step(900, S.QUALIFIED), Step(7200, S.WON, amount=12000.50)),
        W4.created_event(),
        W4.scored("C"),
        W4.assigned(BEN, INBOUND),
        W4.breached(BEN, INBOUND, assigned=60, seconds=3660),
        W4.assigned(ANNA, INBOUND, seconds=3661),
        *W4.journey(
            ANNA,
            INBOUND,
            Step(18000, S.CONTACTED),
            Step(20000, S.DISQUALIFIED, reason="no_budget"),
        ),
        W5.created_event(),
        W5.scored("D"),
        W5.nurtured(),
        W6.created_event(),
        W6.scored("B"),
        W6.queued(INBOUND),
        E1.created_event(),
        E1.scored("A"),
        E1.assigned(CARA, ENTERPRISE),
        *E1.journey(
            CARA,
            ENTERPRISE,
            Step(120, S.CONTACTED),
            Step(5000, S.RECYCLED, reason="no_timeline"),
        ),
        E2.created_event(),
        E2.scored("B"),
        E2.assigned(CARA, ENTERPRISE),
        *E2.journey(
            CARA, ENTERPRISE, Step(400, S.ACCEPTED), Step(3000, S.DISQUALIFIED, reason="no_need")
        ),
        E3.created_event(),
        E3.assigned(BEN, ENTERPRISE),
        *E3.journey(
            BEN,
            ENTERPRISE,
            Step(1800, S.CONTACTED),
            Step(4000, S.QUALIFIED),
            Step(8000, S.CONVERTED),
            Step(20000, S.WON, amount=50000),
        ),
        # A merge: the scorer re-published lead.created a day later with the newer campaign;
        # delivered before the original, it must not win the attribution.
        E4.created_event(at=E4.at(86400), campaign=WEBINAR, source="partner"),
        E4.created_event(),
        E4.scored("A"),
        E4.assigned(ANNA, ENTERPRISE),
        N1.created_event(),
        N1.scored("C"),
        N1.assigned(CARA, ENTERPRISE),
        *N1.journey(CARA, ENTERPRISE, Step(300, S.ACCEPTED)),
        O1.created_event(),
        O1.scored("A"),
        O1.assigned(ANNA, INBOUND),
        *O1.journey(ANNA, INBOUND, Step(100, S.CONTACTED), Step(86400, S.WON, amount=1000)),
    ]


async def seed(stack: Stack, records: list[Record]) -> None:
    await produce_in_order(stack.bootstrap, records)
    stack.seeded = True


async def produce_in_order(bootstrap: str, records: list[Record]) -> None:
    """Produce each topic's records in the order given (a lead's records share a partition)."""
    by_topic: dict[str, list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
    for topic, key, value in records:
        by_topic[topic].append((key, value))
    for topic, topic_records in by_topic.items():
        await produce(bootstrap, topic, topic_records)


# --- the expected figures, worked out by hand ---------------------------------------------


def funnel_row(group: str | None, counts: list[int], lost: int, revenue: float) -> dict[str, Any]:
    steps = ["leads", "mql", "assigned", "accepted", "contacted", "qualified", "converted", "won"]
    return {
        "group": group,
        **dict(zip(steps, counts, strict=True)),
        "lost": lost,
        "revenue": revenue,
    }


FUNNEL_BY_CAMPAIGN = [
    {
        **funnel_row(EBOOK, [4, 4, 4, 3, 2, 1, 1, 1], lost=0, revenue=50000.0),
        "leads_to_mql": 1.0,
        "mql_to_assigned": 1.0,
        "assigned_to_accepted": 0.75,
        "accepted_to_contacted": 0.6667,
        "contacted_to_qualified": 0.5,
        "qualified_to_converted": 1.0,
        "converted_to_won": 1.0,
    },
    {
        **funnel_row(WEBINAR, [6, 5, 4, 4, 4, 3, 3, 2], lost=1, revenue=42000.5),
        "leads_to_mql": 0.8333,
        "mql_to_assigned": 0.8,
        "assigned_to_accepted": 1.0,
        "accepted_to_contacted": 1.0,
        "contacted_to_qualified": 0.75,
        "qualified_to_converted": 1.0,
        "converted_to_won": 0.6667,
    },
    {
        **funnel_row(None, [1, 1, 1, 1, 0, 0, 0, 0], lost=0, revenue=0.0),
        "leads_to_mql": 1.0,
        "mql_to_assigned": 1.0,
        "assigned_to_accepted": 1.0,
        "accepted_to_contacted": 0.0,
        "contacted_to_qualified": None,
        "qualified_to_converted": None,
        "converted_to_won": None,
    },
]

REASONS_BY_CAMPAIGN = [
    {"group": EBOOK, "kind": "disqualified", "reason": "no_need", "count": 1},
    {"group": EBOOK, "kind": "recycled", "reason": "no_timeline", "count": 1},
    {"group": WEBINAR, "kind": "disqualified", "reason": "no_budget", "count": 1},
    {"group": WEBINAR, "kind": "lost", "reason": "competitor", "count": 1},
]
REASONS_BY_REP = [
    {"group": ANNA, "kind": "disqualified", "reason": "no_budget", "count": 1},
    {"group": BEN, "kind": "lost", "reason": "competitor", "count": 1},
    {"group": CARA, "kind": "disqualified", "reason": "no_need", "count": 1},
    {"group": CARA, "kind": "recycled", "reason": "no_timeline", "count": 1},
]

REVENUE_BY_CAMPAIGN = [
    {"group": EBOOK, "leads": 4, "won": 1, "revenue": 50000.0},
    {"group": WEBINAR, "leads": 6, "won": 2, "revenue": 42000.5},
    {"group": None, "leads": 1, "won": 0, "revenue": 0.0},
]

# Touched in the range, seconds to first touch: E1 120, W1 300, W2 600, W3 900, E3 1800,
# W4 18000 (breached). percentile_cont interpolates between the ranks around (n - 1) * p.
SPEED_OVERALL = {
    "group": None,
    "touched": 6,
    "p50_seconds": 750.0,  # between 600 and 900
    "p90_seconds": 9900.0,  # half way from 1800 to 18000
    "breached": 1,
    "within_sla": 5,
    "sla_measured": 6,
    "sla_compliance": 0.8333,
}
SPEED_BY_CAMPAIGN = [
    {
        "group": EBOOK,
        "touched": 2,
        "p50_seconds": 960.0,
        "p90_seconds": 1632.0,
        "breached": 0,
        "within_sla": 2,
        "sla_measured": 2,
        "sla_compliance": 1.0,
    },
    {
        "group": WEBINAR,
        "touched": 4,
        "p50_seconds": 750.0,
        "p90_seconds": 12870.0,  # 900 + 0.7 * (18000 - 900)
        "breached": 1,
        "within_sla": 3,
        "sla_measured": 4,
        "sla_compliance": 0.75,
    },
    {
        "group": None,
        "touched": 0,
        "p50_seconds": None,
        "p90_seconds": None,
        "breached": 0,
        "within_sla": 0,
        "sla_measured": 0,
        "sla_compliance": None,
    },
]


# --- the test ----------------------------------------------------------------------------


async def settled(
    http: httpx.AsyncClient, path: str, params: dict[str, str], done: Callable[[Any], bool]
) -> Any:
    """Poll a report until `done` holds for its groups (the projection has caught up)."""
    deadline = time.monotonic() + 30
    while True:
        answer = await http.get(path, params=params)
        assert answer.status_code == 200, answer.text
        groups = answer.json()["groups"]
        if done(groups) or time.monotonic() > deadline:
            return groups
        await asyncio.sleep(0.2)


def by_group(groups: list[dict[str, Any]], field: str) -> dict[str | None, Any]:
    return {g["group"]: g[field] for g in groups}


async def test_the_kpis_managers_read_match_the_events_in_any_order(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.feedback, timeout=10) as http:
        await produce_in_order(stack.bootstrap, early_records())
        early = await settled(
            http, "/v1/kpis/revenue", {}, lambda g: by_group(g, "revenue").get(WEBINAR) == 30000
        )
        # W1's statuses arrived before its assignment: won implies every stage before it.
        assert early == [{"group": WEBINAR, "leads": 1, "won": 1, "revenue": 30000.0}]
        funnel = await http.get("/v1/kpis/funnel", params={"group_by": "none"})
        assert funnel.json()["groups"][0]["assigned"] == 1

        await seed(stack, later_records())
        all_time = await settled(
            http,
            "/v1/kpis/funnel",
            {"group_by": "none"},
            lambda g: g and g[0]["leads"] == 12 and g[0]["won"] == 4 and g[0]["lost"] == 1,
        )
        assert all_time[0]["revenue"] == 30000 + 12000.5 + 50000 + 1000  # W1 counted once

        # Reports that depend on the last events of other topics may lag a little more.
        funnel_groups = await settled(
            http,
            "/v1/kpis/funnel",
            {"group_by": "campaign", **NOVEMBER_2},
            lambda g: g == FUNNEL_BY_CAMPAIGN,
        )
        assert funnel_groups == FUNNEL_BY_CAMPAIGN

        revenue = await http.get("/v1/kpis/revenue", params=NOVEMBER_2)
        assert revenue.json() == {
            "group_by": "campaign",
            "created_from": "2026-11-02T00:00:00Z",
            "created_to": "2026-11-03T00:00:00Z",
            "groups": REVENUE_BY_CAMPAIGN,
        }
        revenue_all_time = await http.get("/v1/kpis/revenue", params={"group_by": "campaign"})
        assert by_group(revenue_all_time.json()["groups"], "revenue") == {
            EBOOK: 50000.0,
            WEBINAR: 43000.5,  # O1, created in October, counts without a range
            None: 0.0,
        }

        reasons = await http.get("/v1/kpis/reasons", params={"group_by": "campaign", **NOVEMBER_2})
        assert reasons.json()["groups"] == REASONS_BY_CAMPAIGN
        reasons = await http.get("/v1/kpis/reasons", params={"group_by": "rep", **NOVEMBER_2})
        assert reasons.json()["groups"] == REASONS_BY_REP

        speed = await http.get("/v1/kpis/speed-to-lead", params=NOVEMBER_2)
        assert speed.json()["groups"] == [SPEED_OVERALL]
        speed = await http.get(
            "/v1/kpis/speed-to-lead", params={"group_by": "campaign", **NOVEMBER_2}
        )
        assert speed.json()["groups"] == SPEED_BY_CAMPAIGN

        # The latest grade (W2 re-scored A), the latest owner (W4 reassigned to anna).
        grades = await http.get("/v1/kpis/funnel", params={"group_by": "fit_grade", **NOVEMBER_2})
        assert by_group(grades.json()["groups"], "leads") == {"A": 6, "B": 2, "C": 2, "D": 1}
        assert by_group(grades.json()["groups"], "won") == {"A": 3, "B": 0, "C": 0, "D": 0}
        reps = await http.get("/v1/kpis/funnel", params={"group_by": "rep", **NOVEMBER_2})
        assert by_group(reps.json()["groups"], "leads") == {ANNA: 4, BEN: 2, CARA: 3, None: 2}
        teams = await http.get("/v1/kpis/funnel", params={"group_by": "team", **NOVEMBER_2})
        assert by_group(teams.json()["groups"], "leads") == {ENTERPRISE: 5, INBOUND: 5, None: 1}
        sources = await http.get("/v1/kpis/funnel", params={"group_by": "source", **NOVEMBER_2})
        assert by_group(sources.json()["groups"], "leads") == {
            "hubspot": 4,
            "linkedin": 3,
            "partner": 1,  # E4's only known source, from the later lead.created
            "website": 3,
        }


async def all_seen(
    stack: Stack,
    http: httpx.AsyncClient,
    path: str,
    params: dict[str, str],
    done: Callable[[Any], bool],
) -> Any:
    """A report once every lead's events are in (produced here if the test runs on its own)."""
    if not stack.seeded:
        await seed(stack, early_records() + later_records())
    return await settled(http, path, params, done)


async def test_reports_come_as_csv_and_bad_queries_get_a_problem(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.feedback, timeout=10) as http:
        await all_seen(
            stack, http, "/v1/kpis/revenue", NOVEMBER_2, lambda g: g == REVENUE_BY_CAMPAIGN
        )
        as_csv = await http.get("/v1/kpis/revenue", params={**NOVEMBER_2, "format": "csv"})
        assert as_csv.status_code == 200
        assert as_csv.headers["content-type"].startswith("text/csv")
        assert as_csv.text.splitlines() == [
            "campaign,leads,won,revenue",
            f"{EBOOK},4,1,50000.0",
            f"{WEBINAR},6,2,42000.5",
            ",1,0,0.0",
        ]
        accepted = await http.get(
            "/v1/kpis/reasons",
            params={"group_by": "rep", **NOVEMBER_2},
            headers={"accept": "text/csv"},
        )
        assert accepted.text.splitlines() == [
            "rep,kind,reason,count",
            f"{ANNA},disqualified,no_budget,1",
            f"{BEN},lost,competitor,1",
            f"{CARA},disqualified,no_need,1",
            f"{CARA},recycled,no_timeline,1",
        ]
        funnel = await http.get("/v1/kpis/funnel", params={**NOVEMBER_2, "format": "csv"})
        header, *rows = funnel.text.splitlines()
        assert header.split(",")[:3] == ["campaign", "leads", "mql"]
        assert len(rows) == 3

        for params, field in [
            ({"group_by": "country"}, "query.group_by"),
            ({"from": "last tuesday"}, "query.from"),
            ({"from": "2026-11-03", "to": "2026-11-02"}, "query.to"),
            ({"format": "xlsx"}, "query.format"),
            # out of range once in UTC: refused, not a server error
            ({"from": "0001-01-01T00:00:00+14:00"}, "query.from"),
            ({"to": "9999-12-31T23:59:59-14:00"}, "query.to"),
        ]:
            bad = await http.get("/v1/kpis/funnel", params=params)
            assert bad.status_code == 422, params
            assert bad.headers["content-type"] == "application/problem+json"
            assert [e["field"] for e in bad.json()["errors"]] == [field]
        bad = await http.get("/v1/kpis/reasons", params={"group_by": "fit_grade"})
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "query.group_by"


def merge_story(lead: Lead) -> list[Record]:
    """Every kind of event the projection merges, for one lead."""
    return [
        lead.created_event(at=lead.at(86400), campaign=WEBINAR, source="partner"),
        lead.created_event(),
        lead.scored("B"),
        lead.scored("A", seconds=86400),
        lead.queued(INBOUND, seconds=30),
        lead.assigned(BEN, INBOUND),
        lead.breached(BEN, INBOUND, assigned=60, seconds=3660),
        lead.assigned(ANNA, ENTERPRISE, seconds=3661),
        *lead.journey(
            ANNA,
            ENTERPRISE,
            Step(4000, S.ACCEPTED),
            Step(5000, S.CONTACTED),
            Step(6000, S.QUALIFIED),
            Step(7000, S.CONVERTED),
            Step(8000, S.LOST, reason="competitor"),
        ),
    ]


def grouped(events: list[CloudEvent[Any]], how: int) -> list[list[CloudEvent[Any]]]:
    """`events` as the projection's batch handlers may get them: one at a time (0), in runs
    of consecutive events of one type (1), or all events of a type together (2)."""
    if how == 0:
        return [[event] for event in events]
    if how == 1:
        return [list(run) for _, run in itertools.groupby(events, key=lambda e: e.type)]
    by_type: dict[str, list[CloudEvent[Any]]] = {}
    for event in events:
        by_type.setdefault(event.type, []).append(event)
    return list(by_type.values())


async def _merge_in_every_grouping(db: Database) -> tuple[list[tuple[Any, ...]], list[Lead]]:
    """Feed each of 31 leads' events to the projection's batch handlers on `db`: the first in
    the real order, the rest shuffled, grouped three ways; return each lead's row."""
    shuffler = random.Random(20261102)
    leads = [Lead(f"merge-{n}", T0, EBOOK, None) for n in range(31)]
    for n, one in enumerate(leads):
        events = [decode(value) for _, _, value in merge_story(one)]
        if n:
            shuffler.shuffle(events)
        async with db.unit_of_work() as uow:
            for group in grouped(events, n % 3):
                await project(uow, group)
    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT l.*, o.status, o.reason, o.amount, o.rep_id AS outcome_rep "
                    "FROM feedback.kpi_leads l JOIN feedback.kpi_outcomes o USING (lead_id)"
                )
            )
        ).mappings()
        states = [tuple((k, v) for k, v in row.items() if k != "lead_id") for row in rows]
    return states, leads


async def test_any_delivery_order_of_a_leads_events_ends_in_the_same_read_model_row(
    stack: Stack,
) -> None:
    """The projection's handlers on a real database of their own, fed one lead's events in
    30 random orders (as many leads), handed over one at a time, in runs of one type (as a
    consumed batch hands them), or all of a type at once: every order and grouping must end
    in the row and outcome of the real order."""
    with service_database(stack.database_url, "feedback") as url:
        db = Database(url, schema="feedback", source="/test")
        try:
            states, leads = await _merge_in_every_grouping(db)
        finally:
            await db.dispose()
    assert len(states) == len(leads)
    distinct = set(states)
    assert len(distinct) == 1, "the delivery order changed what the read model holds"
    row = dict(distinct.pop())
    assert (row["created_at"], row["campaign"], row["source"]) == (T0, EBOOK, "partner")
    assert (row["fit_grade"], row["stage"]) == ("A", Stage.CONVERTED)
    assert (row["team_id"], row["rep_id"]) == (ENTERPRISE, ANNA)
    assert (row["mql_at"], row["assigned_at"]) == (
        T0 + timedelta(seconds=30),
        T0 + timedelta(seconds=60),
    )
    assert row["touched_at"] == T0 + timedelta(seconds=5000)
    assert row["sla_breached_at"] == T0 + timedelta(seconds=3660)
    assert (row["status"], row["reason"], row["outcome_rep"]) == ("lost", "competitor", ANNA)


async def _read_model(database_url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every row of the KPI read model, in key order."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            leads = (
                await conn.execute(sa.text("SELECT * FROM feedback.kpi_leads ORDER BY lead_id"))
            ).all()
            outcomes = (
                await conn.execute(sa.text("SELECT * FROM feedback.kpi_outcomes ORDER BY event_id"))
            ).all()
    finally:
        await engine.dispose()
    return [tuple(row) for row in leads], [tuple(row) for row in outcomes]


async def test_a_rebuild_from_the_topics_ends_in_the_read_model_the_consumer_built(
    stack: Stack,
) -> None:
    """`rebuild-kpis` empties a damaged read model and replays the topics into it, ending in
    the rows the running consumer built; a lead whose events are produced as the rebuild
    starts (the consumer applies them while it runs, or after) ends complete too."""
    async with httpx.AsyncClient(base_url=stack.feedback, timeout=10) as http:
        by_campaign = {"group_by": "campaign", **NOVEMBER_2}
        await all_seen(
            stack, http, "/v1/kpis/funnel", by_campaign, lambda g: g == FUNNEL_BY_CAMPAIGN
        )
    built = await _read_model(stack.database_url)
    assert len(built[0]) == 12
    assert len(built[1]) >= 6
    engine = create_engine(stack.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "DELETE FROM feedback.kpi_leads WHERE lead_id IN "
                    "(SELECT lead_id FROM feedback.kpi_leads ORDER BY lead_id LIMIT 5)"
                )
            )
            await conn.execute(sa.text("UPDATE feedback.kpi_leads SET campaign = 'damaged'"))
            await conn.execute(sa.text("DELETE FROM feedback.kpi_outcomes WHERE status = 'won'"))
    finally:
        await engine.dispose()
    assert await _read_model(stack.database_url) != built

    settings = FeedbackSettings(
        database_url=stack.database_url, kafka_bootstrap_servers=stack.bootstrap
    )
    rebuilt = await rebuild_kpis(settings, chunk=7)  # several chunks
    assert await _read_model(stack.database_url) == built
    assert (rebuilt.leads, rebuilt.outcomes) == (len(built[0]), len(built[1]))
    assert rebuilt.unreadable == 0
    assert 0 < rebuilt.merged <= rebuilt.records

    late = Lead("late-1", T0 + timedelta(hours=5), WEBINAR, "website")
    late_records = [late.created_event(), late.scored("B"), late.assigned(CARA, INBOUND)]
    producing = asyncio.create_task(produce_in_order(stack.bootstrap, late_records))
    # This time as operators run it: the service's command, in a process of its own.
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "handoff_feedback",
        "rebuild-kpis",
        env={
            **os.environ,
            "DATABASE_URL": stack.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await within(command.communicate(), 120)
    await producing
    assert command.returncode == 0, err.decode()
    lines = [json.loads(line) for line in (out + err).decode().splitlines() if line.startswith("{")]
    done = [line for line in lines if line.get("event") == "KPI read model rebuilt"]
    assert len(done) == 1, lines
    assert done[0]["leads"] >= len(built[0])
    async with httpx.AsyncClient(base_url=stack.feedback, timeout=10) as http:
        teams = await settled(
            http,
            "/v1/kpis/funnel",
            {"group_by": "rep", **NOVEMBER_2},
            lambda g: by_group(g, "assigned").get(CARA) == 4,
        )
    assert by_group(teams, "leads")[CARA] == 4
    leads, outcomes = await _read_model(stack.database_url)
    assert outcomes == built[1]
    assert [row for row in leads if row[0] != late.id] == built[0]
