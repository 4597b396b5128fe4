"""`python -m handoff_router serve|migrate`."""

from handoff_runtime.cli import main

from .settings import RouterSettings

main("router", RouterSettings, "handoff_router.app:create_app")
