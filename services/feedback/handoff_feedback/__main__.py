"""`python -m handoff_feedback serve|migrate|rebuild-kpis`."""

import asyncio

from handoff_runtime.cli import Command, main
from handoff_runtime.logs import configure_logging
from handoff_runtime.settings import ServiceSettings

from .rebuild import rebuild_kpis
from .settings import FeedbackSettings


def _rebuild(settings: ServiceSettings) -> None:
    assert isinstance(settings, FeedbackSettings)
    configure_logging("feedback", settings.log_level)
    asyncio.run(rebuild_kpis(settings))


main(
    "feedback",
    FeedbackSettings,
    "handoff_feedback.app:create_app",
    {
        "rebuild-kpis": Command(
            "empty the KPI read model and rebuild it from the events the topics hold", _rebuild
        )
    },
)
