"""All of feedback's SQL."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from .models import HistoryEntry, TrackedLead


class FeedbackRepository:
    """Reads and writes tracked leads and their history in one session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, row: TrackedLead | HistoryEntry) -> None:
        """Stage a new row in the transaction."""
        self.session.add(row)

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
