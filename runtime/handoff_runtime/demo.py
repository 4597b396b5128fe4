"""`python -m handoff_runtime.demo` (what `make demo` calls, next to a running `make run`).

Streams synthetic leads into the scorer at a steady rate, follows their routing on Kafka with
its own consumer (no group: it reads every partition from the start and keeps only the leads it
sent), and plays a CRM for part of the assigned leads: it moves them through the lifecycle, and
when sales lets a lead go, the freed slot goes to the best lead waiting in the backlog, which the
demo shows being assigned. It ends with a summary and the router's capacity table.

Exit codes: 0 every accepted lead was routed, 1 some were never routed (or the scorer stopped
answering), 2 the system is not reachable, 130 interrupted (the summary so far is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import time
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from standardwebhooks.webhooks import Webhook

from handoff_schemas import (
    LEAD_ROUTING,
    LEAD_STATUS,
    CloudEvent,
    InvalidEvent,
    LeadAssignedV1,
    LeadNurtureRequestedV1,
    LeadQueuedV1,
    decode,
)

from .aio import cancel_and_wait, within

FOLLOWED_TOPICS = (LEAD_ROUTING.name, LEAD_STATUS.name)
SETTLE_S = 2.0
"""Quiet time after the last event before the demo ends (backlog drains arrive late)."""
STATUS_404_RETRIES = 6
"""feedback learns of a lead from Kafka; a status posted before it has answers 404 (one
posted before feedback saw the assignment waits for it: 202)."""

# --- synthetic leads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Company:
    name: str
    domain: str
    industry: str
    employees: int | None
    country: str


IDEAL_COMPANIES = (
    Company("Nordlicht Software", "nordlicht-software.de", "Software", 240, "DE"),
    Company("Datawerk", "datawerk.io", "Software", 95, "DE"),
    Company("Rheinshop", "rheinshop.de", "Online Retail", 270, "DE"),
    Company("Zugspitze Labs", "zugspitze-labs.de", "Internet", 60, "DE"),
    Company("Alpenpay", "alpenpay.at", "Fintech", 85, "AT"),
    Company("Donauledger", "donauledger.at", "Financial Technology", 310, "AT"),
    Company("Helvetic Cloud", "helvetic-cloud.ch", "SaaS", 420, "CH"),
    Company("Kvarn Commerce", "kvarn.se", "E-commerce", 160, "SE"),
    Company("Tallbo Systems", "tallbo.se", "Computer Software", 780, "SE"),
    Company("Brightledger", "brightledger.co.uk", "Fintech", 610, "GB"),
    Company("Fernwood Analytics", "fernwood.io", "SaaS", 140, "GB"),
    Company("Parcelry", "parcelry.com", "E-commerce", 330, "US"),
    Company("Summit Ledger", "summitledger.com", "Financial Technology", 520, "US"),
)
MEDIOCRE_COMPANIES = (
    Company("Brauer Maschinenbau", "brauer-maschinenbau.de", "Manufacturing", 1400, "DE"),
    Company("Lowlands Logistics", "lowlands-logistics.nl", "Logistics", 350, "NL"),
    Company("Clinique Riviera", "clinique-riviera.fr", "Hospital & Health Care", 900, "FR"),
    Company("Iberia Consulting", "iberiaconsult.es", "Management Consulting", 45, "ES"),
    Company("Meridian Retail Group", "meridianretail.com", "Retail", 3200, "US"),
    Company("Baltic Freight", "balticfreight.pl", "Transportation", 210, "PL"),
    Company("Copperfield Software", "copperfield.ie", "Software", 30, "IE"),
    Company("Vinterhav Energi", "vinterhav.no", "Utilities", 1800, "NO"),
    Company("Tiny Pixel Studio", "tinypixel.de", "Design", 8, "DE"),
)
UNIVERSITIES = (
    Company("TU München", "tum.de", "Higher Education", 11000, "DE"),
    Company("Universidade de São Paulo", "usp.br", "Higher Education", 20000, "BR"),
    Company("IIT Delhi", "iitd.ac.in", "Higher Education", 3000, "IN"),
)
FREE_MAIL = ("gmail.com", "yahoo.com", "gmx.de", "hotmail.com", "outlook.com", "web.de")


def _names(firsts: str, lasts: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(firsts.split(", ")), tuple(lasts.split(", "))


NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "dach": _names(
        "Lukas, Anna, Felix, Lea, Jonas, Hannah, Maximilian, Sophie, Tobias, Katharina, "
        "Niklas, Johanna, Florian, Laura",
        "Müller, Schmidt, Schneider, Fischer, Weber, Wagner, Becker, Hoffmann, Schulz, Koch, "
        "Bauer, Richter, Huber, Steiner, Brunner",
    ),
    "nordic": _names(
        "Erik, Astrid, Oskar, Elin, Johan, Maja, Lars, Ingrid, Nils, Freja",
        "Andersson, Johansson, Karlsson, Nilsson, Lindberg, Berg, Larsen, Holm",
    ),
    "anglo": _names(
        "Oliver, Emma, James, Charlotte, Liam, Olivia, Noah, Amelia, Harry, Grace, Ethan, Sophia",
        "Smith, Taylor, Brown, Wilson, Clarke, Walker, Johnson, Miller, Davies, Evans, Murphy, "
        "Carter",
    ),
    "other": _names(
        "Camille, Louis, Daan, Sanne, Lucía, Pablo, Kasia, Piotr, Priya, Arjun, Ana, Pedro",
        "Martin, Bernard, de Vries, Jansen, García, López, Nowak, Kowalski, Sharma, Patel, "
        "Silva, Souza",
    ),
}
REGION = {"DE": "dach", "AT": "dach", "CH": "dach", "SE": "nordic", "NO": "nordic"}
REGION |= dict.fromkeys(("GB", "US", "IE"), "anglo")

SENIOR_TITLES = (
    "VP Sales", "Head of Marketing", "CTO", "Director of Revenue Operations",
    "Chief Revenue Officer", "Head of Growth", "VP Engineering", "Director of Sales",
    "Founder & CEO", "Head of E-commerce", "CFO", "Leiterin Vertrieb",
)  # fmt: skip
MID_TITLES = (
    "Marketing Manager", "Sales Team Lead", "Product Manager", "Procurement Manager",
    "IT Specialist", "Account Executive", "Operations Coordinator",
)  # fmt: skip
STUDENT_TITLES = ("Student", "Werkstudent", "PhD candidate", "Intern")
CAMPAIGNS = (
    "webinar-2026-11", "paid-search-q4", "trade-show-berlin", "newsletter-nov",
    "linkedin-abm-dach", "ebook-revops-playbook",
)  # fmt: skip
SOURCES = ("hubspot", "website", "import")
ACTIVITY_TYPES = (
    "webinar_attended", "pricing_page_viewed", "demo_requested", "whitepaper_downloaded",
    "email_clicked",
)  # fmt: skip


def _ascii(text: str) -> str:
    text = text.replace("ü", "ue").replace("ö", "oe").replace("ä", "ae").replace("ß", "ss")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in text.lower() if c.isalnum() or c in ".-")


def _activities(rng: random.Random, now: datetime, keen: bool) -> list[dict[str, str]]:
    weights = (3, 3, 2, 3, 4) if keen else (1, 1, 0.2, 2, 5)
    count = rng.choice((1, 2, 3, 4, 5) if keen else (0, 0, 1, 1, 2))
    picks = rng.choices(ACTIVITY_TYPES, weights=weights, k=count)
    return [
        {
            "type": kind,
            "occurred_at": (now - timedelta(seconds=rng.uniform(0, 60 * 86400))).isoformat(
                timespec="seconds"
            ),
        }
        for kind in picks
    ]


def make_leads(count: int, rng: random.Random, now: datetime | None = None) -> list[dict[str, Any]]:
    """`count` varied leads: about 45 % ideal fits, 30 % mediocre, 25 % poor (free-mail
    addresses, students, tiny or far-away companies). Emails are unique within the batch."""
    now = now or datetime.now(UTC)
    leads: list[dict[str, Any]] = []
    emails: set[str] = set()
    while len(leads) < count:
        kind = rng.choices(("ideal", "mediocre", "poor"), weights=(45, 30, 25))[0]
        if kind == "ideal":
            company = rng.choice(IDEAL_COMPANIES)
            title = rng.choice(SENIOR_TITLES)
            domain: str | None = company.domain
        elif kind == "mediocre":
            company = rng.choice(MEDIOCRE_COMPANIES + IDEAL_COMPANIES[:3])
            title = rng.choice(MID_TITLES)
            domain = company.domain
        elif rng.random() < 0.5:
            company = rng.choice(UNIVERSITIES)
            title = rng.choice(STUDENT_TITLES)
            domain = company.domain
        else:
            company = rng.choice(MEDIOCRE_COMPANIES + IDEAL_COMPANIES)
            title = rng.choice((*MID_TITLES, "Freelancer", "Consultant"))
            domain = None  # a free-mail address
        firsts, lasts = NAMES[REGION.get(company.country, "other")]
        first, last = rng.choice(firsts), rng.choice(lasts)
        mail_domain = domain or rng.choice(FREE_MAIL)
        local = f"{_ascii(first)}.{_ascii(last).replace(' ', '')}"
        if domain is None:
            local += str(rng.randint(1, 99))
        email = f"{local}@{mail_domain}"
        if email in emails:
            continue
        emails.add(email)
        leads.append(
            {
                "email": email,
                "name": f"{first} {last}",
                "company": company.name if domain else rng.choice((company.name, None)),
                "domain": mail_domain,
                "title": title,
                "industry": company.industry,
                "employees": company.employees,
                "country": company.country,
                "source": rng.choice(SOURCES),
                "campaign": rng.choice(CAMPAIGNS),
                "activities": _activities(rng, now, keen=kind == "ideal"),
            }
        )
    return leads


@dataclass(frozen=True)
class Script:
    """What the demo CRM does with an assigned lead: after a pause, these (status, reason)
    steps. Every script ends in a status that frees the rep's slot, so a finished demo run
    leaves the team as it found it and the next run has the same room."""

    weight: float
    first_after_s: tuple[float, float]
    steps: tuple[tuple[str, str | None], ...]


def _script(weight: float, first_after_s: tuple[float, float], steps: str) -> Script:
    parsed = tuple((s.partition(":")[0], s.partition(":")[2] or None) for s in steps.split())
    return Script(weight, first_after_s, parsed)


QUICK = (0.8, 2.5)
LATER = (6.0, 12.0)
"""Leads worked LATER hold their slot while the burst arrives: the team fills up and a backlog
forms, which drains as slots free."""
SCRIPTS: tuple[Script, ...] = (
    _script(0.15, QUICK, "accepted contacted qualified"),
    _script(0.08, QUICK, "accepted contacted qualified converted won"),
    _script(0.12, QUICK, "accepted contacted disqualified:no_budget"),
    _script(0.08, QUICK, "accepted contacted disqualified:no_timeline"),
    _script(0.05, QUICK, "accepted disqualified:no_need"),
    _script(0.10, QUICK, "accepted contacted recycled:no_timeline"),
    _script(0.07, QUICK, "accepted recycled:unreachable"),
    _script(0.20, LATER, "accepted contacted qualified converted lost:competitor"),
    _script(0.15, LATER, "accepted contacted qualified"),
)
DEAL_SIZES = (12_000, 24_000, 36_000, 48_000, 90_000)
"""Won amounts the demo CRM reports (revenue per campaign in the shared KPIs)."""
QUIET_STATUSES = frozenset({"accepted", "contacted"})
"""Posted like every step, but not printed: they change nothing anyone downstream acts on."""
NOT_WORKING = frozenset({"qualified", "converted", "won", "lost", "disqualified", "recycled"})


def pick_script(rng: random.Random) -> Script:
    return rng.choices(SCRIPTS, weights=[s.weight for s in SCRIPTS])[0]


# --- following the leads ----------------------------------------------------------------------


@dataclass
class Tracked:
    """A lead the demo sent and what it has seen happen to it."""

    lead_id: str
    email: str
    grade: str = "?"
    score: float | None = None
    outcome: str | None = None
    rep_name: str | None = None
    status: str = "assigned"
    assigned: bool = False
    queued: bool = False
    nurture: bool = False
    scripted: bool = False


@dataclass
class Stats:
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    assigned: int = 0
    from_backlog: int = 0
    queued: int = 0
    nurture: int = 0
    status_posted: int = 0
    status_refused: int = 0


@dataclass
class Demo:
    """One demo run: sends leads, follows their events, plays the CRM, summarises."""

    scorer: str
    router: str
    feedback: str
    kafka: str
    leads: int
    rate: float
    seed: int | None = None
    webhook_source: str = "local"
    webhook_secret: str | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.stats = Stats()
        self.tracked: dict[str, Tracked] = {}
        self.early: dict[str, list[CloudEvent[Any]]] = {}
        self.started = datetime.now(UTC)
        self.last_send = time.monotonic()
        self.last_event = time.monotonic()
        self.sending_done = False
        self.aborted = False
        self.feedback_down = False
        self.scripts: set[asyncio.Task[None]] = set()
        self.errors_seen: set[str] = set()
        self.width = 30
        self.color = bool(getattr(self.out, "isatty", lambda: False)()) and not os.environ.get(
            "NO_COLOR"
        )
        self.http: httpx.AsyncClient | None = None

    def webhook_headers(self, body: bytes) -> dict[str, str]:
        """Headers of a webhook delivery from this demo's source, signed when it has a secret."""
        headers = {"content-type": "application/json", "webhook-source": self.webhook_source}
        if self.webhook_secret:
            delivery_id, now = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
            headers |= {
                "webhook-id": delivery_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": Webhook(self.webhook_secret).sign(
                    delivery_id, now, body.decode()
                ),
            }
        return headers

    # output

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def line(self, lead: Tracked | None, text: str, *, email: str | None = None) -> None:
        """One aligned line: grade, score, email, what happened."""
        grade = lead.grade if lead is not None and lead.score is not None else ""
        score = f"{lead.score:5.1f}" if lead is not None and lead.score is not None else ""
        who = email or (lead.email if lead is not None else "")
        if len(who) > self.width:
            who = who[: self.width - 1] + "…"
        self.say(f"  {grade:>1}  {score:>5}  {who:<{self.width}}  {text}")

    # checks

    async def reachable(self) -> str | None:
        """None when every service answers /readyz with 200, else what is wrong."""
        assert self.http is not None
        for name, url in (
            ("scorer", self.scorer),
            ("router", self.router),
            ("feedback", self.feedback),
        ):
            try:
                answer = await self.http.get(f"{url}/readyz", timeout=3)
            except httpx.HTTPError as exc:
                return f"the {name} at {url} does not answer ({type(exc).__name__})"
            if answer.status_code != 200:
                return f"the {name} at {url} is not ready: {answer.status_code} {answer.text[:200]}"
        return None

    # run

    async def run(self, stop: asyncio.Event) -> int:
        async with httpx.AsyncClient(timeout=10) as http:
            self.http = http
            problem = await self.reachable()
            if problem is not None:
                self.say(
                    f"{problem}.\nStart the system with `make run` first (in another terminal)."
                )
                return 2
            consumer = await self._consumer()
            if consumer is None:
                return 2
            await self._room()
            batch = make_leads(self.leads, self.rng)
            self.width = min(34, max((len(lead["email"]) for lead in batch), default=10))
            self.say(
                f"Sending {len(batch)} leads at {self.rate:g}/s to {self.scorer}; following "
                f"{' and '.join(FOLLOWED_TOPICS)} on {self.kafka}."
            )
            self.say(
                "The demo CRM works assigned leads (accepted and contacted steps are posted, not "
                "shown); a lead it lets go frees its rep's slot for the best lead in the backlog."
            )
            self.say(
                self.paint(f"  {'G':>1}  {'score':>5}  {'lead':<{self.width}}  what happened", "2")
            )
            follower = asyncio.create_task(self._follow(consumer))
            sender = asyncio.create_task(self._send(batch))
            try:
                interrupted = await self._wait(stop, sender, follower)
            finally:
                await cancel_and_wait([sender, follower, *self.scripts])
                await _stop_consumer(consumer)
            await self._summary(interrupted)
            if interrupted:
                return 130
            return 1 if self._unrouted() or self.aborted else 0

    async def _consumer(self) -> AIOKafkaConsumer | None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka,
            client_id="handoff-demo",
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        try:
            await within(consumer.start(), 10)
            await within(consumer.topics(), 10)
            partitions = [
                TopicPartition(topic, p)
                for topic in FOLLOWED_TOPICS
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not partitions:
                raise RuntimeError(f"the topics {', '.join(FOLLOWED_TOPICS)} do not exist")
            consumer.assign(partitions)
            await within(consumer.seek_to_beginning(*partitions), 10)
        except Exception as exc:
            await _stop_consumer(consumer)
            self.say(
                f"cannot follow the leads on the broker at {self.kafka} ({exc!r}).\n"
                "Start the system with `make run` first, or pass --kafka."
            )
            return None
        return consumer

    async def _wait(
        self, stop: asyncio.Event, sender: asyncio.Task[None], follower: asyncio.Task[None]
    ) -> bool:
        """Until every accepted lead is routed and things are quiet, 60 s after the last send,
        or Ctrl-C. Returns whether it was interrupted."""
        while not stop.is_set():
            if follower.done():
                follower.result()  # a crash of the follower surfaces here
                return False
            now = time.monotonic()
            if sender.done():
                sender.result()
                if self.aborted and now - self.last_event > SETTLE_S and not self.scripts:
                    return False
                if now - self.last_send > 60:
                    self.say(self.paint("  giving up: 60 s since the last lead was sent", "33"))
                    return False
                settled = now - self.last_event > SETTLE_S and not self.scripts
                if settled and not self._unrouted():
                    return False
            with contextlib.suppress(TimeoutError):
                await within(stop.wait(), 0.2)
        return True

    def _unrouted(self) -> list[Tracked]:
        return [t for t in self.tracked.values() if t.outcome is None]

    async def _send(self, batch: Sequence[dict[str, Any]]) -> None:
        assert self.http is not None
        began = time.monotonic()
        failures = 0
        for i, lead in enumerate(batch):
            delay = began + i / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.stats.sent += 1
            self.last_send = time.monotonic()
            try:
                body = json.dumps(lead).encode()
                answer = await self.http.post(
                    f"{self.scorer}/v1/leads", content=body, headers=self.webhook_headers(body)
                )
            except httpx.HTTPError as exc:
                self.stats.rejected += 1
                failures += 1
                self.line(None, self.paint(f"not sent: {exc!r}", "31"), email=lead["email"])
                if failures >= 3:
                    self.say(self.paint(f"the scorer at {self.scorer} stopped answering", "31"))
                    self.aborted = True
                    break
                continue
            failures = 0
            if answer.status_code != 202:
                self.stats.rejected += 1
                detail = _detail(answer)
                self.line(None, self.paint(f"refused: {detail}", "31"), email=lead["email"])
                continue
            self.stats.accepted += 1
            lead_id = answer.json()["lead_id"]
            tracked = Tracked(lead_id=lead_id, email=lead["email"])
            self.tracked[lead_id] = tracked
            for event in self.early.pop(lead_id, []):
                await self._on_event(tracked, event)
        self.last_send = time.monotonic()
        self.sending_done = True
        self.early.clear()

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        since_ms = int(self.started.timestamp() * 1000) - 5000
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            for records in batches.values():
                for record in records:
                    if record.timestamp is not None and record.timestamp < since_ms:
                        continue  # from before this run
                    try:
                        event = decode(record.value)
                    except InvalidEvent:
                        continue
                    lead_id = event.subject
                    tracked = self.tracked.get(lead_id)
                    if tracked is not None:
                        await self._on_event(tracked, event)
                    elif event.time >= self.started and not self.sending_done:
                        # maybe ours, and the scorer's answer has not arrived yet
                        self.early.setdefault(lead_id, []).append(event)

    async def _on_event(self, lead: Tracked, event: CloudEvent[Any]) -> None:
        data = event.data
        self.last_event = time.monotonic()
        if isinstance(data, LeadAssignedV1):
            lead.grade, lead.score = data.decision.grade.value, data.decision.score
            chosen = next((c for c in data.decision.candidates if c.chosen), None)
            load = f" ({chosen.working + 1}/{chosen.capacity})" if chosen else ""
            backlog = data.decision.rule == "backlog_drain" or lead.outcome == "queued"
            lead.outcome, lead.rep_name, lead.status = "assigned", data.rep_name, "assigned"
            if not lead.assigned:
                self.stats.assigned += 1
                lead.assigned = True
            if backlog:
                self.stats.from_backlog += 1
                text = f"-> assigned from the backlog to {data.rep_name}{load}"
            else:
                text = f"-> assigned to {data.rep_name}{load}"
            self.line(lead, self.paint(text, "1;32" if backlog else "32"))
            if not lead.scripted:
                lead.scripted = True
                self._start_script(lead)
        elif isinstance(data, LeadQueuedV1):
            lead.grade, lead.score = data.decision.grade.value, data.decision.score
            lead.outcome = "queued"
            if not lead.queued:
                self.stats.queued += 1
                lead.queued = True
            self.line(lead, self.paint("-> queued (team full, waits in the backlog)", "33"))
        elif isinstance(data, LeadNurtureRequestedV1):
            if data.requested_by == "router":
                lead.outcome = "nurture"
                if not lead.nurture:
                    self.stats.nurture += 1
                    lead.nurture = True
                await self._fill_score(lead)
                self.line(lead, self.paint(f"-> nurture ({data.reason.value})", "34"))
            else:
                until = f", re-qualify on {data.requalify_on}" if data.requalify_on else ""
                text = f"   marketing nurtures it ({data.reason.value}{until})"
                self.line(None, self.paint(text, "2"), email=lead.email)

    async def _fill_score(self, lead: Tracked) -> None:
        """Nurture requests carry no score: ask the scorer for it."""
        assert self.http is not None
        with contextlib.suppress(httpx.HTTPError, KeyError, TypeError, ValueError):
            answer = await self.http.get(f"{self.scorer}/v1/leads/{lead.lead_id}", timeout=3)
            if answer.status_code == 200:
                score = answer.json()["score"]
                lead.grade, lead.score = str(score["grade"]), float(score["score"])

    # the demo CRM

    def _start_script(self, lead: Tracked) -> None:
        script = pick_script(self.rng)
        # once every lead is sent there is no burst left to show: work the rest promptly
        pause = self.rng.uniform(*(QUICK if self.sending_done else script.first_after_s))
        task = asyncio.create_task(self._play(lead, script.steps, pause))
        self.scripts.add(task)
        task.add_done_callback(self.scripts.discard)

    async def _play(
        self, lead: Tracked, steps: Sequence[tuple[str, str | None]], pause: float
    ) -> None:
        assert self.http is not None
        await asyncio.sleep(pause)
        for status, reason in steps:
            change: dict[str, object] = {"status": status, "reason": reason, "actor": "demo-crm"}
            if status == "won":
                change["amount"] = float(self.rng.choice(DEAL_SIZES))
            body = json.dumps(change).encode()
            url = f"{self.feedback}/v1/leads/{lead.lead_id}/status"
            answer: httpx.Response | None = None
            for _ in range(STATUS_404_RETRIES):
                try:
                    answer = await self.http.post(
                        url, content=body, headers=self.webhook_headers(body)
                    )
                except httpx.HTTPError as exc:
                    if not self.feedback_down:  # say it once, not once per lead
                        self.feedback_down = True
                        text = f"   crm: {status} not sent, feedback does not answer: {exc!r}"
                        self.line(None, self.paint(text, "31"), email=lead.email)
                    return
                if answer.status_code != 404:
                    break
                await asyncio.sleep(0.5)  # feedback has not seen the assignment yet
            assert answer is not None
            self.last_event = time.monotonic()
            if answer.status_code >= 300:
                self.stats.status_refused += 1
                text = f"   crm: {status} refused: {answer.status_code} {_detail(answer)}"
                self.line(None, self.paint(text, "31"), email=lead.email)
                return
            self.stats.status_posted += 1
            previous, lead.status = lead.status, status
            why = f" ({reason})" if reason else ""
            frees = ""
            if status in NOT_WORKING and previous not in NOT_WORKING and lead.rep_name:
                frees = f", frees a slot of {lead.rep_name}"
            if status not in QUIET_STATUSES:
                text = f"   crm: {previous} -> {status}{why}{frees}"
                self.line(None, self.paint(text, "36" if frees else "2"), email=lead.email)
            await asyncio.sleep(self.rng.uniform(0.4, 1.5))

    # the end

    async def _summary(self, interrupted: bool) -> None:
        s = self.stats
        unrouted = self._unrouted()
        still_queued = sum(1 for t in self.tracked.values() if t.outcome == "queued")
        self.say()
        self.say(self.paint("Summary" + (" (interrupted)" if interrupted else ""), "1"))
        rows = [
            ("sent", s.sent, ""),
            ("accepted (202)", s.accepted, f"{s.rejected} not accepted" if s.rejected else ""),
            ("assigned", s.assigned, f"{s.from_backlog} from the backlog"),
            ("queued", s.queued, f"{still_queued} still waiting"),
            ("nurture", s.nurture, "low fit, back to marketing"),
            ("status changes posted", s.status_posted, f"{s.status_refused} refused"),
            ("never routed", len(unrouted), ""),
        ]
        for label, value, note in rows:
            self.say(f"  {label:<24}{value:>5}   {note}".rstrip())
        for lead in unrouted[:10]:
            self.say(self.paint(f"    not routed: {lead.email} ({lead.lead_id})", "31"))
        await self._capacity()

    async def _teams(self) -> list[dict[str, Any]] | None:
        """The teams of GET router /v1/capacity, or None if it does not answer."""
        assert self.http is not None
        try:
            answer = await self.http.get(f"{self.router}/v1/capacity", timeout=5)
            if answer.status_code != 200:
                return None
            teams = answer.json().get("teams", [])
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return [t for t in teams if isinstance(t, dict)] if isinstance(teams, list) else None

    async def _room(self) -> None:
        """Say how much room sales has before the run, and why leads may only queue."""
        teams = await self._teams()
        if teams is None:
            return
        if not teams:
            self.say(
                self.paint(
                    "No sales team exists: leads will not be routed (make run seeds one).", "33"
                )
            )
        for team in teams:
            name, free = team.get("name", "?"), team.get("headroom", 0)
            capacity, waiting = team.get("capacity", 0), team.get("backlog", 0)
            self.say(f"Team {name}: {free} of {capacity} slots free, {waiting} leads waiting.")
            if free == 0 and waiting:
                self.say(
                    self.paint(
                        "  Reps are full with leads from an earlier (interrupted?) run, so new "
                        "leads queue behind them. To start afresh: stop make run, delete "
                        ".data/pg, make run again.",
                        "33",
                    )
                )

    async def _capacity(self) -> None:
        teams = await self._teams()
        self.say()
        if teams is None:
            self.say("Capacity: GET router /v1/capacity did not answer")
            return
        self.say(self.paint(f"Capacity (GET {self.router}/v1/capacity)", "1"))
        header = f"  {'team / rep':<26}{'working':>8}{'capacity':>10}{'headroom':>10}{'backlog':>9}"
        self.say(self.paint(header, "2"))
        for team in teams:
            self.say(
                f"  {str(team.get('name', '?'))[:26]:<26}{team.get('working', 0):>8}"
                f"{team.get('capacity', 0):>10}{team.get('headroom', 0):>10}"
                f"{team.get('backlog', 0):>9}"
            )
            for rep in team.get("reps", []):
                name = (
                    "  "
                    + str(rep.get("name", "?"))
                    + ("" if rep.get("active", True) else " (inactive)")
                )
                self.say(
                    f"  {name[:26]:<26}{rep.get('working', 0):>8}{rep.get('capacity', 0):>10}"
                    f"{rep.get('headroom', 0):>10}"
                )


async def _stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop the consumer, whatever state the broker is in (aiokafka can raise CancelledError
    from its fetcher when the broker has gone away)."""
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await within(consumer.stop(), 5)


def _detail(answer: httpx.Response) -> str:
    """The problem+json detail of an error answer, or its text."""
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:200]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)[:200]
    return str(body)[:200]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m handoff_runtime.demo",
        description="Stream synthetic leads and status changes through a running Handoff "
        "(start it with `make run`) and show what happens to each lead.",
    )
    parser.add_argument("--leads", type=int, default=40, help="how many leads (default 40)")
    parser.add_argument("--rate", type=float, default=5.0, help="leads per second (default 5)")
    parser.add_argument("--scorer-url", default="http://127.0.0.1:8001")
    parser.add_argument("--router-url", default="http://127.0.0.1:8002")
    parser.add_argument("--feedback-url", default="http://127.0.0.1:8003")
    parser.add_argument(
        "--kafka",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092",
        help="bootstrap servers (default $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable run")
    parser.add_argument(
        "--webhook-source",
        default="local",
        help="the webhook-source header (default local, the unsigned source of make run)",
    )
    parser.add_argument(
        "--webhook-secret",
        default=os.environ.get("HANDOFF_DEMO_WEBHOOK_SECRET"),
        help="sign deliveries with this whsec_ secret (default $HANDOFF_DEMO_WEBHOOK_SECRET)",
    )
    args = parser.parse_args(argv)
    if args.leads < 0 or args.rate <= 0:
        parser.error("--leads must be >= 0 and --rate > 0")
    # The Kafka client logs every failed reconnect; the summary says what matters.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    demo = Demo(
        scorer=args.scorer_url.rstrip("/"),
        router=args.router_url.rstrip("/"),
        feedback=args.feedback_url.rstrip("/"),
        kafka=args.kafka,
        leads=args.leads,
        rate=args.rate,
        seed=args.seed,
        webhook_source=args.webhook_source,
        webhook_secret=args.webhook_secret,
    )
    return asyncio.run(_main(demo))


async def _main(demo: Demo) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            demo.say("stopping now")
            os._exit(130)
        demo.say("\nstopping (Ctrl-C again to quit at once) ...")
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    return await demo.run(stop)


if __name__ == "__main__":
    sys.exit(main())
