"""Who a lead is: one person per normalised email, many people per company account.

Marketing automation sends the same person again and again (a new form fill, a webinar, an
import of last year's list). Handoff keeps one lead per person: the email is normalised
(trimmed, lower-cased), and a lead sent again is merged into the one already known — new
values fill in or replace old ones, activities accumulate without repeats. Leads whose
company domain matches are linked to one account, except free-mail domains, which say
nothing about the employer.
"""

from __future__ import annotations

from collections.abc import Iterable

from handoff_schemas import LeadProfile
from handoff_schemas.events import MAX_ACTIVITIES, MAX_TECHNOLOGIES


def normalise_email(email: str) -> str:
    """The form of an email address that identifies a person: trimmed and lower-cased."""
    return email.strip().lower()


def merge_profiles(known: LeadProfile, received: LeadProfile) -> LeadProfile:
    """The profile after `received` arrives for a person already `known`: received values
    replace known ones where given; activities (each once, oldest first) and technologies
    (each once) accumulate, up to the profile's limits: past them the oldest give way, so
    a person heard from for years still has a valid profile."""
    updates = {
        field: value
        for field, value in received.model_dump(exclude={"activities", "technologies"}).items()
        if value is not None
    }
    known_tech = {t.casefold() for t in known.technologies}
    technologies = list(known.technologies) + [
        t for t in received.technologies if t.casefold() not in known_tech
    ]
    seen = {(a.type, a.occurred_at) for a in known.activities}
    activities = list(known.activities) + [
        a for a in received.activities if (a.type, a.occurred_at) not in seen
    ]
    activities.sort(key=lambda a: a.occurred_at)
    return known.model_copy(
        update={
            **updates,
            "activities": activities[-MAX_ACTIVITIES:],
            "technologies": technologies[-MAX_TECHNOLOGIES:],
        }
    )


def account_domain(profile: LeadProfile, free_mail_domains: Iterable[str]) -> str | None:
    """The company domain that links this lead to its account, or None for free mail."""
    domain = (profile.domain or str(profile.email).rpartition("@")[2]).strip().lower().rstrip(".")
    if domain.startswith("www."):
        domain = domain[4:]
    free = {d.strip().lower() for d in free_mail_domains}
    if not domain or domain in free or any(domain.endswith("." + d) for d in free):
        return None
    return domain
