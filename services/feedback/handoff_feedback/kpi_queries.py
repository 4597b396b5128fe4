"""All of the KPI read model's SQL: order-insensitive merges of lead facts, and the
set-based reports (one statement each, grouped in PostgreSQL)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from .kpi_models import FUNNEL, SCHEMA, KpiOutcome

if TYPE_CHECKING:
    from .kpis import LeadFacts

EARLIEST = ("created_at", "mql_at", "assigned_at", "touched_at", "sla_breached_at")
"""Times of firsts: the earliest reported wins."""

FIRST_KNOWN = {"campaign": ("campaign_at", "created_at"), "source": ("source_at", "created_at")}
"""First-touch attribution: the value of the earliest event that had one (column -> its time
column, and the fact giving that time)."""

LATEST = {
    "fit_grade": ("graded_at", "graded_at"),
    "score": ("graded_at", "graded_at"),
    "team_id": ("team_at", "owned_at"),
    "rep_id": ("rep_at", "owned_at"),
}
"""The current grade and owner: the value of the latest event that had one."""

COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(
        [
            "lead_id",
            *EARLIEST,
            "stage",
            *(
                c
                for rules in (FIRST_KNOWN, LATEST)
                for col, (at, _) in rules.items()
                for c in (col, at)
            ),
        ]
    )
)
"""The kpi_leads columns a merge writes, each once."""

SQL_TYPES: Mapping[str, str] = {
    **{c: "timestamptz" for c in COLUMNS if c in EARLIEST or c.endswith("_at")},
    "stage": "int4",
    "score": "float8",
}
"""Column types for the merge's arrays; text when not listed."""


def fact_row(facts: LeadFacts) -> dict[str, Any]:
    """The kpi_leads row that `facts` alone would make (None where they say nothing)."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row["lead_id"] = facts.lead_id
    for column in EARLIEST:
        row[column] = getattr(facts, column)
    row["stage"] = None if facts.stage is None else int(facts.stage)
    for rules in (FIRST_KNOWN, LATEST):
        for column, (time_column, time_fact) in rules.items():
            value, at = getattr(facts, column), getattr(facts, time_fact)
            if value is not None and at is not None:
                row[column], row[time_column] = value, at
    return row


def fold(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Merge row `new` into row `old` by the rules `MERGE` applies in PostgreSQL (ties keep
    `old`), so that folding a lead's facts first and merging the result once ends in the
    same row as merging them one by one."""
    row = dict(old)
    for column in EARLIEST:
        row[column] = _least(old[column], new[column])
    if new["stage"] is not None and (old["stage"] is None or new["stage"] > old["stage"]):
        row["stage"] = new["stage"]
    for column, (time_column, _) in FIRST_KNOWN.items():
        if new[column] is not None and (old[column] is None or new[time_column] < old[time_column]):
            row[column], row[time_column] = new[column], new[time_column]
    for column, (time_column, _) in LATEST.items():
        if new[column] is not None and (
            old[time_column] is None or new[time_column] > old[time_column]
        ):
            row[column] = new[column]
            row[time_column] = new[time_column]
    return row


def _least(a: Any, b: Any) -> Any:
    """PostgreSQL's least(): the smaller of the two that are not null."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _merge_sql() -> sa.TextClause:
    """The set-based merge: one row per lead from parallel arrays, inserted or merged into
    the row already there. NULL means "nothing said" throughout."""
    arrays = ", ".join(f"CAST(:{c} AS {SQL_TYPES.get(c, 'text')}[])" for c in COLUMNS)
    selected = ", ".join("coalesce(stage, 0)" if c == "stage" else c for c in COLUMNS)
    updates = [f"{c} = least(old.{c}, excluded.{c})" for c in EARLIEST]
    updates.append("stage = greatest(old.stage, excluded.stage)")
    for column, (at, _) in FIRST_KNOWN.items():
        earlier = (
            f"excluded.{column} IS NOT NULL AND (old.{column} IS NULL OR excluded.{at} < old.{at})"
        )
        updates.append(
            f"{column} = CASE WHEN {earlier} THEN excluded.{column} ELSE old.{column} END"
        )
        updates.append(f"{at} = CASE WHEN {earlier} THEN excluded.{at} ELSE old.{at} END")
    later_by_time: dict[str, list[str]] = {}
    for column, (at, _) in LATEST.items():
        later = f"excluded.{column} IS NOT NULL AND (old.{at} IS NULL OR excluded.{at} > old.{at})"
        updates.append(f"{column} = CASE WHEN {later} THEN excluded.{column} ELSE old.{column} END")
        later_by_time.setdefault(at, []).append(f"({later})")
    for at, conditions in later_by_time.items():
        updates.append(
            f"{at} = CASE WHEN {' OR '.join(conditions)} THEN excluded.{at} ELSE old.{at} END"
        )
    return sa.text(
        f"INSERT INTO {SCHEMA}.kpi_leads AS old ({', '.join(COLUMNS)})\n"
        f"SELECT {selected} FROM unnest({arrays}) AS new({', '.join(COLUMNS)})\n"
        f"ON CONFLICT (lead_id) DO UPDATE SET {', '.join(updates)}"
    )


MERGE = _merge_sql()


LEAD_GROUPS: Mapping[str, str] = {
    "campaign": "l.campaign",
    "source": "l.source",
    "fit_grade": "l.fit_grade",
    "team": "l.team_id",
    "rep": "l.rep_id",
    "none": "NULL::text",
}
"""The SQL of each grouping of per-lead figures (`l` is kpi_leads)."""

OUTCOME_GROUPS: Mapping[str, str] = {
    **LEAD_GROUPS,
    # the rep and team who ended the cycle, else the lead's latest owner
    "rep": "coalesce(o.rep_id, l.rep_id)",
    "team": "coalesce(o.team_id, l.team_id)",
}
"""The SQL of each grouping of outcome figures (`o` is kpi_outcomes, `l` its lead)."""


class KpiRepository:
    """Reads and writes the KPI read model in one session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def merge(self, facts: Sequence[LeadFacts]) -> None:
        """Insert each lead or merge its facts into its row, so that the row ends the same
        whatever order the facts come in: earliest firsts, furthest stage, first-touch
        attribution, latest grade and owner. Facts that are None leave the row as it is.

        The facts of one lead are folded in memory first (`fold`, the same rules), so a
        batch costs one statement whatever its size."""
        folded: dict[str, dict[str, Any]] = {}
        for fact in facts:
            row = fact_row(fact)
            known = folded.get(fact.lead_id)
            folded[fact.lead_id] = row if known is None else fold(known, row)
        if not folded:
            return
        # Rows in key order: concurrent batches lock the leads they share in the same order.
        rows = [folded[lead_id] for lead_id in sorted(folded)]
        await self.session.execute(MERGE, {c: [row[c] for row in rows] for c in COLUMNS})

    async def record_outcomes(self, outcomes: Sequence[KpiOutcome]) -> None:
        """Keep each outcome once per reporting event."""
        if outcomes:
            await self.session.execute(
                insert(KpiOutcome).on_conflict_do_nothing(index_elements=["event_id"]),
                [outcome.model_dump() for outcome in outcomes],
            )

    async def funnel(
        self, group_by: str, created_from: datetime | None, created_to: datetime | None
    ) -> Sequence[Mapping[str, Any]]:
        """Per group: leads that reached each funnel stage, lost, and won revenue."""
        where, params = _created_between(created_from, created_to)
        reached = ",\n".join(
            f"count(*) FILTER (WHERE l.stage >= {stage.value}) AS {stage.step}" for stage in FUNNEL
        )
        query = f"""
            SELECT {LEAD_GROUPS[group_by]} AS "group",
                   {reached},
                   count(*) FILTER (WHERE o.lost) AS lost,
                   coalesce(sum(o.revenue), 0)::float8 AS revenue
            FROM {SCHEMA}.kpi_leads AS l
            LEFT JOIN (
                SELECT lead_id,
                       bool_or(status = 'lost') AS lost,
                       sum(amount) FILTER (WHERE status = 'won') AS revenue
                FROM {SCHEMA}.kpi_outcomes
                GROUP BY lead_id
            ) AS o USING (lead_id)
            WHERE {where}
            GROUP BY 1
            ORDER BY 1 NULLS LAST
        """
        return await self._rows(query, params)

    async def speed_to_lead(
        self, group_by: str, created_from: datetime | None, created_to: datetime | None
    ) -> Sequence[Mapping[str, Any]]:
        """Per group: seconds from created to first touch (p50, p90, to the millisecond) over
        touched leads, and the counts first-touch SLA compliance is computed from."""
        where, params = _created_between(created_from, created_to)
        seconds = "extract(epoch FROM l.touched_at - l.created_at)::float8"
        touched = "l.touched_at IS NOT NULL"
        query = f"""
            SELECT {LEAD_GROUPS[group_by]} AS "group",
                   count(*) FILTER (WHERE {touched}) AS touched,
                   round(percentile_cont(0.5) WITHIN GROUP (ORDER BY {seconds})
                       FILTER (WHERE {touched})::numeric, 3)::float8 AS p50_seconds,
                   round(percentile_cont(0.9) WITHIN GROUP (ORDER BY {seconds})
                       FILTER (WHERE {touched})::numeric, 3)::float8 AS p90_seconds,
                   count(*) FILTER (WHERE l.sla_breached_at IS NOT NULL) AS breached,
                   count(*) FILTER (WHERE {touched} AND l.sla_breached_at IS NULL)
                       AS within_sla,
                   count(*) FILTER (WHERE {touched} OR l.sla_breached_at IS NOT NULL)
                       AS sla_measured
            FROM {SCHEMA}.kpi_leads AS l
            WHERE {where}
            GROUP BY 1
            ORDER BY 1 NULLS LAST
        """
        return await self._rows(query, params)

    async def reasons(
        self,
        group_by: str,
        created_from: datetime | None,
        created_to: datetime | None,
        kinds: Sequence[str],
    ) -> Sequence[Mapping[str, Any]]:
        """Per group, kind of outcome and reason: how many outcomes, most frequent first."""
        where, params = _created_between(created_from, created_to)
        query = f"""
            SELECT {OUTCOME_GROUPS[group_by]} AS "group",
                   o.status AS kind,
                   o.reason,
                   count(*) AS count
            FROM {SCHEMA}.kpi_outcomes AS o
            JOIN {SCHEMA}.kpi_leads AS l USING (lead_id)
            WHERE {where} AND o.status = ANY(:kinds)
            GROUP BY 1, 2, 3
            ORDER BY 1 NULLS LAST, 2, 4 DESC, 3 NULLS LAST
        """
        return await self._rows(query, {**params, "kinds": list(kinds)})

    async def revenue(
        self, group_by: str, created_from: datetime | None, created_to: datetime | None
    ) -> Sequence[Mapping[str, Any]]:
        """Per group (first-touch attribution): leads, won deals and their revenue."""
        where, params = _created_between(created_from, created_to)
        query = f"""
            SELECT {LEAD_GROUPS[group_by]} AS "group",
                   count(DISTINCT l.lead_id) AS leads,
                   count(o.event_id) AS won,
                   coalesce(sum(o.amount), 0)::float8 AS revenue
            FROM {SCHEMA}.kpi_leads AS l
            LEFT JOIN {SCHEMA}.kpi_outcomes AS o ON o.lead_id = l.lead_id AND o.status = 'won'
            WHERE {where}
            GROUP BY 1
            ORDER BY 1 NULLS LAST
        """
        return await self._rows(query, params)

    async def _rows(self, query: str, params: dict[str, Any]) -> Sequence[Mapping[str, Any]]:
        result = await self.session.execute(sa.text(query), params)
        return [dict(row) for row in result.mappings()]


def _created_between(
    created_from: datetime | None, created_to: datetime | None
) -> tuple[str, dict[str, Any]]:
    """The WHERE clause on the lead's created time (from inclusive, to exclusive); a lead
    whose lead.created has not been seen yet is in no report."""
    clauses, params = ["l.created_at IS NOT NULL"], {}
    if created_from is not None:
        clauses.append("l.created_at >= :created_from")
        params["created_from"] = created_from
    if created_to is not None:
        clauses.append("l.created_at < :created_to")
        params["created_to"] = created_to
    return " AND ".join(clauses), params
