"""Several processes of one service, for scale-out tests: the launcher's `Stack` runs one
process per service (each reads its port from one variable), so N instances of the same
module on the same database and broker are started here instead.

The service's migrations run once, then `python -m <module> serve` starts N times, each with
its own port (and its own log file), and every instance must answer /readyz with 200.
Teardown stops each instance by its pid: SIGTERM, then SIGKILL if it outlives the timeout.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from handoff_runtime.embedded import die_with_parent, free_port

from .system import ADMIN_TOKEN

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Instance:
    """One running process of a service."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_records(self) -> list[dict[str, Any]]:
        """Every JSON log record the instance has written so far."""
        records: list[dict[str, Any]] = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        records.append(record)
        return records

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def diagnose(self) -> str:
        """Where a process that should have ended is stuck: its threads' stacks (py-spy) and
        its asyncio tasks' awaits (the service logs them on SIGUSR1), then its log's tail."""
        spy = Path(sys.executable).with_name("py-spy")
        try:
            dump = subprocess.run(
                [str(spy), "dump", "--pid", str(self.pid)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            threads = dump.stdout + dump.stderr
        except (OSError, subprocess.TimeoutExpired) as exc:
            threads = f"py-spy dump failed: {exc!r}"
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGUSR1)
        time.sleep(2)
        return f"threads of {self.name} (pid {self.pid}):\n{threads}\n{self.log_tail(120)}"


def migrate(module: str, env: Mapping[str, str], *, cwd: Path, timeout_s: float = 120) -> None:
    """`python -m <module> migrate`, once; raises with its output if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", module, "migrate"],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{module} migrate exited with {done.returncode}:\n"
            + done.stdout.decode(errors="replace")
        )


@contextmanager
def running_instances(
    module: str,
    count: int,
    *,
    env: Mapping[str, str],
    port_env: str,
    workdir: Path,
    name: str | None = None,
    ready_timeout_s: float = 60,
    stop_timeout_s: float = 25,
) -> Iterator[list[Instance]]:
    """Migrate `module` once, start `count` instances on free ports (`port_env` set per
    instance), wait until each answers /readyz with 200, and stop them all afterwards."""
    base = name or module.removeprefix("handoff_")
    migrate(module, env, cwd=workdir)
    instances: list[Instance] = []
    try:
        for index in range(1, count + 1):
            instances.append(
                spawn(module, f"{base}-{index}", env=env, port_env=port_env, workdir=workdir)
            )
        wait_ready(instances, timeout_s=ready_timeout_s)
        yield instances
    finally:
        stop_instances(instances, timeout_s=stop_timeout_s)


def spawn(
    module: str,
    name: str,
    *,
    env: Mapping[str, str],
    port_env: str,
    workdir: Path,
    port: int | None = None,
) -> Instance:
    """Start one `python -m <module> serve` process on `port` (a free one if None), logging
    to `<workdir>/<name>.log` (appended to, so a restarted instance keeps its history).
    It accepts ADMIN_TOKEN unless `env` sets `HANDOFF_ADMIN_TOKEN`."""
    port = port or free_port()
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "serve"],
            cwd=workdir,
            env={
                "HANDOFF_ADMIN_TOKEN": ADMIN_TOKEN,
                **env,
                port_env: str(port),
                "PYTHONUNBUFFERED": "1",
            },
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    return Instance(name, port, process, log_path)


def wait_ready(instances: list[Instance], *, timeout_s: float) -> None:
    """Until every instance answers /readyz with 200; raises if one exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    pending = list(instances)
    last: dict[str, str] = {i.name: "no answer yet" for i in instances}
    with httpx.Client(timeout=2.0) as client:
        while pending:
            for instance in list(pending):
                if not instance.alive():
                    raise RuntimeError(
                        f"{instance.name} exited at start with {instance.process.returncode}:\n"
                        + instance.log_tail()
                    )
                try:
                    answer = client.get(f"{instance.base_url}/readyz")
                except httpx.HTTPError as exc:
                    last[instance.name] = type(exc).__name__
                    continue
                if answer.status_code == 200:
                    pending.remove(instance)
                else:
                    last[instance.name] = f"{answer.status_code} {answer.text[:200]}"
            if pending and time.monotonic() > deadline:
                detail = "; ".join(f"{i.name}: {last[i.name]}" for i in pending)
                raise TimeoutError(f"not ready after {timeout_s:.0f} s: {detail}")
            if pending:
                time.sleep(0.1)


def stop_instances(instances: list[Instance], *, timeout_s: float) -> None:
    """SIGTERM each instance by pid, wait for all, SIGKILL whoever is still running."""
    for instance in instances:
        if instance.alive():
            with contextlib.suppress(ProcessLookupError):
                instance.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(i.alive() for i in instances) and time.monotonic() < deadline:
        time.sleep(0.05)
    for instance in instances:
        if instance.alive():
            with contextlib.suppress(ProcessLookupError):
                instance.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            instance.process.wait(timeout=5)
