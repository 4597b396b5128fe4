"""Feedback configuration (environment variables prefixed HANDOFF_FEEDBACK_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from handoff_runtime.settings import ServiceSettings


class FeedbackSettings(ServiceSettings):
    """Settings of the feedback service."""

    model_config = SettingsConfigDict(env_prefix="HANDOFF_FEEDBACK_", extra="ignore")

    service_name: str = Field(default="feedback", exclude=True)
    port: int = Field(default=8003, ge=1, le=65535, description="HTTP port.")
