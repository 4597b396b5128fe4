"""Feedback's HTTP API: status changes from the CRM and each lead's history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import AwareDatetime, BaseModel, Field

from handoff_runtime.db import Database
from handoff_runtime.problems import NotFound
from handoff_runtime.service import database
from handoff_schemas import LeadStatus

from . import service
from .lifecycle import Reason
from .repository import FeedbackRepository

router = APIRouter(prefix="/v1")
Db = Annotated[Database, Depends(database)]


class StatusChange(BaseModel):
    """A status change reported by the CRM."""

    status: LeadStatus
    reason: Reason | None = Field(
        default=None, description="Required to disqualify, recycle or lose."
    )
    note: str | None = Field(default=None, max_length=2000)
    actor: str | None = Field(default=None, max_length=200, description="Who made the change.")
    occurred_at: AwareDatetime | None = Field(default=None, description="When; default now.")


class LeadState(BaseModel):
    """Where a lead stands in its lifecycle."""

    lead_id: str
    status: str
    rep_id: str | None
    team_id: str | None
    updated_at: datetime


class HistoryItem(BaseModel):
    """One step of a lead's story."""

    from_status: str | None
    to_status: str
    reason: str | None
    note: str | None
    actor: str | None
    rep_id: str | None
    occurred_at: datetime


class LeadHistory(LeadState):
    """A lead's lifecycle: every status with who, when and why."""

    history: list[HistoryItem]


@router.post(
    "/leads/{lead_id}/status",
    response_model=LeadState,
    tags=["lifecycle"],
    responses={404: {}, 409: {}, 422: {}},
)
async def post_status(lead_id: str, body: StatusChange, db: Db) -> LeadState:
    """Move a lead in its lifecycle. 409 lists the allowed statuses when the move is not."""
    async with db.unit_of_work() as uow:
        lead = await service.change_status(uow, lead_id, **body.model_dump())
        state = LeadState.model_validate(lead, from_attributes=True)
    return state


@router.get("/leads/{lead_id}/history", response_model=LeadHistory, tags=["lifecycle"])
async def get_history(lead_id: str, db: Db) -> LeadHistory:
    """Every status the lead has had, with who, when and why."""
    async with db.unit_of_work() as uow:
        repo = FeedbackRepository(uow.session)
        lead = await repo.lead(lead_id)
        if lead is None:
            raise NotFound(f"feedback has not seen lead {lead_id}")
        history = await repo.history(lead_id)
        return LeadHistory(
            **LeadState.model_validate(lead, from_attributes=True).model_dump(),
            history=[HistoryItem.model_validate(h, from_attributes=True) for h in history],
        )
