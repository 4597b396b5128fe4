"""Router configuration (environment variables prefixed HANDOFF_ROUTER_)."""

from __future__ import annotations

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
