"""All of the scorer's SQL."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from handoff_runtime.db import written_staged
from handoff_runtime.intake import (
    as_arrays,
    first_deliveries,
    first_deliveries_statement,
    key_unclaimed,
)
from handoff_runtime.tables import RuntimeTables

from .models import SCHEMA, IcpVersion, Lead, LeadScore, RescoreJob

LEAD_SCORES: sa.Table = LeadScore.__table__  # type: ignore[attr-defined]
"""The lead_scores table, whose rows are staged in the unit of work."""

# One statement text for any number of leads (arrays, not a VALUES list per size).
INSERT_NEW_LEADS = sa.text(
    f"INSERT INTO {SCHEMA}.leads AS lead (id, email, profile, received_at, status, cycle)"
    " SELECT id, email, CAST(profile AS jsonb), received_at, 'received', 1 FROM unnest("
    " CAST(:id AS text[]), CAST(:email AS text[]), CAST(:profile AS text[]),"
    " CAST(:received_at AS timestamptz[])) AS new(id, email, profile, received_at)"
    " ON CONFLICT (email) DO NOTHING RETURNING lead.email"
)


@functools.cache
def new_leads_first_delivery(tables: RuntimeTables) -> sa.Select[Any]:
    """New people's first deliveries in one statement (built once per schema's tables): for
    each delivery, the lead (unless the person is known or the key already claimed), the key
    claimed with its answer (only with the lead), and the lead.created outbox row (only with
    both). Binds one array each of `lead_id`, `email`, `profile` (JSON text) and
    `received_at`, and of the runtime's `first_delivery_values`; selects per delivery its
    `key`, `created` and `announced`."""
    leads = Lead.__table__  # type: ignore[attr-defined]
    delivery = first_deliveries(
        tables,
        [
            ("lead_id", leads.c.id.type),
            ("email", leads.c.email.type),
            ("profile", sa.Text()),
            ("received_at", leads.c.received_at.type),
        ],
    )
    lead = (
        insert(leads)
        .from_select(
            ["id", "email", "profile", "received_at", "status", "cycle"],
            sa.select(
                delivery.c.lead_id,
                delivery.c.email,
                sa.cast(delivery.c.profile, JSONB),
                delivery.c.received_at,
                sa.literal("received", leads.c.status.type),
                sa.literal(1, leads.c.cycle.type),
            ).where(key_unclaimed(tables, delivery)),
        )
        .on_conflict_do_nothing(index_elements=["email"])
        .returning(leads.c.id)
        .cte("lead")
    )
    return first_deliveries_statement(tables, delivery, lead, lead.c.id == delivery.c.lead_id)


class ScorerRepository:
    """Reads and writes leads, scores and ICP versions in one session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_lead(self, lead_id: str, *, for_update: bool = False) -> Lead | None:
        """The lead with this id, optionally locked for the rest of the transaction."""
        query = select(Lead).where(Lead.id == lead_id).execution_options(populate_existing=True)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalars().first()

    async def get_leads(
        self, lead_ids: Sequence[str], *, for_update: bool = False
    ) -> dict[str, Lead]:
        """The leads with these ids (those that exist), by id; locked in id order if asked."""
        leads = await self._leads(col(Lead.id), lead_ids, for_update=for_update)
        return {lead.id: lead for lead in leads}

    async def _leads(
        self, column: Any, values: Sequence[str], *, for_update: bool
    ) -> Sequence[Lead]:
        """The leads whose `column` is one of `values`, in its order (and locked in it, if
        asked: concurrent transactions then lock in the same order)."""
        if not values:
            return []
        query = (
            select(Lead)
            .where(column.in_(sorted(set(values))))
            .order_by(column)
            .execution_options(populate_existing=True)
        )
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalars().all()

    async def get_lead_by_email(self, email: str, *, for_update: bool = False) -> Lead | None:
        """The lead of the person with this (normalised) email."""
        query = select(Lead).where(Lead.email == email).execution_options(populate_existing=True)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalars().first()

    async def get_leads_by_email(
        self, emails: Sequence[str], *, for_update: bool = False
    ) -> dict[str, Lead]:
        """The leads of the people with these (normalised) emails, by email; locked in email
        order if asked."""
        leads = await self._leads(col(Lead.email), emails, for_update=for_update)
        return {lead.email: lead for lead in leads}

    async def insert_leads_if_new(self, rows: Sequence[dict[str, Any]]) -> set[str]:
        """Insert, in the order given, the leads whose email no lead has yet (one dict each of
        `id`, `email`, `profile` as JSON text and `received_at`); the emails inserted."""
        inserted = await self.session.execute(
            INSERT_NEW_LEADS,
            {
                name: [row[name] for row in rows]
                for name in ("id", "email", "profile", "received_at")
            },
        )
        return set(inserted.scalars())

    async def insert_lead_if_new(
        self, *, lead_id: str, email: str, profile: dict[str, Any], received_at: datetime
    ) -> Lead | None:
        """Insert a lead unless one with this email exists; the new lead, or None."""
        inserted = await self.session.scalars(
            insert(Lead)
            .values(
                id=lead_id,
                email=email,
                profile=profile,
                received_at=received_at,
                status="received",
            )
            .on_conflict_do_nothing(index_elements=["email"])
            .returning(Lead),
            execution_options={"populate_existing": True},
        )
        return inserted.first()

    async def insert_new_leads_first_delivery(
        self, tables: RuntimeTables, rows: Sequence[dict[str, Any]]
    ) -> dict[str, tuple[bool, bool]]:
        """Run `new_leads_first_delivery` for `rows` (one dict of values per delivery, keys
        distinct); whether each delivery's lead was inserted and its event announced, by
        key."""
        result = await self.session.execute(new_leads_first_delivery(tables), as_arrays(rows))
        return {key: (bool(created), bool(announced)) for key, created, announced in result}

    async def delete_leads(self, lead_ids: Sequence[str]) -> None:
        """Remove leads written earlier in this transaction that must not stay."""
        await self.session.execute(sa.delete(Lead).where(col(Lead.id).in_(lead_ids)))

    def add(self, row: Lead | IcpVersion | RescoreJob) -> None:
        """Stage a new row in the transaction."""
        self.session.add(row)

    async def flush(self) -> None:
        """Send staged rows to the database (to surface constraint errors early)."""
        await self.session.flush()

    async def score_history(self, lead_id: str) -> Sequence[LeadScore]:
        """Every scoring of a lead, newest first, including those this transaction staged
        (`UnitOfWork.append`), which are written first."""
        await written_staged(self.session)
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

    async def icp_version(self, version: int) -> IcpVersion | None:
        """One ICP version."""
        return await self.session.get(IcpVersion, version)

    async def count_scored_leads(self) -> int:
        """How many open leads (not closed by sales) have a score."""
        query = (
            sa.select(sa.func.count())
            .select_from(Lead)
            .where(col(Lead.status) == "scored", col(Lead.outcome).is_(None))
        )
        return int(await self.session.scalar(query) or 0)

    async def scored_leads_after(self, cursor: str | None, *, limit: int) -> Sequence[Lead]:
        """Open scored leads with an id after `cursor`, in id order, locked for re-scoring."""
        query = (
            select(Lead)
            .where(col(Lead.status) == "scored", col(Lead.outcome).is_(None))
            .order_by(col(Lead.id))
            .limit(limit)
        )
        if cursor is not None:
            query = query.where(col(Lead.id) > cursor)
        result = await self.session.execute(
            query.with_for_update().execution_options(populate_existing=True)
        )
        return result.scalars().all()

    async def next_running_job(self) -> RescoreJob | None:
        """The oldest running re-score job nobody else is advancing right now."""
        query = (
            select(RescoreJob)
            .where(RescoreJob.state == "running")
            .order_by(col(RescoreJob.created_at))
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.execute(query)).scalars().first()

    async def rescore_job(self, job_id: str) -> RescoreJob | None:
        """One re-score job."""
        return await self.session.get(RescoreJob, job_id, populate_existing=True)

    async def icp_versions(self) -> Sequence[IcpVersion]:
        """Every published ICP version, newest first."""
        query = select(IcpVersion).order_by(col(IcpVersion.version).desc())
        return (await self.session.execute(query)).scalars().all()
