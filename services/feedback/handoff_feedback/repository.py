"""All of feedback's lifecycle SQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select

from handoff_runtime.db import UnitOfWork

from .models import SCHEMA, HistoryEntry, PendingStatus, TrackedLead

HISTORY: sa.Table = HistoryEntry.__table__  # type: ignore[attr-defined]
"""The history table, whose rows are staged in the unit of work."""

LEAD_STATE = ("status", "rep_id", "team_id", "updated_at", "cycle", "status_at")
"""The columns of a tracked lead that its lifecycle changes."""

# One statement text for any number of leads (arrays, not a VALUES list per size).
UPDATE_LEADS = sa.text(
    f"UPDATE {SCHEMA}.leads AS lead SET status = changed.status, rep_id = changed.rep_id,"
    " team_id = changed.team_id, updated_at = changed.updated_at, cycle = changed.cycle,"
    " status_at = changed.status_at"
    " FROM unnest(CAST(:lead_id AS text[]), CAST(:status AS text[]),"
    " CAST(:rep_id AS text[]), CAST(:team_id AS text[]),"
    " CAST(:updated_at AS timestamptz[]), CAST(:cycle AS int4[]),"
    " CAST(:status_at AS timestamptz[]))"
    " AS changed(lead_id, status, rep_id, team_id, updated_at, cycle, status_at)"
    " WHERE lead.lead_id = changed.lead_id"
)


class FeedbackRepository:
    """Reads and writes tracked leads, their history and waiting reports in one unit of
    work. History is append-only: its rows are staged in the unit of work (no ORM object
    each) and written before any read of the history in the same transaction."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.session = uow.session

    def add(self, row: TrackedLead | PendingStatus) -> None:
        """Stage a new row in the transaction."""
        self.session.add(row)

    def add_history(self, entry: dict[str, Any]) -> None:
        """Stage a step of a lead's history: every column of `history` but its id."""
        self.uow.append(HISTORY, entry)

    async def save_changed(self, leads: Iterable[TrackedLead]) -> int:
        """Write, in one statement, those of `leads` already in the table whose state changed
        since they were read, and mark them saved in the session. The ORM would flush them
        one `UPDATE` per lead (asyncpg reports no row counts for a batch of updates, so the
        ORM sends each alone to check it). New leads are left to the ORM's batched insert.
        Returns how many were written."""
        changed = [
            lead for lead in leads if sa.inspect(lead).persistent and self.session.is_modified(lead)
        ]
        if not changed:
            return 0
        # Each bind parameter is one column's values, in the order of `changed`.
        columns = {
            name: [getattr(lead, name) for lead in changed] for name in ("lead_id", *LEAD_STATE)
        }
        # Without an autoflush first: it would send the very per-lead updates this replaces.
        with self.session.no_autoflush:
            await self.session.execute(UPDATE_LEADS, columns)
        for lead in changed:
            for name in LEAD_STATE:
                set_committed_value(lead, name, getattr(lead, name))
        return len(changed)

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
        await self.uow.write_staged()
        query = (
            select(HistoryEntry)
            .where(HistoryEntry.lead_id == lead_id)
            .order_by(col(HistoryEntry.occurred_at), col(HistoryEntry.id))
        )
        return (await self.session.execute(query)).scalars().all()

    async def leads(
        self, lead_ids: Sequence[str], *, for_update: bool = False
    ) -> dict[str, TrackedLead]:
        """The tracked leads among `lead_ids`, by id; locked in id order if asked."""
        query = (
            select(TrackedLead)
            .where(col(TrackedLead.lead_id).in_(sorted(set(lead_ids))))
            .order_by(col(TrackedLead.lead_id))
            .execution_options(populate_existing=True)
        )
        if for_update:
            query = query.with_for_update()
        return {lead.lead_id: lead for lead in (await self.session.execute(query)).scalars()}

    async def with_history(self, lead_ids: Sequence[str], to_status: str) -> set[str]:
        """Those of `lead_ids` whose history has a step to `to_status`."""
        await self.uow.write_staged()
        query = (
            select(HistoryEntry.lead_id)
            .where(col(HistoryEntry.lead_id).in_(set(lead_ids)))
            .where(HistoryEntry.to_status == to_status)
            .distinct()
        )
        return set((await self.session.execute(query)).scalars())

    async def pending(self, lead_id: str, *, lock: bool = True) -> Sequence[PendingStatus]:
        """Status reports waiting for the lead's assignment, oldest first (by occurred_at)."""
        return (await self.pending_for([lead_id], lock=lock)).get(lead_id, [])

    async def pending_for(
        self, lead_ids: Sequence[str], *, lock: bool = True
    ) -> dict[str, list[PendingStatus]]:
        """Status reports waiting for the assignment of any of `lead_ids`, by lead, each
        lead's oldest first (by occurred_at)."""
        query = (
            select(PendingStatus)
            .where(col(PendingStatus.lead_id).in_(set(lead_ids)))
            .order_by(col(PendingStatus.id))
        )
        if lock:
            query = query.with_for_update()
        waiting: dict[str, list[PendingStatus]] = {}
        for row in (await self.session.execute(query)).scalars():
            waiting.setdefault(row.lead_id, []).append(row)
        for rows in waiting.values():
            rows.sort(key=lambda row: datetime.fromisoformat(row.change["occurred_at"]))
        return waiting
