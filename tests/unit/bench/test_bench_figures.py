"""The benchmark's arithmetic: percentiles, the accounting of every lead, and medians."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load_bench() -> ModuleType:
    path = Path(__file__).parents[3] / "bench" / "run.py"
    spec = importlib.util.spec_from_file_location("handoff_bench_run", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def test_percentiles_take_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert bench.percentile(values, 50) == 50.0
    assert bench.percentile(values, 99) == 99.0
    assert bench.percentile(values, 100) == 100.0
    assert bench.percentile([7.0], 99) == 7.0
    assert bench.percentile([], 50) == 0.0


def request(i: int, status: int = 202, lead: str | None = None) -> dict[str, object]:
    return {
        "i": i,
        "due": 100.0 + i,
        "sent": 100.0 + i,
        "answered": 100.5 + i,
        "status": status,
        "lead_id": lead or f"lead-{i}",
    }


def test_every_accepted_lead_is_accounted_for_lost_and_duplicated_apart() -> None:
    requests = [request(0), request(1), request(2), request(3, status=422, lead="refused")]
    first_read = {"lead-0": 101.0, "lead-1": 102.5}
    decisions = {"lead-0": {"e1"}, "lead-1": {"e2", "e3"}}
    figures = bench.account(requests, first_read, decisions)
    assert figures["accepted"] == 3
    assert figures["refused"] == 1
    assert figures["routed"] == 2
    assert figures["lost"] == 1
    assert figures["duplicated"] == 1
    # lead-0: answered at 100.5, read at 101.0; lead-1: answered at 101.5, read at 102.5
    assert figures["e2e_ms"]["max"] == pytest.approx(1000.0)
    assert figures["e2e_ms"]["p50"] == pytest.approx(500.0)
    assert figures["http_ms"]["p50"] == pytest.approx(500.0)
    # two routed between the first due time (100.0) and the last read (102.5)
    assert figures["throughput_per_s"] == pytest.approx(0.8)


def test_medians_of_runs_are_taken_key_by_key() -> None:
    runs = [
        {"throughput_per_s": 10.0, "e2e_ms": {"p99": 5.0}, "name": "x"},
        {"throughput_per_s": 30.0, "e2e_ms": {"p99": 1.0}, "name": "x"},
        {"throughput_per_s": 20.0, "e2e_ms": {"p99": 3.0}, "name": "x"},
    ]
    assert bench.median_figures(runs) == {
        "throughput_per_s": 20.0,
        "e2e_ms": {"p99": 3.0},
        "name": "x",
    }
