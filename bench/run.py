"""`make bench`: Handoff's end-to-end throughput, latency and cost per lead, against a
bare-infrastructure baseline measured in the same run on the same machine.

For each system (the baseline of bench/baseline.py, then Handoff's three services) and each
phase (fixed offered rates, then saturation) it starts a fresh embedded PostgreSQL and broker
(so both systems meet topics of equal size: the embedded broker's CPU per request grows with
its log), starts the system, drives signed leads from bench/loadgen.py in a process of its
own, and follows the routing topic with an independent consumer until every accepted lead has
its routing decision. Then Handoff alone takes a bulk import through the batch endpoint.

Measured: leads/s routed, end-to-end latency (HTTP answer received -> routing record read)
p50/p95/p99/max, HTTP latency p50/p99 (from when each request was due), CPU microseconds per
lead for each process group (services, broker, PostgreSQL, load generator) and the peak RSS of
each. Every lead answered 2xx must be routed exactly once, or the run fails. Writes
bench/out/bench-<time>.json and bench/out/bench.png and prints a summary ending in
`ratio throughput_vs_baseline=<x>`. Figures are reported, never asserted by tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition

from handoff_runtime.aio import within
from handoff_runtime.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from handoff_runtime.launcher import Stack
from handoff_schemas import LEAD_ROUTING
from handoff_scorer.scoring import load_demo_icp

HERE = Path(__file__).parent
OUT = HERE / "out"
SECRET = "whsec_" + "YmVuY2gtc2VjcmV0LWJlbmNoLXNlY3JldC1iZW5jaA=="
SOURCE = "bench"
BASELINE_TOPIC = "bench.routed"


@dataclass(frozen=True)
class Phase:
    name: str
    mode: str  # rate | saturate | batch
    rate: float = 0.0
    duration_s: float = 10.0
    connections: int = 64
    count: int = 0


@dataclass
class Infra:
    workdir: Path
    postgres: EmbeddedPostgres
    kafka: EmbeddedKafka
    database_url: str
    bootstrap: str


@contextmanager
def fresh_infra() -> Iterator[Infra]:
    workdir = Path(tempfile.mkdtemp(prefix="handoff-bench-"))
    postgres = EmbeddedPostgres(workdir / "pg", temporary=True)
    kafka = EmbeddedKafka(port=free_port(), log_path=workdir / "tansu.log")
    try:
        url, bootstrap = postgres.start(), kafka.start()
        yield Infra(workdir, postgres, kafka, url, bootstrap)
    finally:
        kafka.stop()
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Running:
    """A started system: where leads go, what to follow, and its processes by group."""

    intake: str
    batch_intake: str | None
    topic: str
    processes: dict[str, list[int]]
    metrics: dict[str, str] = field(default_factory=dict)
    """Where each process serves its Prometheus metrics, when it does."""


@contextmanager
def handoff(infra: Infra) -> Iterator[Running]:
    env = {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
        "HANDOFF_SCORER_PORT": str(free_port()),
        "HANDOFF_ROUTER_PORT": str(free_port()),
        "HANDOFF_FEEDBACK_PORT": str(free_port()),
        "HANDOFF_SCORER_WEBHOOK_SOURCES": json.dumps({SOURCE: {"secrets": [SECRET]}}),
        "LOG_LEVEL": "WARNING",
    }
    stack = Stack(infra.workdir, env=env)
    try:
        stack.start()
        scorer, router = stack.url("scorer"), stack.url("router")
        admin = {"authorization": f"Bearer {stack.admin_token}"}
        with httpx.Client(headers=admin, timeout=30) as http:
            icp = http.post(f"{scorer}/v1/icp", json=load_demo_icp().model_dump(mode="json"))
            icp.raise_for_status()
            team = http.post(f"{router}/v1/teams", json={"name": "Bench"})
            team.raise_for_status()
            for n in range(10):
                rep = {
                    "team_id": team.json()["id"],
                    "name": f"Rep {n}",
                    "email": f"rep{n}@bench.io",
                    "capacity": 10_000,
                }
                http.post(f"{router}/v1/reps", json=rep).raise_for_status()
        yield Running(
            intake=f"{scorer}/v1/leads",
            batch_intake=f"{scorer}/v1/leads:batch",
            topic=LEAD_ROUTING.name,
            processes={
                name: [stack.processes[name].process.pid]
                for name in ("scorer", "router", "feedback")
            },
            metrics={
                name: f"{stack.url(name)}/metrics" for name in ("scorer", "router", "feedback")
            },
        )
    finally:
        stack.stop()


@contextmanager
def baseline(infra: Infra) -> Iterator[Running]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
        "BASELINE_PORT": str(port),
        "BASELINE_READY_FILE": str(infra.workdir / "worker-ready"),
    }
    script = str(HERE / "baseline.py")
    logs = (infra.workdir / "baseline.log").open("wb")
    processes = {
        role: subprocess.Popen(
            [sys.executable, script, role], env=env, stdout=logs, stderr=subprocess.STDOUT
        )
        for role in ("http", "worker")
    }
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                up = httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.TransportError:
                up = False
            if up and (infra.workdir / "worker-ready").exists():
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the baseline did not start")
            time.sleep(0.2)
        yield Running(
            intake=f"http://127.0.0.1:{port}/leads",
            batch_intake=None,
            topic=BASELINE_TOPIC,
            processes={f"baseline-{role}": [p.pid] for role, p in processes.items()},
        )
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        logs.close()


class Follower:
    """An independent consumer of the routing topic: when each lead's first routing record
    was read, and how many distinct routing decisions each lead got."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.first_read: dict[str, float] = {}
        self.decisions: dict[str, set[str]] = {}
        self.records = 0
        self.progress = asyncio.Event()
        """Set whenever a batch of records was read."""

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Follower]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
        )
        await consumer.start()
        try:
            partitions: set[int] = set()
            deadline = time.monotonic() + 30
            while not (partitions := consumer.partitions_for_topic(self.topic) or set()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"topic {self.topic} does not exist")
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.2)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            task = asyncio.create_task(self._read(consumer))
            try:
                yield self
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        finally:
            await consumer.stop()

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.time()
            for records in batches.values():
                for record in records:
                    self.records += 1
                    value = json.loads(record.value or b"{}")
                    # Handoff: a CloudEvent whose subject is the lead; baseline: the lead.
                    lead_id = value.get("subject") or value.get("lead_id")
                    decision = value.get("id") or f"{record.partition}:{record.offset}"
                    self.first_read.setdefault(lead_id, now)
                    self.decisions.setdefault(lead_id, set()).add(decision)
            self.progress.set()

    async def wait_for(self, lead_ids: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not lead_ids <= self.first_read.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.progress.clear()
            with suppress(TimeoutError):
                await within(self.progress.wait(), remaining)


class Resources:
    """CPU time and peak RSS per process group (a group counts its processes' children)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = {name: [psutil.Process(pid) for pid in pids] for name, pids in groups.items()}
        self.peak_rss: dict[str, int] = dict.fromkeys(groups, 0)

    def _members(self, name: str) -> list[psutil.Process]:
        members: list[psutil.Process] = []
        for process in self.groups[name]:
            try:
                members += [process, *process.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return members

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far per group, reaped children included."""
        totals: dict[str, float] = {}
        for name in self.groups:
            total = 0.0
            for process in self._members(name):
                try:
                    t = process.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
                except psutil.NoSuchProcess:
                    continue
            totals[name] = total
        return totals

    def sample_rss(self) -> None:
        for name in self.groups:
            rss = 0
            for process in self._members(name):
                try:
                    rss += process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            self.peak_rss[name] = max(self.peak_rss[name], rss)

    async def sampling(self, every_s: float = 0.25) -> None:
        while True:
            self.sample_rss()
            await asyncio.sleep(every_s)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass
class Outcome:
    """What one phase measured."""

    system: str
    phase: Phase
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def account(
    requests: list[dict[str, Any]],
    first_read: dict[str, float],
    decisions: dict[str, set[str]],
) -> dict[str, Any]:
    """Latency and accounting of one phase from the load generator's records and what the
    follower read: every lead answered 2xx must have exactly one routing decision."""
    accepted = [r for r in requests if r.get("lead_id") and 200 <= r.get("status", 0) < 300]
    ids = {r["lead_id"] for r in accepted}
    routed = ids & first_read.keys()
    e2e = [
        (first_read[r["lead_id"]] - r["answered"]) * 1000
        for r in accepted
        if r["lead_id"] in routed
    ]
    http = [(r["answered"] - r["due"]) * 1000 for r in accepted]
    span = max((first_read[i] for i in routed), default=0.0) - min(
        (r["due"] for r in accepted), default=0.0
    )
    return {
        "sent": len(requests),
        "accepted": len(ids),
        "refused": sum(1 for r in requests if r.get("status", 0) >= 300),
        "transport_errors": sum(1 for r in requests if "error" in r),
        "routed": len(routed),
        "lost": len(ids - routed),
        "duplicated": sum(1 for i in routed if len(decisions.get(i, ())) > 1),
        "throughput_per_s": round(len(routed) / span, 1) if span > 0 else 0.0,
        "e2e_ms": {
            "p50": round(percentile(e2e, 50), 1),
            "p95": round(percentile(e2e, 95), 1),
            "p99": round(percentile(e2e, 99), 1),
            "max": round(max(e2e, default=0.0), 1),
        },
        "http_ms": {"p50": round(percentile(http, 50), 1), "p99": round(percentile(http, 99), 1)},
        "seconds": round(span, 2),
    }


async def measure(system: str, running: Running, infra: Infra, phase: Phase) -> Outcome:
    groups = {
        **running.processes,
        "broker": [infra.kafka.pid or 0],
        "postgres": [infra.postgres.pid or 0],
    }
    resources = Resources(groups)
    out = infra.workdir / f"{system}-{phase.name}.jsonl"
    url = running.batch_intake if phase.mode == "batch" else running.intake
    assert url is not None
    command = [
        sys.executable,
        str(HERE / "loadgen.py"),
        phase.mode,
        f"--url={url}",
        f"--secret={SECRET}",
        f"--source={SOURCE}",
        f"--rate={phase.rate}",
        f"--duration={phase.duration_s}",
        f"--connections={phase.connections}",
        f"--count={phase.count}",
        f"--out={out}",
    ]
    follower = Follower(infra.bootstrap, running.topic)
    async with follower.running():
        sampler = asyncio.create_task(resources.sampling())
        before = resources.cpu()
        loadgen = await asyncio.create_subprocess_exec(*command)
        loadgen_cpu = psutil.Process(loadgen.pid)
        loadgen_peak, loadgen_seconds = 0, 0.0
        while loadgen.returncode is None:
            try:
                t = loadgen_cpu.cpu_times()
                loadgen_seconds = t.user + t.system
                loadgen_peak = max(loadgen_peak, loadgen_cpu.memory_info().rss)
            except psutil.NoSuchProcess:
                pass
            with suppress(TimeoutError):
                await within(loadgen.wait(), 0.25)
        if loadgen.returncode != 0:
            raise RuntimeError(f"the load generator failed with {loadgen.returncode}")
        requests = [json.loads(line) for line in out.read_text().splitlines() if line]
        accepted = {r["lead_id"] for r in requests if r.get("lead_id")}
        await follower.wait_for(accepted, timeout_s=3600 if phase.mode == "batch" else 600)
        after = resources.cpu()
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    figures = account(requests, follower.first_read, follower.decisions)
    routed = max(figures["routed"], 1)
    figures["cpu_us_per_lead"] = {
        name: round((after[name] - before[name]) * 1e6 / routed) for name in groups
    }
    figures["cpu_us_per_lead"]["loadgen"] = round(loadgen_seconds * 1e6 / routed)
    figures["peak_rss_mb"] = {
        name: round(rss / 2**20, 1) for name, rss in resources.peak_rss.items()
    }
    figures["peak_rss_mb"]["loadgen"] = round(loadgen_peak / 2**20, 1)
    outcome = Outcome(system, phase, figures)
    if figures["lost"] or figures["duplicated"]:
        outcome.problems.append(
            f"{system} {phase.name}: {figures['lost']} lead(s) lost, "
            f"{figures['duplicated']} duplicated"
        )
    if figures["refused"] or figures["transport_errors"]:
        outcome.problems.append(
            f"{system} {phase.name}: {figures['refused']} refused, "
            f"{figures['transport_errors']} transport errors"
        )
    return outcome


def run_phase(system: str, phase: Phase) -> Outcome:
    start = handoff if system == "handoff" else baseline
    with fresh_infra() as infra, start(infra) as running:
        outcome = asyncio.run(measure(system, running, infra, phase))
    f = outcome.figures
    print(
        f"  {system:8} {phase.name:12} routed {f['routed']:>6}/{f['accepted']:<6} "
        f"{f['throughput_per_s']:>7.1f}/s  e2e p50 {f['e2e_ms']['p50']:>7.1f} "
        f"p99 {f['e2e_ms']['p99']:>7.1f} ms  lost {f['lost']} dup {f['duplicated']}",
        flush=True,
    )
    return outcome


def median_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-key median of several runs' figures (nested dicts included)."""
    merged: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [run[key] for run in runs]
        if isinstance(first, dict):
            merged[key] = median_figures(values)
        elif isinstance(first, int | float):
            merged[key] = round(statistics.median(values), 1)
        else:
            merged[key] = first
    return merged


def plot(results: dict[str, dict[str, dict[str, Any]]], rates: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {"p50": ":", "p95": "--", "p99": "-"}
    for system, colour in (("baseline", "tab:grey"), ("handoff", "tab:blue")):
        for q, style in styles.items():
            ys = [results[system][f"rate-{r:g}"]["e2e_ms"][q] for r in rates]
            latency.plot(rates, ys, style, marker="o", color=colour, label=f"{system} {q}")
    latency.set(
        xlabel="offered leads/s",
        ylabel="end-to-end latency (ms)",
        yscale="log",
        title="HTTP accepted -> routing record read",
    )
    latency.legend(fontsize=8)
    phases = [f"rate-{r:g}" for r in rates] + ["saturation"]
    width = 0.38
    for offset, (system, colour) in enumerate((("baseline", "tab:grey"), ("handoff", "tab:blue"))):
        xs = [i + (offset - 0.5) * width for i in range(len(phases))]
        ys = [results[system][p]["throughput_per_s"] for p in phases]
        throughput.bar(xs, ys, width, color=colour, label=system)
    throughput.set_xticks(range(len(phases)), phases)
    throughput.set(ylabel="leads/s routed", title="Sustained throughput")
    throughput.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="repeat and report medians")
    parser.add_argument("--rates", type=float, nargs="*", default=[100, 500, 1000])
    parser.add_argument("--duration", type=float, default=10, help="seconds per rate phase")
    parser.add_argument(
        "--saturation", type=float, default=15, help="seconds of saturation (0: none)"
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--bulk", type=int, default=100_000, help="leads in the bulk import")
    parser.add_argument("--systems", nargs="+", default=["baseline", "handoff"])
    args = parser.parse_args()
    phases = [Phase(f"rate-{r:g}", "rate", rate=r, duration_s=args.duration) for r in args.rates]
    if args.saturation:
        phases.append(
            Phase(
                "saturation", "saturate", duration_s=args.saturation, connections=args.connections
            )
        )
    runs: list[dict[str, dict[str, dict[str, Any]]]] = []
    problems: list[str] = []
    for n in range(args.runs):
        print(f"run {n + 1}/{args.runs}", flush=True)
        run: dict[str, dict[str, dict[str, Any]]] = {}
        for system in args.systems:
            for phase in phases:
                outcome = run_phase(system, phase)
                run.setdefault(system, {})[phase.name] = outcome.figures
                problems += outcome.problems
        if args.bulk and "handoff" in args.systems:
            bulk = Phase("bulk", "batch", count=args.bulk)
            outcome = run_phase("handoff", bulk)
            run.setdefault("handoff", {})["bulk"] = outcome.figures
            problems += outcome.problems
        runs.append(run)
    results = {
        system: {p: median_figures([r[system][p] for r in runs]) for p in runs[0][system]}
        for system in runs[0]
    }
    OUT.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    document = {
        "commit": commit,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
        "cpus": os.cpu_count(),
        "runs": runs,
        "medians": results,
        "problems": problems,
    }
    (OUT / f"bench-{stamp}.json").write_text(json.dumps(document, indent=2) + "\n")
    print(summary(results, args.rates))
    if both_systems(results) and args.rates:
        plot(results, args.rates, OUT / "bench.png")
        print(f"\nresults: {OUT / f'bench-{stamp}.json'}, plot: {OUT / 'bench.png'}")
    if problems:
        print("\nFAILED: not every lead was accounted for:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    return 0


def both_systems(results: dict[str, dict[str, dict[str, Any]]]) -> bool:
    """Whether both systems ran the saturation phase (so that ratios can be given)."""
    return all("saturation" in results.get(s, {}) for s in ("baseline", "handoff"))


def summary(results: dict[str, dict[str, dict[str, Any]]], rates: list[float]) -> str:
    lines = [
        "",
        f"{'system':9}{'phase':12}{'routed/s':>9}{'e2e p50':>10}{'p95':>10}{'p99':>10}{'max':>10}"
        f"{'http p50':>10}{'p99':>10}  cpu us/lead (per process group)",
    ]
    for system, phases in results.items():
        for name, f in phases.items():
            e, h = f["e2e_ms"], f["http_ms"]
            cpu = " ".join(f"{k}={v:g}" for k, v in f["cpu_us_per_lead"].items())
            lines.append(
                f"{system:9}{name:12}{f['throughput_per_s']:>9.0f}"
                + "".join(f" {ms:>9.1f}" for ms in (e["p50"], e["p95"], e["p99"], e["max"]))
                + "".join(f" {ms:>9.1f}" for ms in (h["p50"], h["p99"]))
                + f"  {cpu}"
            )
    for system, phases in results.items():
        peak: dict[str, float] = {}
        for figures in phases.values():
            for group, mb in figures["peak_rss_mb"].items():
                peak[group] = max(peak.get(group, 0.0), mb)
        lines.append(f"peak RSS (MB) {system}: " + " ".join(f"{k}={v:g}" for k, v in peak.items()))
    if "bulk" in results.get("handoff", {}):
        bulk = results["handoff"]["bulk"]
        lines.append(
            f"bulk import: {bulk['accepted']:g} leads accepted, {bulk['routed']:g} routed in "
            f"{bulk['seconds']:g} s ({bulk['throughput_per_s']:g}/s), lost {bulk['lost']:g}, "
            f"duplicated {bulk['duplicated']:g}"
        )
    if "baseline" in results and "handoff" in results:
        ratio = results["handoff"]["saturation"]["throughput_per_s"] / max(
            results["baseline"]["saturation"]["throughput_per_s"], 1e-9
        )
        if rates:
            mid = min(rates, key=lambda r: abs(r - 500))
            p99 = results["handoff"][f"rate-{mid:g}"]["e2e_ms"]["p99"] / max(
                results["baseline"][f"rate-{mid:g}"]["e2e_ms"]["p99"], 1e-9
            )
            lines.append(f"ratio p99_at_{mid:g}_vs_baseline={p99:.2f}")
        lines.append(f"ratio throughput_vs_baseline={ratio:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
