"""Alembic environment of the feedback (schema `feedback`)."""

from handoff_runtime.migrations import run_migrations

run_migrations()
