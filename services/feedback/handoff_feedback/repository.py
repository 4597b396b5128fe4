"""All of feedback's lifecycle SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from .models import HistoryEntry, PendingStatus, TrackedLead


class FeedbackRepository:
    """Reads and writes tracked leads, their history and waiting reports in one session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, row: TrackedLead | HistoryEntry | PendingStatus) -> None:
        """Stage a new row in the transaction."""
        self.session.add(row)

    async def delete(self, row: PendingStatus) -> None:
        """Remove a row in the transaction."""
        await self.session.delete(row)

    async def lead(self, lead_id: str, *, for_update: bool = False) -> TrackedLead | None:
        """A tracked lead, optionally locked until the transaction ends."""
        return await self.session.get(
            TrackedLead, lead_id, with_for_update=for_update, populate_existing=True
        )

    async def history(self, lead_id: str) -> Sequence[HistoryEntry]:
        """A lead's history in the order it happened."""
        query = (
            select(HistoryEntry)
            .where(HistoryEntry.lead_id == lead_id)
            .order_by(col(HistoryEntry.occurred_at), col(HistoryEntry.id))
        )
        return (await self.session.execute(query)).scalars().all()

    async def has_history(self, lead_id: str, to_status: str) -> bool:
        """Whether the lead's history has a step to `to_status`."""
        query = select(HistoryEntry.id).where(
            HistoryEntry.lead_id == lead_id, HistoryEntry.to_status == to_status
        )
        return (await self.session.execute(query.limit(1))).first() is not None

    async def pending(self, lead_id: str, *, lock: bool = True) -> Sequence[PendingStatus]:
        """Status reports waiting for the lead's assignment, oldest first (by occurred_at)."""
        query = (
            select(PendingStatus)
            .where(PendingStatus.lead_id == lead_id)
            .order_by(col(PendingStatus.id))
        )
        if lock:
            query = query.with_for_update()
        rows = (await self.session.execute(query)).scalars().all()
        return sorted(rows, key=lambda row: datetime.fromisoformat(row.change["occurred_at"]))
