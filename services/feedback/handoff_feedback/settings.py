"""Feedback configuration (environment variables prefixed HANDOFF_FEEDBACK_)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from handoff_runtime.settings import ServiceSettings
from handoff_schemas import NurtureReason

from .lifecycle import REQUALIFY_AFTER_DAYS, Policy, Reason


class FeedbackSettings(ServiceSettings):
    """Settings of the feedback service."""

    model_config = SettingsConfigDict(env_prefix="HANDOFF_FEEDBACK_", extra="ignore")

    service_name: str = Field(default="feedback", exclude=True)
    port: int = Field(default=8003, ge=1, le=65535, description="HTTP port.")
    requalify_after_days: dict[Reason, int] = Field(
        default=dict(REQUALIFY_AFTER_DAYS),
        description="The reasons worth nurturing and the days until such a lead may be "
        'handed to sales again, as JSON, e.g. `{"no_budget": 90, "no_timeline": 60}`. A '
        "disqualified or recycled lead whose reason is not listed is not nurtured.",
    )
    clock_skew_s: float = Field(
        default=300,
        ge=0,
        description="How far in the future a reported occurred_at may be (the CRM's clock "
        "may run ahead); later is refused with 422.",
    )

    @field_validator("requalify_after_days")
    @classmethod
    def _nurturable_reasons_only(cls, days: dict[Reason, int]) -> dict[Reason, int]:
        unknown = sorted(r for r in days if r.value not in set(NurtureReason))
        if unknown:
            raise ValueError(f"not a nurture reason: {', '.join(unknown)}")
        if any(d < 0 for d in days.values()):
            raise ValueError("days must be 0 or more")
        return days

    def policy(self) -> Policy:
        """The lifecycle policy these settings describe."""
        return Policy(
            requalify_after_days=dict(self.requalify_after_days),
            clock_skew=timedelta(seconds=self.clock_skew_s),
        )
