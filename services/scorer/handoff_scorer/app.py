"""The scorer service: lead intake, dedupe and ICP scoring with explanations."""

from __future__ import annotations

from fastapi import FastAPI

from handoff_runtime.service import create_service_app

from .api import router
from .consumers import leads
from .settings import ScorerSettings
from .workers import rescore_jobs


def create_app(settings: ScorerSettings | None = None) -> FastAPI:
    """Build the scorer app (uvicorn calls this as a factory)."""
    return create_service_app(
        settings or ScorerSettings(),
        title="Handoff scorer",
        description="Lead intake from marketing automation and scoring against the shared ICP.",
        routers=[router],
        consumers=[leads],
        workers=[rescore_jobs],
    )
