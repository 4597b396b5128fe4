"""All of the router's SQL."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from handoff_runtime.db import written_staged

from .models import Assignment, BacklogEntry, Decision, Rep, RoutedLead, RoutingRule, Team

DECISIONS: sa.Table = Decision.__table__  # type: ignore[attr-defined]
"""The decisions table, whose rows are staged in the unit of work."""

ACCOUNT_OWNERS = sa.text(
    """
    SELECT account.domain, owner.rep_id
    FROM unnest(:domains) AS account (domain)
    CROSS JOIN LATERAL (
        SELECT rep_id FROM router.assignments
        WHERE account_domain = account.domain
        ORDER BY active DESC, assigned_at DESC
        LIMIT 1
    ) AS owner
    """
).bindparams(sa.bindparam("domains", type_=ARRAY(sa.String)))


class RouterRepository:
    """Reads and writes teams, reps, assignments, the backlog and decisions in one session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        # The session's identity map holds rows weakly: a team nothing else refers to is
        # dropped as soon as its caller lets go, and reading it again costs a query, and the
        # autoflush of everything written since (per lead, in a routed batch). Teams are few
        # and never deleted: this repository keeps the ones it has read.
        self._teams_read: dict[str, Team] = {}

    def add(self, row: Any) -> None:
        """Stage a new row in the transaction."""
        self.session.add(row)

    async def flush(self) -> None:
        """Send staged changes to the database now."""
        await self.session.flush()

    async def lock_team(self, team_id: str) -> None:
        """Serialize every routing change of one team until the transaction ends, whichever
        router instance makes it: capacity checks and backlog drains then see each other."""
        key = zlib.crc32(f"handoff-router-team:{team_id}".encode())
        await self.session.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))

    async def teams(self) -> Sequence[Team]:
        """Every team, oldest first."""
        query = select(Team).order_by(col(Team.created_at), col(Team.id))
        return (await self.session.execute(query)).scalars().all()

    async def team(self, team_id: str) -> Team | None:
        """One team by id (teams are never deleted, so one read is good for the session)."""
        if (known := self._teams_read.get(team_id)) is not None:
            return known
        team = await self.session.get(Team, team_id)
        if team is not None:
            self._teams_read[team_id] = team
        return team

    async def default_team(self) -> Team | None:
        """The team leads go to when no rule picks another."""
        query = select(Team).order_by(col(Team.is_default).desc(), col(Team.created_at)).limit(1)
        return (await self.session.execute(query)).scalars().first()

    async def reps(self, team_id: str | None = None, *, for_update: bool = False) -> Sequence[Rep]:
        """Reps (of one team, or all), freshly read; locked when `for_update`."""
        query = select(Rep).order_by(col(Rep.team_id), col(Rep.id))
        if team_id is not None:
            query = query.where(Rep.team_id == team_id)
        if for_update:
            query = query.with_for_update()
        result = await self.session.execute(query.execution_options(populate_existing=True))
        return result.scalars().all()

    async def rep(self, rep_id: str, *, for_update: bool = False) -> Rep | None:
        """One rep by id, freshly read."""
        return await self.session.get(
            Rep, rep_id, with_for_update=for_update, populate_existing=True
        )

    async def rules(self) -> Sequence[RoutingRule]:
        """The routing rules in the order they are tried."""
        query = select(RoutingRule).order_by(col(RoutingRule.position))
        return (await self.session.execute(query)).scalars().all()

    async def replace_rules(self, rules: Sequence[RoutingRule]) -> None:
        """Make `rules` (already positioned) the whole ordered rule list."""
        await self.session.execute(sa.delete(RoutingRule))
        self.session.add_all(rules)
        await self.session.flush()

    async def assigned_today(self, team_id: str) -> dict[str, int]:
        """Per rep of the team with a daily cap: leads assigned since midnight in the rep's
        own time zone (a rep without a cap is not counted: nothing depends on it, and the
        count grows with every lead of the day)."""
        query = sa.text(
            """
            SELECT r.id, count(a.id)
            FROM router.reps r
            LEFT JOIN router.assignments a
              ON a.rep_id = r.id
             AND a.assigned_at >= (date_trunc('day', now() AT TIME ZONE r.timezone)
                                   AT TIME ZONE r.timezone)
            WHERE r.team_id = :team_id AND r.daily_cap IS NOT NULL
            GROUP BY r.id
            """
        )
        rows = (await self.session.execute(query, {"team_id": team_id})).all()
        return {rep_id: int(count) for rep_id, count in rows}

    async def due_first_touches(
        self, deadline_seconds: dict[str, float], *, limit: int
    ) -> list[int]:
        """Active assignments whose first-touch deadline (by the lead's grade) has passed
        without a touch, oldest first. Not locked: the caller re-checks under the team lock."""
        deadline = sa.case(
            *((col(RoutedLead.grade) == g, seconds) for g, seconds in deadline_seconds.items()),
            else_=None,
        )
        query = (
            sa.select(col(Assignment.id))
            .join(RoutedLead, col(RoutedLead.lead_id) == col(Assignment.lead_id))
            .where(
                col(Assignment.active),
                col(Assignment.first_touched_at).is_(None),
                col(Assignment.assigned_at) + sa.func.make_interval(0, 0, 0, 0, 0, 0, deadline)
                <= sa.func.now(),
            )
            .order_by(col(Assignment.assigned_at))
            .limit(limit)
        )
        return [i for i in (await self.session.execute(query)).scalars().all() if i is not None]

    async def account_owners(self, account_domains: Sequence[str]) -> dict[str, str]:
        """The rep who owns each account that has one: the owner of the account's current
        (else latest) assignment. One backward step through `assignments_account_owner` per
        account, whatever the account holds."""
        rows = await self.session.execute(ACCOUNT_OWNERS, {"domains": list(account_domains)})
        return {domain: rep_id for domain, rep_id in rows}

    async def teams_with_backlog(self) -> list[str]:
        """Teams with at least one queued lead."""
        query = sa.select(col(BacklogEntry.team_id)).distinct()
        return list((await self.session.execute(query)).scalars().all())

    async def queued_before(self, cutoff: datetime, *, limit: int) -> list[str]:
        """Leads queued before `cutoff`, oldest first (not locked; re-checked by the caller)."""
        query = (
            sa.select(col(BacklogEntry.lead_id))
            .where(col(BacklogEntry.queued_at) < cutoff)
            .order_by(col(BacklogEntry.queued_at))
            .limit(limit)
        )
        return list((await self.session.execute(query)).scalars().all())

    async def assignment(
        self, assignment_id: int, *, for_update: bool = False
    ) -> Assignment | None:
        """One assignment, freshly read."""
        return await self.session.get(
            Assignment, assignment_id, with_for_update=for_update, populate_existing=True
        )

    async def routed_lead(self, lead_id: str) -> RoutedLead | None:
        """Where a lead stands with the router, if it has seen it."""
        return await self.session.get(RoutedLead, lead_id, populate_existing=True)

    async def routed_leads(self, lead_ids: Sequence[str]) -> dict[str, RoutedLead]:
        """Where each of these leads stands with the router, by id (those it has seen)."""
        query = (
            select(RoutedLead)
            .where(col(RoutedLead.lead_id).in_(set(lead_ids)))
            .execution_options(populate_existing=True)
        )
        return {row.lead_id: row for row in (await self.session.execute(query)).scalars()}

    async def active_assignment(
        self, lead_id: str, *, for_update: bool = False
    ) -> Assignment | None:
        """The lead's current owner, if any."""
        query = select(Assignment).where(Assignment.lead_id == lead_id, col(Assignment.active))
        if for_update:
            query = query.with_for_update()
        result = await self.session.execute(query.execution_options(populate_existing=True))
        return result.scalars().first()

    async def queued_in_order(self, team_id: str, *, limit: int) -> Sequence[BacklogEntry]:
        """A team's queued leads in drain order: best grade, highest score, oldest."""
        query = (
            select(BacklogEntry)
            .where(BacklogEntry.team_id == team_id)
            .order_by(
                col(BacklogEntry.grade), col(BacklogEntry.score).desc(), col(BacklogEntry.queued_at)
            )
            .limit(limit)
        )
        return (await self.session.execute(query)).scalars().all()

    async def backlog_entry(self, lead_id: str) -> BacklogEntry | None:
        """A lead's place in the backlog, if it is queued."""
        return await self.session.get(BacklogEntry, lead_id)

    async def remove_from_backlog(self, entry: BacklogEntry) -> None:
        """Take a lead out of the backlog."""
        await self.session.delete(entry)

    async def backlog(self, team_id: str | None = None) -> Sequence[BacklogEntry]:
        """The backlog in the order it drains."""
        query = select(BacklogEntry).order_by(
            col(BacklogEntry.team_id),
            col(BacklogEntry.grade),
            col(BacklogEntry.score).desc(),
            col(BacklogEntry.queued_at),
        )
        if team_id is not None:
            query = query.where(BacklogEntry.team_id == team_id)
        return (await self.session.execute(query)).scalars().all()

    async def backlog_stats(self) -> dict[str, tuple[int, datetime | None]]:
        """Per team: how many leads wait and since when the oldest has waited."""
        query = sa.select(
            col(BacklogEntry.team_id), sa.func.count(), sa.func.min(col(BacklogEntry.queued_at))
        ).group_by(col(BacklogEntry.team_id))
        return {team: (n, oldest) for team, n, oldest in (await self.session.execute(query)).all()}

    async def decisions(self, lead_id: str) -> Sequence[Decision]:
        """Every routing decision about a lead, oldest first, including those this
        transaction staged (`UnitOfWork.append`), which are written first."""
        await written_staged(self.session)
        query = (
            select(Decision)
            .where(Decision.lead_id == lead_id)
            .order_by(col(Decision.decided_at), col(Decision.id))
        )
        return (await self.session.execute(query)).scalars().all()

    async def capacity_counts(
        self,
        since: datetime,
        *,
        not_new_rules: Sequence[str],
        not_release_reasons: Sequence[str],
    ) -> list[dict[str, Any]]:
        """Per team, oldest team first, in one statement (one snapshot): `capacity` and
        `headroom` of its active reps, `working` of all its reps, `backlog` and
        `oldest_queued_at`, `intake` (leads assigned or queued to it since `since`, except
        decisions by `not_new_rules`) and `released` (assignments released since `since`,
        except for `not_release_reasons`)."""
        query = sa.text(
            """
            WITH slots AS (
                SELECT team_id,
                       coalesce(sum(capacity) FILTER (WHERE active), 0) AS capacity,
                       coalesce(sum(working), 0) AS working,
                       coalesce(sum(greatest(capacity - working, 0)) FILTER (WHERE active), 0)
                           AS headroom
                FROM router.reps
                GROUP BY team_id
            ), queued AS (
                SELECT team_id, count(*) AS backlog, min(queued_at) AS oldest_queued_at
                FROM router.backlog
                GROUP BY team_id
            ), intake AS (
                SELECT decision ->> 'team_id' AS team_id, count(*) AS intake
                FROM router.decisions
                WHERE decided_at >= :since
                  AND outcome IN ('assigned', 'queued')
                  AND coalesce(decision ->> 'rule', '') <> ALL(:not_new_rules)
                GROUP BY 1
            ), released AS (
                SELECT team_id, count(*) AS released
                FROM router.assignments
                WHERE released_at >= :since
                  AND coalesce(release_reason, '') <> ALL(:not_release_reasons)
                GROUP BY team_id
            )
            SELECT t.id AS team_id, t.name,
                   coalesce(s.capacity, 0) AS capacity,
                   coalesce(s.working, 0) AS working,
                   coalesce(s.headroom, 0) AS headroom,
                   coalesce(q.backlog, 0) AS backlog,
                   q.oldest_queued_at,
                   coalesce(i.intake, 0) AS intake,
                   coalesce(r.released, 0) AS released
            FROM router.teams t
            LEFT JOIN slots s ON s.team_id = t.id
            LEFT JOIN queued q ON q.team_id = t.id
            LEFT JOIN intake i ON i.team_id = t.id
            LEFT JOIN released r ON r.team_id = t.id
            ORDER BY t.created_at, t.id
            """
        )
        params = {
            "since": since,
            "not_new_rules": list(not_new_rules),
            "not_release_reasons": list(not_release_reasons),
        }
        rows = (await self.session.execute(query, params)).mappings().all()
        return [dict(row) for row in rows]

    async def try_lock_capacity_levels(self) -> bool:
        """Take the lock on announcing capacity levels until the transaction ends, if no
        other router instance holds it: one instance at a time compares and announces."""
        key = zlib.crc32(b"handoff-router-capacity-levels")
        locked = await self.session.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(key)))
        return bool(locked)

    async def capacity_levels(self) -> dict[str, str]:
        """The capacity level last announced per team id."""
        query = sa.text("SELECT team_id, level FROM router.capacity_levels")
        return {team: level for team, level in (await self.session.execute(query)).all()}

    async def set_capacity_level(self, team_id: str, level: str, changed_at: datetime) -> None:
        """Record the level just announced for a team."""
        query = sa.text(
            """
            INSERT INTO router.capacity_levels (team_id, level, changed_at)
            VALUES (:team_id, :level, :changed_at)
            ON CONFLICT (team_id) DO UPDATE
            SET level = excluded.level, changed_at = excluded.changed_at
            """
        )
        params = {"team_id": team_id, "level": level, "changed_at": changed_at}
        await self.session.execute(query, params)
