"""The service's collector tuning: start-up objects frozen, young collections rarer, and 0
giving CPython's defaults back."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from handoff_runtime import collector
from handoff_runtime.settings import ServiceSettings


@pytest.fixture(autouse=True)
def restore_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_tuning_freezes_what_exists_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    collector.tune(50_000)
    assert gc.get_threshold() == (50_000, 10, 10)
    assert gc.get_freeze_count() > 1_000  # the modules and objects the process holds now


def test_the_collector_still_runs_by_itself_after_tuning() -> None:
    collector.tune(1_000)
    runs: list[int] = []

    def noted(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            runs.append(info["generation"])

    gc.callbacks.append(noted)
    try:
        kept: list[list[int]] = [[] for _ in range(5_000)]  # containers; no explicit collect
    finally:
        gc.callbacks.remove(noted)
    assert len(kept) == 5_000
    assert runs.count(0) >= 3


def test_zero_keeps_cpythons_defaults() -> None:
    gc.unfreeze()
    gc.set_threshold(1234, 5, 5)
    collector.tune(0)
    assert gc.get_threshold() == (collector.DEFAULT_THRESHOLD, 10, 10)
    assert gc.get_freeze_count() == 0


def test_the_setting_defaults_to_a_raised_threshold_and_refuses_a_negative_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ServiceSettings().gc_threshold > collector.DEFAULT_THRESHOLD
    monkeypatch.setenv("HANDOFF_GC_THRESHOLD", "-1")
    with pytest.raises(ValueError, match="gc_threshold"):
        ServiceSettings()
