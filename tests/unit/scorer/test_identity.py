"""One lead per person, one account per company domain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from handoff_schemas import Activity, LeadProfile
from handoff_schemas.events import MAX_ACTIVITIES, MAX_TECHNOLOGIES
from handoff_scorer.identity import account_domain, merge_profiles, normalise_email

FREE = ["gmail.com", "gmx.de"]
T1 = datetime(2026, 11, 1, tzinfo=UTC)
T2 = datetime(2026, 11, 5, tzinfo=UTC)


def profile(**fields: object) -> LeadProfile:
    return LeadProfile.model_validate({"email": "ada@acme.io", **fields})


def test_emails_differing_only_in_case_and_spaces_are_one_person() -> None:
    assert normalise_email("  Ada.Lovelace@ACME.io ") == normalise_email("ada.lovelace@acme.io")


def test_a_resend_fills_in_and_replaces_values_but_never_erases_them() -> None:
    known = profile(name="Ada", company="Acme", title="Engineer")
    received = profile(title="CTO", employees=250)
    merged = merge_profiles(known, received)
    assert (merged.name, merged.company, merged.title, merged.employees) == (
        "Ada",
        "Acme",
        "CTO",
        250,
    )


def test_activities_accumulate_once_each_in_time_order() -> None:
    webinar = {"type": "webinar_attended", "occurred_at": T2.isoformat()}
    pricing = {"type": "pricing_page_viewed", "occurred_at": T1.isoformat()}
    known = profile(activities=[webinar])
    merged = merge_profiles(known, profile(activities=[webinar, pricing]))
    assert [(a.type, a.occurred_at) for a in merged.activities] == [
        ("pricing_page_viewed", T1),
        ("webinar_attended", T2),
    ]


def test_technologies_accumulate_and_a_resend_without_them_keeps_them() -> None:
    known = profile(technologies=["AWS", "Stripe"])
    assert merge_profiles(known, profile()).technologies == ["AWS", "Stripe"]
    merged = merge_profiles(known, profile(technologies=["aws", "Kubernetes"]))
    assert merged.technologies == ["AWS", "Stripe", "Kubernetes"]


@given(st.lists(st.sampled_from(["webinar_attended", "demo_requested"]), max_size=5))
def test_merging_the_same_delivery_twice_changes_nothing(types: list[str]) -> None:
    received = profile(title="VP", activities=[Activity(type=t, occurred_at=T1) for t in types])
    once = merge_profiles(profile(), received)
    assert merge_profiles(once, received) == once


def test_company_domain_comes_from_the_domain_field_or_the_email() -> None:
    assert account_domain(profile(domain="WWW.Acme.io"), FREE) == "acme.io"
    assert account_domain(profile(), FREE) == "acme.io"


def test_free_mail_never_links_an_account() -> None:
    assert account_domain(profile(email="ada@gmail.com"), FREE) is None
    assert account_domain(profile(email="ada@mail.gmx.de"), FREE) is None


def test_merging_past_the_profile_limits_keeps_the_latest_and_stays_valid() -> None:
    known = profile(
        technologies=[f"known-{i}" for i in range(MAX_TECHNOLOGIES)],
        activities=[
            {"type": "page_view", "occurred_at": datetime(2025, 1, 1, tzinfo=UTC) + timedelta(i)}
            for i in range(MAX_ACTIVITIES)
        ],
    )
    received = profile(
        technologies=["fresh-1", "fresh-2"],
        activities=[{"type": "demo_request", "occurred_at": T2}],
    )
    merged = LeadProfile.model_validate(merge_profiles(known, received).model_dump())
    assert len(merged.technologies) == MAX_TECHNOLOGIES
    assert merged.technologies[-2:] == ["fresh-1", "fresh-2"]
    assert "known-0" not in merged.technologies
    assert len(merged.activities) == MAX_ACTIVITIES
    assert merged.activities[-1].type == "demo_request"
    assert merged.activities[0].occurred_at == datetime(2025, 1, 2, tzinfo=UTC)
