"""Scorer configuration (environment variables prefixed HANDOFF_SCORER_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from handoff_runtime.settings import ServiceSettings


class ScorerSettings(ServiceSettings):
    """Settings of the scorer service."""

    model_config = SettingsConfigDict(env_prefix="HANDOFF_SCORER_", extra="ignore")

    service_name: str = Field(default="scorer", exclude=True)
    port: int = Field(default=8001, ge=1, le=65535, description="HTTP port.")
