"""How KPI reports are asked for and rendered: the created-time range (dates, date-times,
`to` after `from`), CSV or JSON, and the CSV a spreadsheet reads."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter
from starlette.requests import Request

from handoff_feedback.kpi_api import (
    FunnelFigures,
    Moment,
    ReasonCount,
    RevenueFigures,
    render_csv,
    report_request,
)


def request(accept: str | None = None) -> Request:
    headers = [(b"accept", accept.encode())] if accept else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


@pytest.mark.parametrize(
    ("given", "instant"),
    [
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T10:30:00", datetime(2026, 11, 1, 10, 30, tzinfo=UTC)),
        ("2026-11-01T10:30:00Z", datetime(2026, 11, 1, 10, 30, tzinfo=UTC)),
        (
            "2026-11-01T10:30:00+02:00",
            datetime(2026, 11, 1, 10, 30, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
)
def test_a_range_bound_is_a_date_at_midnight_utc_or_a_date_time_utc_unless_zoned(
    given: str, instant: datetime
) -> None:
    parsed = TypeAdapter(Moment).validate_python(given)
    assert parsed == instant
    assert parsed.utcoffset() == instant.utcoffset()


async def test_to_must_be_later_than_from() -> None:
    day = datetime(2026, 11, 2, tzinfo=UTC)
    with pytest.raises(RequestValidationError) as refused:
        await report_request(request(), created_from=day, created_to=day)
    assert [e["loc"] for e in refused.value.errors()] == [("query", "to")]
    assert await report_request(request(), created_from=day, created_to=day + timedelta(days=1))


@pytest.mark.parametrize(
    ("output", "accept", "csv_wanted"),
    [
        (None, None, False),
        (None, "application/json", False),
        (None, "text/csv", True),
        (None, "text/csv;q=0.9, */*;q=0.1", True),
        ("json", "text/csv", False),  # the query parameter wins
        ("csv", "application/json", True),
    ],
)
async def test_csv_is_chosen_by_format_or_else_by_accept(
    output: Literal["json", "csv"] | None, accept: str | None, csv_wanted: bool
) -> None:
    chosen = await report_request(
        request(accept), created_from=None, created_to=None, output=output
    )
    assert chosen.csv is csv_wanted


def test_csv_has_a_header_named_after_the_grouping_and_one_row_per_group() -> None:
    rows = [
        RevenueFigures(group="webinar, november", leads=6, won=2, revenue=42000.5),
        RevenueFigures(group=None, leads=1, won=0, revenue=0.0),
    ]
    text = render_csv(RevenueFigures, rows, group_column="campaign")
    assert text.splitlines() == [
        "campaign,leads,won,revenue",
        '"webinar, november",6,2,42000.5',  # quoted: a comma in a campaign name
        ",1,0,0.0",  # a lead without a campaign: an empty cell
    ]
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed[0]["campaign"] == "webinar, november"


def test_an_empty_report_is_still_a_header_and_nulls_are_empty_cells() -> None:
    assert render_csv(ReasonCount, [], group_column="rep") == "rep,kind,reason,count\r\n"
    funnel = FunnelFigures.model_validate(
        {
            "group": "A",
            **dict.fromkeys(
                ["leads", "mql", "assigned", "accepted", "contacted", "qualified", "converted"], 1
            ),
            "won": 0,
            "lost": 0,
            "revenue": 0,
            **dict.fromkeys(
                [
                    "leads_to_mql",
                    "mql_to_assigned",
                    "assigned_to_accepted",
                    "accepted_to_contacted",
                    "contacted_to_qualified",
                    "qualified_to_converted",
                ],
                1.0,
            ),
            "converted_to_won": None,
        }
    )
    header, row = render_csv(FunnelFigures, [funnel], group_column="fit_grade").splitlines()
    assert header.startswith("fit_grade,leads,mql,")
    assert header.endswith(",converted_to_won")
    assert row.endswith(",1.0,")
