"""Feedback's HTTP API: signed status reports from the CRM and each lead's history."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictFloat

from handoff_runtime.db import Database, UnitOfWork
from handoff_runtime.intake import json_body, respond_once
from handoff_runtime.problems import NotFound
from handoff_runtime.service import database, runtime_of
from handoff_runtime.webhooks import Delivery, parse_body, signed_delivery
from handoff_schemas import Instant, LeadStatus, utcnow

from . import service
from .lifecycle import Policy, Reason, Report
from .repository import FeedbackRepository
from .settings import FeedbackSettings

router = APIRouter(prefix="/v1")
Db = Annotated[Database, Depends(database)]
Signed = Annotated[Delivery, Depends(signed_delivery)]


async def _policy(request: Request) -> Policy:
    settings = runtime_of(request).settings
    assert isinstance(settings, FeedbackSettings)
    return settings.policy()


LifecyclePolicy = Annotated[Policy, Depends(_policy)]


class StatusChange(BaseModel):
    """A status change reported by the CRM."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "status": "disqualified",
                    "reason": "no_budget",
                    "note": "Budget frozen until next fiscal year.",
                    "occurred_at": "2026-11-20T14:05:00Z",
                    "actor": "rep_0412",
                },
                {"status": "won", "amount": 48000, "occurred_at": "2026-11-21T09:30:00Z"},
            ]
        }
    }

    status: LeadStatus
    reason: Reason | None = Field(
        default=None, description="Required to disqualify, recycle or lose; `other` needs a note."
    )
    note: str | None = Field(default=None, max_length=2000)
    amount: StrictFloat | None = Field(
        default=None, ge=0, le=1e12, description="The amount won (only with status won)."
    )
    actor: str | None = Field(default=None, max_length=200, description="Who made the change.")
    rep_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="The rep the report is about: the lead's owner as the CRM knows it "
        "(the `rep_id` of its `lead.assigned`). Optional. When feedback has not seen the lead "
        "assigned to that rep yet (a reassignment still on its way), the report waits for "
        "that assignment (202 pending) instead of being applied to the previous owner's; a "
        "report about an earlier owner of the lead is kept as `late`.",
    )
    occurred_at: Instant | None = Field(
        default=None,
        description="When it happened in the CRM (default: now). Decides which of two "
        "reports is the later one; a report older than the lead's status never moves it back.",
    )


class StatusReceived(BaseModel):
    """What a status report did, and where the lead stands now."""

    lead_id: str
    disposition: str = Field(
        description="applied: the lead moved; late: older than the lead's current status, "
        "or about a rep who no longer owns the lead, kept in the history only; duplicate: the "
        "lead already has this status; pending: the lead is not assigned yet (or not to the "
        "rep the report names), the report is applied once it is (202)."
    )
    status: str = Field(description="The lead's status now.")
    cycle: int
    rep_id: str | None
    team_id: str | None
    status_at: datetime | None = Field(description="When the current status was reported.")


class HistoryItem(BaseModel):
    """One step of a lead's story: who, when, why, and what it did."""

    from_status: str | None
    to_status: str
    reason: str | None
    note: str | None
    actor: str | None
    rep_id: str | None
    amount: Decimal | None
    occurred_at: datetime
    recorded_at: datetime
    disposition: str
    cycle: int


class PendingItem(BaseModel):
    """A status report waiting for the lead's assignment (to the rep it names, if any)."""

    change: dict[str, Any]
    received_at: datetime


class LeadHistory(BaseModel):
    """A lead's lifecycle: every status with who, when and why."""

    lead_id: str
    status: str
    cycle: int
    rep_id: str | None
    team_id: str | None
    status_at: datetime | None
    updated_at: datetime
    history: list[HistoryItem]
    pending: list[PendingItem]


_STATUS_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": StatusReceived, "description": "Kept until the lead is assigned"},
    401: {"description": "Missing or invalid signature, or unknown webhook source"},
    404: {"description": "Feedback has not seen this lead"},
    409: {
        "description": "Not allowed from the lead's status (`allowed` lists what is), or a "
        "delivery id reused with another body"
    },
    413: {"description": "Body larger than the configured limit"},
    422: {"description": "Invalid body; each bad field is named"},
}


@router.post(
    "/leads/{lead_id}/status",
    response_model=StatusReceived,
    tags=["lifecycle"],
    summary="Report a lead's status from the CRM",
    responses=_STATUS_RESPONSES,
    openapi_extra=json_body(StatusChange, description="The change, signed per Standard Webhooks."),
)
async def post_status(
    lead_id: str, delivery: Signed, db: Db, policy: LifecyclePolicy
) -> JSONResponse:
    """Move a lead in its lifecycle. A repeated delivery (same `webhook-id`) gets the first
    answer; a report older than the lead's current status is kept as `late`; one for a lead
    not yet assigned, or naming a rep the lead is not yet assigned to, waits for the
    assignment (202). 409 lists the allowed statuses."""
    change = parse_body(StatusChange, delivery.body)
    report = Report(
        status=change.status,
        occurred_at=change.occurred_at or utcnow(),
        reason=change.reason,
        note=change.note,
        amount=change.amount,
        rep_id=change.rep_id,
    )

    async def receive(uow: UnitOfWork) -> StatusReceived:
        outcome = await service.report_status(
            uow,
            lead_id,
            report,
            actor=change.actor,
            delivery_id=delivery.key,
            policy=policy,
        )
        lead = outcome.lead
        return StatusReceived(
            lead_id=lead.lead_id,
            disposition=outcome.disposition,
            status=lead.status,
            cycle=lead.cycle,
            rep_id=lead.rep_id,
            team_id=lead.team_id,
            status_at=lead.status_at,
        )

    def status_code(received: Any) -> int:
        pending = received.disposition == service.PENDING
        return status.HTTP_202_ACCEPTED if pending else status.HTTP_200_OK

    return await respond_once(
        db, delivery, status_code, receive, outcome=lambda r: getattr(r, "disposition", "")
    )


@router.get("/leads/{lead_id}/history", response_model=LeadHistory, tags=["lifecycle"])
async def get_history(lead_id: str, db: Db) -> LeadHistory:
    """Every status the lead has had, with who, when and why — including late and duplicate
    reports (by `disposition`) and reports waiting for the assignment."""
    async with db.unit_of_work() as uow:
        repo = FeedbackRepository(uow)
        lead = await repo.lead(lead_id)
        if lead is None:
            raise NotFound(f"feedback has not seen lead {lead_id}")
        history = await repo.history(lead_id)
        pending = await repo.pending(lead_id, lock=False)
        return LeadHistory(
            lead_id=lead.lead_id,
            status=lead.status,
            cycle=lead.cycle,
            rep_id=lead.rep_id,
            team_id=lead.team_id,
            status_at=lead.status_at,
            updated_at=lead.updated_at,
            history=[HistoryItem.model_validate(h, from_attributes=True) for h in history],
            pending=[PendingItem.model_validate(p, from_attributes=True) for p in pending],
        )
