"""Where Handoff's CPU goes under load: py-spy samples each service while the load generator
saturates the intake, and the hottest functions are printed per service.

    python bench/profile_services.py [--seconds 20] [--mode saturate|rate --rate 300] [--gil]

Writes bench/out/profile-<service>.svg (flame graphs) and bench/out/profile-<service>.txt
(collapsed stacks). Sampling is `--nonblocking`, so the services run at full speed.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from run import OUT, Phase, fresh_infra, handoff, measure

PY_SPY = Path(sys.executable).with_name("py-spy")


OUTER = ("asyncio/", "<frozen", "threading.py", "contextlib.py", "uvicorn/", "starlette/")


ACTIVITIES = (
    ("HTTP requests", "RequestResponseCycle.run_asgi"),
    ("consumers", "ConsumerLoop."),
    ("outbox relay", "OutboxRelay."),
    ("SQLAlchemy in its greenlets (any of the above)", "greenlet_spawn"),
    ("broker client", "aiokafka/"),
)


def activities(collapsed: Path) -> str:
    """Samples by what the process was doing, by the first activity a stack shows."""
    counts: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        name = next((name for name, mark in ACTIVITIES if mark in stack), "event loop and other")
        counts[name] += int(count)
    samples = sum(counts.values()) or 1
    return "\n".join(f"    {100 * n / samples:5.1f}%  {name}" for name, n in counts.most_common())


def hottest(collapsed: Path, top: int) -> str:
    """The functions with the most samples, on their own (self) and with callees (total)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    if not samples:
        return "  no samples"
    lines = [f"  {samples} samples; self:"]
    lines += [f"    {100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("  total (with callees), handoff code and libraries:")
    # Frames read "function (package/module.py:line)"; the event loop's and the process's
    # outer frames are under every sample and say nothing.
    interesting = [
        (f, n)
        for f, n in total.most_common()
        if n < 0.9 * samples and "/" in f and not f.rpartition("(")[2].startswith(OUTER)
    ]
    lines += [f"    {100 * n / samples:5.1f}%  {f}" for f, n in interesting[:top]]
    return "\n".join(lines)


def batch_sizes(metrics_url: str) -> str:
    """Records consumed per consumed batch, from a service's own metrics: the fixed costs of a
    batch (its transaction, processed marks, offset commit) are shared by this many leads."""
    records = batches = 0.0
    for family in text_string_to_metric_families(httpx.get(metrics_url, timeout=10).text):
        for sample in family.samples:
            if sample.name == "handoff_events_consumed_total":
                records += sample.value
            elif sample.name == "handoff_batch_processing_seconds_count":
                batches += sample.value
    if not batches:
        return "  no batches consumed"
    return f"  {records:.0f} records in {batches:.0f} batches: {records / batches:.1f} per batch"


def profile(args: argparse.Namespace) -> None:
    phase = Phase(
        "profile",
        args.mode,
        rate=args.rate,
        duration_s=args.seconds + 4,
        connections=args.connections,
    )
    OUT.mkdir(exist_ok=True)
    with fresh_infra() as infra, handoff(infra) as running:
        spies = []
        for name, (pid,) in running.processes.items():
            for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
                spies.append(
                    subprocess.Popen(
                        [
                            str(PY_SPY),
                            "record",
                            "--pid",
                            str(pid),
                            "--duration",
                            str(int(args.seconds)),
                            "--rate",
                            "50",
                            "--nonblocking",
                            *(["--gil"] if args.gil else []),
                            "--format",
                            fmt,
                            "--output",
                            str(OUT / f"profile-{name}.{suffix}"),
                        ],
                        stdout=subprocess.DEVNULL,
                    )
                )
        outcome = asyncio.run(measure("handoff", running, infra, phase))
        for spy in spies:
            spy.wait()
        sizes = {name: batch_sizes(url) for name, url in running.metrics.items()}
    figures = outcome.figures
    print(
        f"routed {figures['routed']} at {figures['throughput_per_s']}/s; "
        f"cpu us/lead {figures['cpu_us_per_lead']}"
    )
    for name in running.processes:
        collapsed = OUT / f"profile-{name}.txt"
        print(f"\n{name}:\n{sizes[name]}\n  by activity:\n{activities(collapsed)}")
        print(hottest(collapsed, args.top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--mode", choices=["saturate", "rate"], default="saturate")
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--gil", action="store_true", help="sample only the thread holding the GIL (CPU time)"
    )
    args = parser.parse_args()
    profile(args)


if __name__ == "__main__":
    main()
