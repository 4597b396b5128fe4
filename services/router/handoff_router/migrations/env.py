"""Alembic environment of the router (schema `router`)."""

from handoff_runtime.migrations import run_migrations

run_migrations()
