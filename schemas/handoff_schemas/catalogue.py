"""The one place that names every topic and every event type, with producers and consumers.

Services import topic names and event models from here and nowhere else; the JSON Schema
files and the AsyncAPI document in `schemas/` are generated from this catalogue.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from .events import (
    CapacityChangedV1,
    IcpPublishedV1,
    LeadAssignedV1,
    LeadCreatedV1,
    LeadEscalatedV1,
    LeadNurtureRequestedV1,
    LeadQueuedV1,
    LeadScoredV1,
    LeadSlaBreachedV1,
    LeadStatusChangedV1,
)


@dataclass(frozen=True)
class Topic:
    """A Kafka topic: its name, partitions, retention, cleanup policy and who writes and reads
    it.

    `partitions` is also the most members of one consumer group that get work: a group member
    beyond it is assigned nothing (deploy/CAPACITY.md). `retention_ms` of -1 keeps records
    for ever."""

    name: str
    description: str
    partitions: int
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    retention_ms: int = 7 * 24 * 3600 * 1000
    key: str = "lead id"
    cleanup_policy: Literal["delete", "compact", "compact,delete"] = "delete"

    def configs(self) -> dict[str, str]:
        """The topic-level Kafka configs it is created with."""
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


@dataclass(frozen=True)
class EventType:
    """A versioned CloudEvents type and the payload model of its `data`."""

    type: str
    model: builtins.type[BaseModel]
    topics: tuple[str, ...]
    producers: tuple[str, ...]
    description: str = field(default="")


LEAD_CREATED = Topic(
    "handoff.lead.created",
    "Leads as received, from the scorer's webhook intake or any producer.",
    partitions=3,
    producers=("scorer", "marketing automation"),
    consumers=("scorer", "feedback"),
)
LEAD_SCORED = Topic(
    "handoff.lead.scored",
    "Leads scored against the current ICP, with the explanation of every score.",
    partitions=3,
    producers=("scorer",),
    consumers=("router", "feedback"),
)
LEAD_ROUTING = Topic(
    "handoff.lead.routing",
    "Routing outcomes: assigned to a rep, queued in a backlog, or sent to nurture.",
    partitions=3,
    producers=("router",),
    consumers=("feedback", "CRM", "marketing automation"),
)
LEAD_STATUS = Topic(
    "handoff.lead.status",
    "The lead lifecycle as sales reports it, and nurture requests for marketing.",
    partitions=3,
    producers=("feedback",),
    consumers=("router", "scorer", "feedback", "marketing automation"),
)

ICP = Topic(
    "handoff.icp",
    "Published versions of the ideal customer profile, so both teams see what changed.",
    partitions=1,
    producers=("scorer",),
    consumers=("marketing automation", "CRM"),
    retention_ms=365 * 24 * 3600 * 1000,
    key="ICP version",
)
CAPACITY = Topic(
    "handoff.capacity",
    "Sales capacity headroom per team: an event each time a team's level (ok, busy, "
    "saturated) changes, so marketing can pace campaigns to what sales can absorb.",
    partitions=3,
    producers=("router",),
    consumers=("marketing automation",),
    key="team id",
)

TOPICS: tuple[Topic, ...] = (LEAD_CREATED, LEAD_SCORED, LEAD_ROUTING, LEAD_STATUS, ICP, CAPACITY)


def dead_letter_topic(service: str) -> Topic:
    """The dead-letter topic of one consuming service (its messages that could not be processed)."""
    return Topic(
        f"handoff.dlq.{service}",
        f"Messages {service} could not process after bounded retries, with headers naming "
        "the original topic, partition, offset, error and attempt count.",
        partitions=1,
        producers=(service,),
        consumers=("operators",),
        retention_ms=30 * 24 * 3600 * 1000,
        key="original key",
    )


SERVICES = ("scorer", "router", "feedback")
DEAD_LETTER_TOPICS: tuple[Topic, ...] = tuple(dead_letter_topic(s) for s in SERVICES)

BROKER_EPOCH = Topic(
    "handoff.broker-epoch",
    "Internal: its first record names the broker's incarnation; a service that finds a "
    "different one knows the broker lost its log. Kept for ever: were offset 0 deleted by "
    "retention, no service could read the epoch and none would start.",
    partitions=1,
    producers=SERVICES,
    consumers=SERVICES,
    retention_ms=-1,
    key="none",
)
INTERNAL_TOPICS: tuple[Topic, ...] = (BROKER_EPOCH,)
"""Topics the runtime uses for itself: not event contracts, but created with the rest."""

EVENTS: tuple[EventType, ...] = (
    EventType(
        "handoff.lead.created.v1",
        LeadCreatedV1,
        (LEAD_CREATED.name,),
        ("scorer", "marketing automation"),
        "A lead entered Handoff.",
    ),
    EventType(
        "handoff.lead.scored.v1",
        LeadScoredV1,
        (LEAD_SCORED.name,),
        ("scorer",),
        "A lead was scored against an ICP version, with per-criterion explanation.",
    ),
    EventType(
        "handoff.lead.assigned.v1",
        LeadAssignedV1,
        (LEAD_ROUTING.name,),
        ("router",),
        "A rep with room now owns the lead.",
    ),
    EventType(
        "handoff.lead.queued.v1",
        LeadQueuedV1,
        (LEAD_ROUTING.name,),
        ("router",),
        "No eligible rep has room; the lead waits in the backlog.",
    ),
    EventType(
        "handoff.lead.nurture_requested.v1",
        LeadNurtureRequestedV1,
        (LEAD_ROUTING.name, LEAD_STATUS.name),
        ("router", "feedback"),
        "Sales will not work the lead now (low fit, no capacity, or a nurturable reason "
        "from sales); marketing should nurture it until the re-qualify date.",
    ),
    EventType(
        "handoff.lead.sla_breached.v1",
        LeadSlaBreachedV1,
        (LEAD_ROUTING.name,),
        ("router",),
        "The owner missed the first-touch deadline; the lead is taken away and reassigned.",
    ),
    EventType(
        "handoff.lead.escalated.v1",
        LeadEscalatedV1,
        (LEAD_ROUTING.name,),
        ("router",),
        "The lead keeps missing first-touch deadlines; the team manager is named.",
    ),
    EventType(
        "handoff.lead.status_changed.v1",
        LeadStatusChangedV1,
        (LEAD_STATUS.name,),
        ("feedback",),
        "Sales moved the lead in its lifecycle.",
    ),
    EventType(
        "handoff.icp.published.v1",
        IcpPublishedV1,
        (ICP.name,),
        ("scorer",),
        "A new ICP version is in force; every later score names the version it used.",
    ),
    EventType(
        "handoff.capacity.changed.v1",
        CapacityChangedV1,
        (CAPACITY.name,),
        ("router",),
        "A team's capacity level changed: marketing should speed up or slow down the "
        "campaigns that feed it.",
    ),
)

EVENTS_BY_TYPE: dict[str, EventType] = {e.type: e for e in EVENTS}
TOPICS_BY_NAME: dict[str, Topic] = {t.name: t for t in (*TOPICS, *DEAD_LETTER_TOPICS)}


def event_type_of(model: type[BaseModel]) -> EventType:
    """The catalogue entry whose payload is `model` (one model, one event type)."""
    for event in EVENTS:
        if event.model is model:
            return event
    raise KeyError(f"{model.__name__} is not a catalogued event payload")
