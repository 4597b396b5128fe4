"""The feedback service: the lead lifecycle as sales reports it."""

from __future__ import annotations

from fastapi import FastAPI

from handoff_runtime.service import create_service_app

from .api import router
from .consumers import feedback_consumer
from .kpi_api import kpi_router
from .settings import FeedbackSettings


def create_app(settings: FeedbackSettings | None = None) -> FastAPI:
    """Build the feedback app (uvicorn calls this as a factory)."""
    settings = settings or FeedbackSettings()
    return create_service_app(
        settings,
        title="Handoff feedback",
        description="Status changes from the CRM, recycling to nurture, and each lead's history.",
        routers=[router, kpi_router],
        consumers=[feedback_consumer(settings.policy())],
    )
