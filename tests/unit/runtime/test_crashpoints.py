"""The crash-point hook: off by default, refused in production, and it kills the process on
exactly the hit it was armed for."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from pydantic import ValidationError

from handoff_runtime import crashpoints
from handoff_runtime.settings import ServiceSettings


def test_a_spec_names_a_known_point_and_optionally_the_hit() -> None:
    assert crashpoints.parse("after_publish") == ("after_publish", 1)
    assert crashpoints.parse("mid_batch:3") == ("mid_batch", 3)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("before_lunch", "unknown crash point"),
        ("after_publish:x", "whole number"),
        ("after_publish:0", "at least 1"),
    ],
)
def test_a_bad_spec_is_refused_with_the_reason(spec: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        crashpoints.parse(spec)


def test_the_hook_is_off_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HANDOFF_CRASH_AT", raising=False)
    assert ServiceSettings().crash_at is None


def test_production_refuses_to_start_with_a_crash_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDOFF_ENVIRONMENT", "production")
    monkeypatch.setenv("HANDOFF_CRASH_AT", "after_process")
    with pytest.raises(ValidationError, match="refused in production"):
        ServiceSettings()
    monkeypatch.setenv("HANDOFF_ENVIRONMENT", "test")
    assert ServiceSettings().crash_at == "after_process"


def test_settings_refuse_an_unknown_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDOFF_CRASH_AT", "nowhere")
    with pytest.raises(ValidationError, match="unknown crash point"):
        ServiceSettings()


def test_the_process_dies_by_sigkill_on_the_armed_hit_only() -> None:
    script = (
        "import sys\n"
        "from handoff_runtime import crashpoints\n"
        "crashpoints.arm('after_publish:2')\n"
        "crashpoints.reached('after_process')\n"
        "crashpoints.reached('after_publish')\n"
        "print('survived the first hit', flush=True)\n"
        "crashpoints.reached('after_publish')\n"
        "print('survived the second hit', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == -signal.SIGKILL
    assert "survived the first hit" in done.stdout
    assert "survived the second hit" not in done.stdout
