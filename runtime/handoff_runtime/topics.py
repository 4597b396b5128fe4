"""`python -m handoff_runtime.topics plan|create`: the topic plan, and making it real on a cluster.

The plan is the catalogue in `schemas/handoff_schemas/catalogue.py` and nothing else: the event
topics, each service's dead-letter topic and the runtime's internal broker-epoch topic, with
partitions, retention and cleanup policy. `plan` prints it (a table, or JSON); `create` makes
the topics a cluster lacks, with the replication factor given, through the same
`ensure_topics` the services and `make run` call at start-up. Existing topics are left as they
are: raising partitions is an operator's decision (deploy/CAPACITY.md says what it does to
ordering).

    python -m handoff_runtime.topics plan [--format table|json]
    python -m handoff_runtime.topics create [--bootstrap-servers HOST:PORT,...]
        [--replication-factor N] [--timeout S] [--wait S]

`--bootstrap-servers` defaults to `KAFKA_BOOTSTRAP_SERVERS` and `--replication-factor` to
`KAFKA_REPLICATION_FACTOR` (else 1), the variables the services read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import structlog
from aiokafka.errors import KafkaError

from handoff_schemas import DEAD_LETTER_TOPICS, TOPICS, Topic
from handoff_schemas.catalogue import INTERNAL_TOPICS

from .kafka import TopicCreationError, ensure_topics

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
REPLICATION_ENV = "KAFKA_REPLICATION_FACTOR"

_DAY_MS = 24 * 3600 * 1000
_HOUR_MS = 3600 * 1000


def plan() -> tuple[Topic, ...]:
    """Every topic Handoff needs, in the catalogue's order."""
    return (*TOPICS, *DEAD_LETTER_TOPICS, *INTERNAL_TOPICS)


def kind_of(topic: Topic) -> str:
    """`events`, `dead letters` or `internal`."""
    if topic in DEAD_LETTER_TOPICS:
        return "dead letters"
    if topic in INTERNAL_TOPICS:
        return "internal"
    return "events"


def retention_text(retention_ms: int) -> str:
    """A retention in words: `7d`, `36h`, `forever`."""
    if retention_ms < 0:
        return "forever"
    if retention_ms % _DAY_MS == 0:
        return f"{retention_ms // _DAY_MS}d"
    if retention_ms % _HOUR_MS == 0:
        return f"{retention_ms // _HOUR_MS}h"
    return f"{retention_ms}ms"


def plan_rows() -> list[dict[str, Any]]:
    """The plan as plain data (what `plan --format json` prints)."""
    return [
        {
            "name": t.name,
            "kind": kind_of(t),
            "partitions": t.partitions,
            "retention_ms": t.retention_ms,
            "retention": retention_text(t.retention_ms),
            "cleanup_policy": t.cleanup_policy,
            "key": t.key,
            "producers": list(t.producers),
            "consumers": list(t.consumers),
            "configs": t.configs(),
        }
        for t in plan()
    ]


TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("topic", "name"),
    ("kind", "kind"),
    ("partitions", "partitions"),
    ("retention", "retention"),
    ("cleanup", "cleanup_policy"),
    ("key", "key"),
    ("producers", "producers"),
    ("consumers", "consumers"),
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The plan as an aligned text table, one topic a line."""

    def cell(row: dict[str, Any], field: str) -> str:
        value = row[field]
        return ", ".join(value) if isinstance(value, list) else str(value)

    cells = [[cell(row, field) for _, field in TABLE_COLUMNS] for row in rows]
    headers = [title for title, _ in TABLE_COLUMNS]
    widths = [max(len(r[i]) for r in [headers, *cells]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


async def create(
    bootstrap: str,
    *,
    replication_factor: int = 1,
    timeout_s: float = 30,
    wait_s: float = 0,
    out: TextIO | None = None,
) -> list[str]:
    """Create the planned topics the cluster lacks; returns the names created.

    While the cluster cannot be reached (not up yet), try again every 2 s for up to `wait_s`
    seconds. A refusal (say, a replication factor above the broker count) is not retried."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await ensure_topics(
                bootstrap, plan(), timeout_s=timeout_s, replication_factor=replication_factor
            )
        except TopicCreationError:
            raise
        except (KafkaError, OSError, TimeoutError) as exc:
            if time.monotonic() + 2 > deadline:
                raise
            print(f"cannot reach {bootstrap} yet ({exc!r}); retrying", file=out or sys.stderr)
            await asyncio.sleep(2)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """The command line; returns the exit code."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m handoff_runtime.topics",
        description="Handoff's topic plan (from the catalogue), and creating it on a cluster.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("plan", help="print every topic with partitions, retention, cleanup")
    show.add_argument("--format", choices=("table", "json"), default="table")
    make = sub.add_parser("create", help="create the topics the cluster lacks")
    make.add_argument(
        "--bootstrap-servers",
        default=os.environ.get(BOOTSTRAP_ENV),
        help=f"comma-separated brokers (default: ${BOOTSTRAP_ENV})",
    )
    make.add_argument(
        "--replication-factor",
        type=int,
        default=None,
        help=f"brokers per partition (default: ${REPLICATION_ENV}, else 1)",
    )
    make.add_argument("--timeout", type=float, default=30.0, help="bound on each broker call (s)")
    make.add_argument(
        "--wait", type=float, default=0.0, help="keep trying an unreachable cluster this long (s)"
    )
    args = parser.parse_args(argv)

    if args.command == "plan":
        rows = plan_rows()
        out.write(json.dumps(rows, indent=2) if args.format == "json" else format_table(rows))
        out.write("\n")
        return 0

    if not args.bootstrap_servers:
        parser.error(f"--bootstrap-servers is required (or set {BOOTSTRAP_ENV})")
    try:
        replication = (
            args.replication_factor
            if args.replication_factor is not None
            else _env_int(REPLICATION_ENV, 1)
        )
    except ValueError:
        parser.error(f"{REPLICATION_ENV} must be a whole number")
    if replication < 1:
        parser.error("the replication factor must be 1 or more")
    # ensure_topics logs through structlog; this command prints its own summary.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        created = asyncio.run(
            create(
                args.bootstrap_servers,
                replication_factor=replication,
                timeout_s=args.timeout,
                wait_s=args.wait,
            )
        )
    except TopicCreationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KafkaError, OSError, TimeoutError) as exc:
        print(f"error: cannot reach {args.bootstrap_servers}: {exc!r}", file=sys.stderr)
        return 1
    planned = plan()
    if created:
        out.write(
            f"created {len(created)} of {len(planned)} topics "
            f"(replication factor {replication}): {', '.join(created)}\n"
        )
    else:
        out.write(f"all {len(planned)} topics exist; nothing created\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
