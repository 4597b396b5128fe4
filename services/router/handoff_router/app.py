"""The router service: teams, reps, capacity, backlog, and routing by capacity."""

from __future__ import annotations

from fastapi import FastAPI

from handoff_runtime.service import create_service_app

from .api import router
from .consumers import routing_consumer
from .settings import RouterSettings
from .timers import backlog_upkeep, first_touch_deadlines
from .workers import capacity_watch


def create_app(settings: RouterSettings | None = None) -> FastAPI:
    """Build the router app (uvicorn calls this as a factory)."""
    settings = settings or RouterSettings()
    return create_service_app(
        settings,
        title="Handoff router",
        description="Routes scored leads to reps with room; queues the rest; frees capacity.",
        routers=[router],
        consumers=[routing_consumer(settings)],
        workers=[first_touch_deadlines, backlog_upkeep, capacity_watch],
    )
