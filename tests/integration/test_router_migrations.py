"""The router's migrations on data: a database holding assignments from before assignments
named their account (revision 0009) is upgraded, and the account owners found afterwards are
the ones the routed leads gave before, through the index made for that lookup."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from support.infra import Infra, service_database

from handoff_router.repository import ACCOUNT_OWNERS, RouterRepository
from handoff_runtime.db import Database
from handoff_runtime.migrations import upgrade

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)

BEFORE_ACCOUNTS = [
    "INSERT INTO router.teams (id, name, is_default, respect_working_hours, created_at)"
    " VALUES ('t1', 'Enterprise', true, false, :t0)",
    *(
        "INSERT INTO router.reps (id, team_id, name, email, capacity, working, active, weight,"
        " timezone, out_of_office, countries, industries, size_bands, languages, created_at)"
        f" VALUES ('{rep}', 't1', '{rep}', '{rep}@example.com', 10, 0, true, 1.0, 'UTC',"
        " '[]', '[]', '[]', '[]', '[]', :t0)"
        for rep in ("ann", "bob")
    ),
    *(
        "INSERT INTO router.routed_leads (lead_id, state, team_id, rep_id, grade, score,"
        " icp_version, received_at, updated_at, reassignments, account_domain, cycle)"
        f" VALUES ('{lead}', 'assigned', 't1', '{rep}', 'A', 90, 1, :t0, :t0, 0, {domain}, 1)"
        for lead, rep, domain in (
            ("acme-old", "ann", "'acme.com'"),
            ("acme-new", "bob", "'acme.com'"),
            ("globex", "ann", "'globex.com'"),
            ("gmail", "bob", "NULL"),
        )
    ),
    *(
        "INSERT INTO router.assignments (lead_id, rep_id, team_id, active, assigned_at, cycle)"
        f" VALUES ('{lead}', '{rep}', 't1', {active},"
        f" CAST(:t0 AS timestamptz) + interval '{minutes} minutes', 1)"
        for lead, rep, active, minutes in (
            ("acme-old", "ann", "false", 0),
            ("acme-new", "bob", "true", 10),
            ("globex", "ann", "true", 20),
            ("gmail", "bob", "true", 30),
        )
    ),
]


async def test_upgrading_keeps_every_accounts_owner_and_the_lookup_reads_one_index(
    infra: Infra,
) -> None:
    with service_database(infra.database_url, "router", revision="0009") as url:
        db = Database(url, schema="router", source="/test")
        try:
            async with db.engine.begin() as conn:
                for statement in BEFORE_ACCOUNTS:
                    await conn.execute(sa.text(statement), {"t0": T0})
            await db.engine.dispose()
            await asyncio.to_thread(upgrade, "router", url)

            async with db.engine.connect() as conn:
                rows = await conn.execute(
                    sa.text("SELECT lead_id, account_domain FROM router.assignments")
                )
                accounts = {lead_id: domain for lead_id, domain in rows}
            assert accounts == {
                "acme-old": "acme.com",
                "acme-new": "acme.com",
                "globex": "globex.com",
                "gmail": None,
            }
            async with db.unit_of_work() as uow:
                repo = RouterRepository(uow.session)
                # acme.com: the active assignment wins over the older, released one;
                # initech.com has no owner.
                assert await repo.account_owners(["acme.com", "globex.com", "initech.com"]) == {
                    "acme.com": "bob",
                    "globex.com": "ann",
                }
                # Released, the account's latest assignment still names its owner.
                await uow.session.execute(
                    sa.text(
                        "UPDATE router.assignments SET active = false, released_at = :at"
                        " WHERE lead_id = 'acme-new'"
                    ),
                    {"at": T0 + timedelta(hours=1)},
                )
                assert await repo.account_owners(["acme.com"]) == {"acme.com": "bob"}
                # The lookup is one index range per account whatever the table holds (the
                # planner would scan four rows instead, so scans are taken off the table).
                await uow.session.execute(sa.text("SET LOCAL enable_seqscan = off"))
                explain = sa.text(f"EXPLAIN {ACCOUNT_OWNERS.text}").bindparams(
                    sa.bindparam("domains", type_=ARRAY(sa.String))
                )
                plan = "\n".join(
                    (await uow.session.execute(explain, {"domains": ["acme.com"]})).scalars()
                )
            assert "assignments_account_owner" in plan
            assert "Sort" not in plan, plan
        finally:
            await db.dispose()
