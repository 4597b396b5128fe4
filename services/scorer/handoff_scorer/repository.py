"""All of the scorer's SQL."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from .models import IcpVersion, Lead, LeadScore


class ScorerRepository:
    """Reads and writes leads, scores and ICP versions in one session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_lead(self, lead_id: str, *, for_update: bool = False) -> Lead | None:
        """The lead with this id, optionally locked for the rest of the transaction."""
        query = select(Lead).where(Lead.id == lead_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalars().first()

    def add(self, row: Lead | LeadScore | IcpVersion) -> None:
        """Stage a new row in the transaction."""
        self.session.add(row)

    async def flush(self) -> None:
        """Send staged rows to the database (to surface constraint errors early)."""
        await self.session.flush()

    async def score_history(self, lead_id: str) -> Sequence[LeadScore]:
        """Every scoring of a lead, newest first."""
        query = (
            select(LeadScore)
            .where(LeadScore.lead_id == lead_id)
            .order_by(col(LeadScore.scored_at).desc(), col(LeadScore.id).desc())
        )
        return (await self.session.execute(query)).scalars().all()

    async def current_icp(self) -> IcpVersion | None:
        """The highest published ICP version, if any."""
        query = select(IcpVersion).order_by(col(IcpVersion.version).desc()).limit(1)
        return (await self.session.execute(query)).scalars().first()

    async def icp_versions(self) -> Sequence[IcpVersion]:
        """Every published ICP version, newest first."""
        query = select(IcpVersion).order_by(col(IcpVersion.version).desc())
        return (await self.session.execute(query)).scalars().all()
