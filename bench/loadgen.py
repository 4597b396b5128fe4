"""The benchmark's load generator, run as a process of its own so its CPU is its own.

Sends signed leads (Standard Webhooks) over keep-alive HTTP/1.1 connections, in one of three
modes, and writes one JSON record per request to `--out`:

- `rate`: open loop at a fixed offered rate. Request i is due at start + i/rate whatever the
  answers do, and its latency is counted from when it was due, so a server that falls behind
  shows it (no coordinated omission).
- `saturate`: closed loop, `--connections` requests in flight at all times.
- `batch`: the bulk import, `--count` leads in batches of `--batch-size` posted one at a time.

The HTTP client is a few lines over asyncio streams rather than httpx: at 1,000 requests/s
on two shared cores the client's own CPU would otherwise distort what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

INDUSTRIES = ["Software", "Fintech", "Manufacturing", "E-commerce", "Education"]
COUNTRIES = ["DE", "GB", "US", "SE", "BR", "FR"]
TITLES = ["CTO", "VP Engineering", "Developer", "Head of Data", "Student", "Director IT"]


def lead(i: int, run: str) -> dict[str, Any]:
    """One webinar attendee: varied fit, a person of their own."""
    return {
        "email": f"attendee{i}.{run}@company{i % 97}.io",
        "company": f"Company {i % 97}",
        "title": TITLES[i % len(TITLES)],
        "industry": INDUSTRIES[i % len(INDUSTRIES)],
        "employees": 20 + (i * 37) % 2000,
        "country": COUNTRIES[i % len(COUNTRIES)],
        "source": "webinar",
        "campaign": "bench",
    }


@dataclass
class Signer:
    """Standard Webhooks signatures: HMAC-SHA256 over `id.timestamp.body`."""

    secret: str
    source: str
    key: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.key = base64.b64decode(self.secret.removeprefix("whsec_"))

    def headers(self, body: bytes) -> dict[str, str]:
        delivery, at = uuid.uuid4().hex, str(int(time.time()))
        mac = hmac.new(self.key, f"{delivery}.{at}.".encode() + body, hashlib.sha256).digest()
        return {
            "content-type": "application/json",
            "webhook-source": self.source,
            "webhook-id": delivery,
            "webhook-timestamp": at,
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        }


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        self.writer.write(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body)
        status_line = await self.reader.readuntil(b"\r\n")
        length, close = 0, False
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and "close" in value.lower():
                close = True
        answer = await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.writer = None
        return int(status_line.split()[1]), answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Generator:
    url: str
    signer: Signer
    records: list[dict[str, Any]] = field(default_factory=list)
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path

    async def send(self, connection: Connection, i: int, due: float) -> None:
        body = json.dumps(lead(i, self.run)).encode()
        sent = time.time()
        try:
            status, answer = await connection.post(self.path, self.signer.headers(body), body)
        except (OSError, asyncio.IncompleteReadError) as exc:
            connection.close()
            connection.writer = None
            self.records.append({"i": i, "due": due, "sent": sent, "error": repr(exc)})
            return
        answered = time.time()
        lead_id = json.loads(answer).get("lead_id") if 200 <= status < 300 else None
        self.records.append(
            {
                "i": i,
                "due": due,
                "sent": sent,
                "answered": answered,
                "status": status,
                "lead_id": lead_id,
            }
        )

    async def at_rate(self, rate: float, duration_s: float, connections: int) -> None:
        idle: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(connections):
            idle.put_nowait(Connection(self.host, self.port))
        total = int(rate * duration_s)
        start = time.time() + 0.2
        tasks: list[asyncio.Task[None]] = []

        async def one(i: int, due: float) -> None:
            connection = await idle.get()
            try:
                await self.send(connection, i, due)
            finally:
                idle.put_nowait(connection)

        for i in range(total):
            due = start + i / rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        while not idle.empty():
            idle.get_nowait().close()

    async def saturate(self, duration_s: float, connections: int) -> None:
        stop_at = time.time() + duration_s
        counter = iter(range(10**9))

        async def worker() -> None:
            connection = Connection(self.host, self.port)
            while time.time() < stop_at:
                now = time.time()
                await self.send(connection, next(counter), now)
            connection.close()

        await asyncio.gather(*(worker() for _ in range(connections)))

    async def batches(self, count: int, size: int) -> None:
        connection = Connection(self.host, self.port)
        for first in range(0, count, size):
            leads = [lead(i, self.run) for i in range(first, min(first + size, count))]
            body = json.dumps({"leads": leads}).encode()
            due = time.time()
            status, answer = await connection.post(self.path, self.signer.headers(body), body)
            answered = time.time()
            results = json.loads(answer).get("results", []) if 200 <= status < 300 else []
            for result in results:
                self.records.append(
                    {
                        "i": first + result["index"],
                        "due": due,
                        "sent": due,
                        "answered": answered,
                        "status": status if result["status"] != "rejected" else 422,
                        "lead_id": result["lead_id"],
                    }
                )
            if not results:
                self.records.append({"i": first, "due": due, "sent": due, "status": status})
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["rate", "saturate", "batch"])
    parser.add_argument("--url", required=True, help="the intake endpoint")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    generator = Generator(args.url, Signer(args.secret, args.source))
    if args.mode == "rate":
        work = generator.at_rate(args.rate, args.duration, args.connections)
    elif args.mode == "saturate":
        work = generator.saturate(args.duration, args.connections)
    else:
        work = generator.batches(args.count, args.batch_size)
    try:
        import uvloop

        uvloop.run(work)
    except ImportError:
        asyncio.run(work)
    args.out.write_text("\n".join(json.dumps(r) for r in generator.records) + "\n")


if __name__ == "__main__":
    main()
