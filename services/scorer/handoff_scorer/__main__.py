"""`python -m handoff_scorer serve|migrate`."""

from handoff_runtime.cli import main

from .settings import ScorerSettings

main("scorer", ScorerSettings, "handoff_scorer.app:create_app")
