"""Router configuration (environment variables prefixed HANDOFF_ROUTER_)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from handoff_runtime.settings import ServiceSettings
from handoff_schemas import FitGrade


class RouterSettings(ServiceSettings):
    """Settings of the router service."""

    model_config = SettingsConfigDict(env_prefix="HANDOFF_ROUTER_", extra="ignore")

    service_name: str = Field(default="router", exclude=True)
    port: int = Field(default=8002, ge=1, le=65535, description="HTTP port.")
    nurture_from_grade: FitGrade | None = Field(
        default=FitGrade.D,
        description="Leads of this fit grade or worse go to nurture, never to sales.",
    )
    account_owner_full: Literal["route_normally", "queue_for_owner"] = Field(
        default="route_normally",
        description="A lead whose account already has an owner goes to that owner when they "
        "have room; when they have none, route it normally or queue it for the owner.",
    )
    backlog_max_age_hours: float = Field(
        default=72,
        gt=0,
        description="A lead queued longer than this goes to nurture (reason sales_capacity).",
    )
    sla_first_touch_minutes: dict[FitGrade, float] = Field(
        default={FitGrade.A: 60, FitGrade.B: 240, FitGrade.C: 1440, FitGrade.D: 2880},
        description="First-touch deadline per fit grade, in minutes after assignment (JSON).",
    )
    sla_business_hours: bool = Field(
        default=False,
        description="Count first-touch deadlines only within each rep's working hours.",
    )
    sla_max_reassignments: int = Field(
        default=2,
        ge=1,
        description="After this many missed first touches of one lead, escalate to the manager.",
    )
    sla_check_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often first-touch deadlines and backlog ages are checked.",
    )
    rate_window_hours: float = Field(
        default=4.0,
        gt=0,
        description="Capacity intake and release rates are per hour over this many last hours.",
    )
    capacity_check_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often team capacity levels are checked (and gauges refreshed).",
    )
    busy_utilisation: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Utilisation (0-1) from which a team is busy; it is saturated with no free "
        "slot or leads waiting in its backlog.",
    )
    rep_metrics_limit: int = Field(
        default=50,
        ge=0,
        description="Per-rep gauges are exported only while there are at most this many reps.",
    )
