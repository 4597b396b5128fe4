"""What the test session runs against."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Infra:
    """Where the session's database and broker are."""

    database_url: str
    bootstrap: str
    workdir: Path
