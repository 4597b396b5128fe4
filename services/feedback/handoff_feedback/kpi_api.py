"""The shared KPIs over HTTP: funnel, speed to lead, disqualification and loss reasons, and
revenue per campaign, as JSON or CSV, over a range of the leads' created time."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from handoff_runtime.db import Database
from handoff_runtime.service import database
from handoff_schemas import in_utc_range, written_as_text

from .kpi_queries import KpiRepository
from .kpis import REASON_KINDS, conversion_rates

kpi_router = APIRouter(prefix="/v1/kpis", tags=["kpis"])
Db = Annotated[Database, Depends(database)]
CSV_TYPE = "text/csv"


def _utc_unless_zoned(value: datetime) -> datetime:
    return in_utc_range(value if value.tzinfo is not None else value.replace(tzinfo=UTC))


Moment = Annotated[datetime, BeforeValidator(written_as_text), AfterValidator(_utc_unless_zoned)]
"""An ISO date (midnight UTC) or date-time (UTC unless it has an offset)."""

FunnelGrouping = Literal["campaign", "source", "fit_grade", "team", "rep", "none"]
ReasonGrouping = Literal["campaign", "rep"]
RevenueGrouping = Literal["campaign", "source"]

_GROUP_DOC = (
    "`campaign` and `source` are first-touch attribution; `fit_grade` the latest grade; "
    "`team` and `rep` the lead's latest owner (ids); `none` one overall row."
)


@dataclass(frozen=True)
class ReportRequest:
    """The created-time range of a report and whether it is wanted as CSV."""

    created_from: datetime | None
    created_to: datetime | None
    csv: bool


async def report_request(
    request: Request,
    created_from: Annotated[
        Moment | None,
        Query(
            alias="from",
            description="Leads created at or after this ISO date or date-time (UTC unless zoned).",
            examples=["2026-11-01"],
        ),
    ] = None,
    created_to: Annotated[
        Moment | None,
        Query(
            alias="to",
            description="Leads created before this ISO date or date-time (exclusive).",
            examples=["2026-12-01"],
        ),
    ] = None,
    output: Annotated[
        Literal["json", "csv"] | None,
        Query(
            alias="format",
            description="`csv` for one CSV row per group (also chosen by `Accept: text/csv`).",
        ),
    ] = None,
) -> ReportRequest:
    """The common query of every KPI report; `to` must be later than `from`."""
    if created_from is not None and created_to is not None and created_to <= created_from:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "to"),
                    "msg": "must be later than `from`",
                    "input": created_to.isoformat(),
                }
            ]
        )
    wants_csv = (
        output == "csv"
        if output is not None
        else CSV_TYPE in request.headers.get("accept", "").lower()
    )
    return ReportRequest(created_from, created_to, wants_csv)


Report = Annotated[ReportRequest, Depends(report_request)]


class _Figures(BaseModel):
    model_config = ConfigDict(frozen=True)

    group: str | None = Field(
        description="The group's value (campaign, source, grade, team id or rep id); null "
        "for leads without one, and for the overall row."
    )


class FunnelFigures(_Figures):
    """How far one group's leads got: leads that reached each stage (or a later one), and
    the conversion rate between consecutive stages."""

    leads: int = Field(description="Leads created in the range.")
    mql: int = Field(description="Handed to sales: assigned or queued by the router.")
    assigned: int = Field(description="Given to a rep.")
    accepted: int
    contacted: int
    qualified: int
    converted: int
    won: int
    lost: int = Field(description="Lost at least once (lost counts as qualified or converted).")
    revenue: float = Field(description="Sum of won amounts.")
    leads_to_mql: float | None = Field(description="mql / leads; null when leads is 0.")
    mql_to_assigned: float | None
    assigned_to_accepted: float | None
    accepted_to_contacted: float | None
    contacted_to_qualified: float | None
    qualified_to_converted: float | None
    converted_to_won: float | None


class SpeedFigures(_Figures):
    """How fast one group's leads were first touched, and how often within the SLA."""

    touched: int = Field(description="Leads touched (contacted, or a later stage reported).")
    p50_seconds: float | None = Field(
        description="Median seconds from created to first touch; null when none touched."
    )
    p90_seconds: float | None = Field(description="90th percentile seconds to first touch.")
    breached: int = Field(description="Leads whose first-touch SLA was missed.")
    within_sla: int = Field(description="Leads touched without a missed SLA.")
    sla_measured: int = Field(
        description="Leads touched or breached: the SLA compliance denominator (a lead still "
        "within its deadline and untouched is not measured yet)."
    )
    sla_compliance: float | None = Field(
        description="within_sla / leads touched or breached; null when there are none."
    )


class ReasonCount(_Figures):
    """How many times leads of one group left sales with one outcome and reason."""

    kind: Literal["disqualified", "recycled", "lost"]
    reason: str | None = Field(description="no_budget, no_timeline, competitor, ...")
    count: int


class RevenueFigures(_Figures):
    """Revenue attributed to one campaign (or source) by the lead's first touch."""

    leads: int = Field(description="Leads created in the range.")
    won: int = Field(description="Won deals.")
    revenue: float = Field(description="Sum of won amounts.")


class _Report(BaseModel):
    name: ClassVar[str]

    group_by: str = Field(description="What the figures are grouped by.")
    created_from: datetime | None = Field(description="The `from` of the range, if any.")
    created_to: datetime | None = Field(description="The `to` of the range, if any.")


ReportT = TypeVar("ReportT", bound=_Report)

FUNNEL_EXAMPLE: dict[str, Any] = {
    "group_by": "campaign",
    "created_from": "2026-11-01T00:00:00Z",
    "created_to": "2026-12-01T00:00:00Z",
    "groups": [
        {
            "group": "webinar-2026-11",
            "leads": 120,
            "mql": 80,
            "assigned": 72,
            "accepted": 60,
            "contacted": 54,
            "qualified": 30,
            "converted": 12,
            "won": 6,
            "lost": 4,
            "revenue": 184000.0,
            "leads_to_mql": 0.6667,
            "mql_to_assigned": 0.9,
            "assigned_to_accepted": 0.8333,
            "accepted_to_contacted": 0.9,
            "contacted_to_qualified": 0.5556,
            "qualified_to_converted": 0.4,
            "converted_to_won": 0.5,
        }
    ],
}
SPEED_EXAMPLE: dict[str, Any] = {
    "group_by": "none",
    "created_from": None,
    "created_to": None,
    "groups": [
        {
            "group": None,
            "touched": 54,
            "p50_seconds": 840.0,
            "p90_seconds": 5400.0,
            "breached": 6,
            "within_sla": 50,
            "sla_measured": 56,
            "sla_compliance": 0.8929,
        }
    ],
}
REASONS_EXAMPLE: dict[str, Any] = {
    "group_by": "rep",
    "created_from": "2026-11-01T00:00:00Z",
    "created_to": None,
    "groups": [
        {"group": "rep_0412", "kind": "disqualified", "reason": "no_budget", "count": 7},
        {"group": "rep_0412", "kind": "lost", "reason": "competitor", "count": 2},
    ],
}
REVENUE_EXAMPLE: dict[str, Any] = {
    "group_by": "campaign",
    "created_from": None,
    "created_to": None,
    "groups": [
        {"group": "webinar-2026-11", "leads": 120, "won": 6, "revenue": 184000.0},
        {"group": None, "leads": 14, "won": 0, "revenue": 0.0},
    ],
}


class FunnelReport(_Report):
    """The funnel per group, leads created in the range."""

    name = "funnel"
    model_config = ConfigDict(json_schema_extra={"examples": [FUNNEL_EXAMPLE]})

    groups: list[FunnelFigures]


class SpeedReport(_Report):
    """Speed to lead and first-touch SLA compliance per group."""

    name = "speed-to-lead"
    model_config = ConfigDict(json_schema_extra={"examples": [SPEED_EXAMPLE]})

    groups: list[SpeedFigures]


class ReasonReport(_Report):
    """Why leads were disqualified, recycled or lost, per group."""

    name = "reasons"
    model_config = ConfigDict(json_schema_extra={"examples": [REASONS_EXAMPLE]})

    groups: list[ReasonCount]


class RevenueReport(_Report):
    """Won revenue per campaign (or source), by first-touch attribution."""

    name = "revenue"
    model_config = ConfigDict(json_schema_extra={"examples": [REVENUE_EXAMPLE]})

    groups: list[RevenueFigures]


def render_csv(model: type[_Figures], rows: Sequence[_Figures], *, group_column: str) -> str:
    """One header row (the model's fields, `group` named after the grouping) and one row per
    group; null is an empty cell."""
    columns = list(model.model_fields)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([group_column if c == "group" else c for c in columns])
    for row in rows:
        values = row.model_dump()
        writer.writerow(["" if values[c] is None else values[c] for c in columns])
    return out.getvalue()


def _responses(figures: type[_Figures], example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI answers of a report route, with its example also rendered as CSV."""
    group_by = example["group_by"]
    rows = [figures.model_validate(row) for row in example["groups"]]
    return {
        200: {
            "description": "One entry per group, as JSON, or as CSV with `format=csv` or "
            "`Accept: text/csv`.",
            "content": {
                CSV_TYPE: {
                    "schema": {"type": "string"},
                    "example": render_csv(
                        figures, rows, group_column="group" if group_by == "none" else group_by
                    ),
                }
            },
        },
        422: {"description": "Invalid `group_by`, `from`, `to` or `format`; the field is named"},
    }


def _answer(
    report: ReportRequest,
    kind: type[ReportT],
    group_by: str,
    figures: type[_Figures],
    rows: Sequence[_Figures],
) -> ReportT | Response:
    """The report as JSON (the model), or as a CSV attachment."""
    body = kind(
        group_by=group_by,
        created_from=report.created_from,
        created_to=report.created_to,
        groups=list(rows),
    )
    if not report.csv:
        return body
    group_by, name = body.group_by, body.name
    return Response(
        render_csv(figures, rows, group_column="group" if group_by == "none" else group_by),
        media_type=f"{CSV_TYPE}; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="handoff-{name}-by-{group_by}.csv"'},
    )


@kpi_router.get(
    "/funnel",
    response_model=FunnelReport,
    summary="The lead funnel per campaign, source, grade, team or rep",
    responses=_responses(FunnelFigures, FUNNEL_EXAMPLE),
)
async def funnel(
    db: Db,
    report: Report,
    group_by: Annotated[FunnelGrouping, Query(description=_GROUP_DOC)] = "campaign",
) -> FunnelReport | Response:
    """Leads created in the range that reached each funnel stage (a lead that reached a
    stage counts in every earlier one), lost leads, won revenue, and the conversion rate
    between consecutive stages (null when nothing reached the earlier one)."""
    async with db.unit_of_work() as uow:
        rows = await KpiRepository(uow.session).funnel(
            group_by, report.created_from, report.created_to
        )
    groups = [FunnelFigures.model_validate({**row, **conversion_rates(row)}) for row in rows]
    return _answer(report, FunnelReport, group_by, FunnelFigures, groups)


@kpi_router.get(
    "/speed-to-lead",
    response_model=SpeedReport,
    summary="Time to first touch and first-touch SLA compliance",
    responses=_responses(SpeedFigures, SPEED_EXAMPLE),
)
async def speed_to_lead(
    db: Db,
    report: Report,
    group_by: Annotated[FunnelGrouping, Query(description=_GROUP_DOC)] = "none",
) -> SpeedReport | Response:
    """Seconds from a lead's creation to its first touch (the first `contacted`, or a later
    stage reported without it), p50 and p90 over touched leads; SLA compliance = leads
    touched without a missed first-touch SLA / leads touched or breached."""
    async with db.unit_of_work() as uow:
        rows = await KpiRepository(uow.session).speed_to_lead(
            group_by, report.created_from, report.created_to
        )
    groups = [
        SpeedFigures.model_validate(
            {**row, "sla_compliance": _ratio(row["within_sla"], row["sla_measured"])}
        )
        for row in rows
    ]
    return _answer(report, SpeedReport, group_by, SpeedFigures, groups)


@kpi_router.get(
    "/reasons",
    response_model=ReasonReport,
    summary="Why leads were disqualified, recycled or lost, per campaign or rep",
    responses=_responses(ReasonCount, REASONS_EXAMPLE),
)
async def reasons(
    db: Db,
    report: Report,
    group_by: Annotated[
        ReasonGrouping,
        Query(description="`campaign` (first touch) or `rep` (who ended the sales cycle)."),
    ] = "campaign",
) -> ReasonReport | Response:
    """How many disqualifications, recycles and losses each reason accounts for, per group,
    over leads created in the range (most frequent first)."""
    async with db.unit_of_work() as uow:
        rows = await KpiRepository(uow.session).reasons(
            group_by, report.created_from, report.created_to, [k.value for k in REASON_KINDS]
        )
    groups = [ReasonCount.model_validate(row) for row in rows]
    return _answer(report, ReasonReport, group_by, ReasonCount, groups)


@kpi_router.get(
    "/revenue",
    response_model=RevenueReport,
    summary="Won revenue per campaign, by first-touch attribution",
    responses=_responses(RevenueFigures, REVENUE_EXAMPLE),
)
async def revenue(
    db: Db,
    report: Report,
    group_by: Annotated[
        RevenueGrouping,
        Query(description="The lead's first campaign (default) or first source."),
    ] = "campaign",
) -> RevenueReport | Response:
    """Won deals and the sum of their amounts, attributed to the campaign (or source) of the
    lead's first touch, over leads created in the range; campaigns without a win show 0."""
    async with db.unit_of_work() as uow:
        rows = await KpiRepository(uow.session).revenue(
            group_by, report.created_from, report.created_to
        )
    groups = [RevenueFigures.model_validate(row) for row in rows]
    return _answer(report, RevenueReport, group_by, RevenueFigures, groups)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
