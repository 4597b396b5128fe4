"""`python -m handoff_feedback serve|migrate`."""

from handoff_runtime.cli import main

from .settings import FeedbackSettings

main("feedback", FeedbackSettings, "handoff_feedback.app:create_app")
