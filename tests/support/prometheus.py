"""The Prometheus server and promtool binaries that `make prometheus` unpacks from Debian's
package into .tools/prometheus (see deploy/prometheus/install.sh)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".tools" / "prometheus" / "usr" / "bin"


def binaries() -> tuple[Path, Path]:
    """The paths of the `prometheus` server and of `promtool`, in that order. Fails the
    calling test (rather than skipping it) when they are not installed."""
    server, promtool = BIN / "prometheus", BIN / "promtool"
    missing = [path.name for path in (server, promtool) if not path.is_file()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found in {BIN}: run `make prometheus` first",
            pytrace=False,
        )
    return server, promtool
