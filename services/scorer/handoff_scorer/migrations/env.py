"""Alembic environment of the scorer (schema `scorer`)."""

from handoff_runtime.migrations import run_migrations

run_migrations()
