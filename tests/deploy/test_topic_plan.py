"""The topic plan: `python -m handoff_runtime.topics plan` prints exactly the catalogue, and
`create` makes the missing topics with the replication factor and configs asked for, reports
a broker's refusal, and waits for a cluster that is not up yet. No broker is needed: the
admin client is replaced by a fake that records what it was asked."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import handoff_runtime.kafka as kafka
import handoff_runtime.topics as topics
from handoff_runtime.kafka import TopicCreationError, ensure_topics
from handoff_schemas import DEAD_LETTER_TOPICS, TOPICS, Topic
from handoff_schemas.catalogue import BROKER_EPOCH, INTERNAL_TOPICS, SERVICES

EVERY_TOPIC = (*TOPICS, *DEAD_LETTER_TOPICS, *INTERNAL_TOPICS)
REPO = Path(__file__).resolve().parents[2]


# --- the plan is the catalogue ----------------------------------------------------------------


def test_plan_json_is_the_catalogue() -> None:
    out = io.StringIO()
    assert topics.main(["plan", "--format", "json"], out=out) == 0
    rows = json.loads(out.getvalue())
    assert [r["name"] for r in rows] == [t.name for t in EVERY_TOPIC]
    for row, topic in zip(rows, EVERY_TOPIC, strict=True):
        assert row["partitions"] == topic.partitions
        assert row["retention_ms"] == topic.retention_ms
        assert row["cleanup_policy"] == topic.cleanup_policy
        assert row["configs"] == {
            "cleanup.policy": topic.cleanup_policy,
            "retention.ms": str(topic.retention_ms),
        }
        assert row["producers"] == list(topic.producers)
        assert row["consumers"] == list(topic.consumers)
        assert row["key"] == topic.key


def test_plan_table_has_one_line_per_topic() -> None:
    out = io.StringIO()
    assert topics.main(["plan"], out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:4] == ["topic", "kind", "partitions", "retention"]
    body = lines[2:]
    assert len(body) == len(EVERY_TOPIC)
    for line, topic in zip(body, EVERY_TOPIC, strict=True):
        name, kind_first_word = line.split()[:2]
        assert name == topic.name
        assert kind_first_word == topics.kind_of(topic).split()[0]
        assert str(topic.partitions) in line.split()
        assert topics.retention_text(topic.retention_ms) in line.split()


def test_plan_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "handoff_runtime.topics", "plan", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert [r["name"] for r in json.loads(done.stdout)] == [t.name for t in EVERY_TOPIC]


def test_plan_covers_every_service_and_the_epoch_topic() -> None:
    names = {t.name for t in topics.plan()}
    assert {f"handoff.dlq.{s}" for s in SERVICES} <= names
    assert BROKER_EPOCH.name == kafka.EPOCH_TOPIC
    assert BROKER_EPOCH.name in names
    # The epoch is the record at offset 0: retention must never delete it.
    assert BROKER_EPOCH.retention_ms == -1
    assert len(names) == len(topics.plan()), "a topic is planned twice"


@pytest.mark.parametrize("topic", EVERY_TOPIC, ids=lambda t: t.name)
def test_every_topic_has_a_valid_configuration(topic: Topic) -> None:
    assert topic.partitions >= 1
    assert topic.cleanup_policy in {"delete", "compact", "compact,delete"}
    assert topic.retention_ms == -1 or topic.retention_ms > 0


@pytest.mark.parametrize(
    ("retention_ms", "text"),
    [(-1, "forever"), (7 * 86_400_000, "7d"), (36 * 3_600_000, "36h"), (1500, "1500ms")],
)
def test_retention_in_words(retention_ms: int, text: str) -> None:
    assert topics.retention_text(retention_ms) == text


def test_kinds() -> None:
    assert topics.kind_of(TOPICS[0]) == "events"
    assert topics.kind_of(DEAD_LETTER_TOPICS[0]) == "dead letters"
    assert topics.kind_of(BROKER_EPOCH) == "internal"


# --- create: through ensure_topics, against a fake admin client --------------------------------


class FakeAnswer:
    def __init__(self, topic_errors: list[tuple[Any, ...]]) -> None:
        self.topic_errors = topic_errors


class FakeAdmin:
    """Stands for AIOKafkaAdminClient: knows some topics, records the creations asked."""

    existing: set[str] = set()
    errors: dict[str, tuple[int, str | None]] = {}
    unreachable_starts = 0
    created: list[Any] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    async def start(self) -> None:
        if FakeAdmin.unreachable_starts > 0:
            FakeAdmin.unreachable_starts -= 1
            raise OSError("connection refused")

    async def list_topics(self) -> list[str]:
        return sorted(FakeAdmin.existing)

    async def create_topics(self, new_topics: list[Any]) -> FakeAnswer:
        FakeAdmin.created += new_topics
        answer = []
        for topic in new_topics:
            code, message = FakeAdmin.errors.get(topic.name, (0, None))
            answer.append((topic.name, code, message))
            if code == 0:
                FakeAdmin.existing.add(topic.name)
        return FakeAnswer(answer)

    async def close(self) -> None:
        return None


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> type[FakeAdmin]:
    FakeAdmin.existing, FakeAdmin.errors, FakeAdmin.created = set(), {}, []
    FakeAdmin.unreachable_starts = 0
    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", FakeAdmin)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("KAFKA_REPLICATION_FACTOR", raising=False)
    return FakeAdmin


def test_create_makes_every_missing_topic_with_its_configs(admin: type[FakeAdmin]) -> None:
    admin.existing = {TOPICS[0].name}
    out = io.StringIO()
    code = topics.main(
        ["create", "--bootstrap-servers", "k1:9092", "--replication-factor", "3"], out=out
    )
    assert code == 0
    asked = {t.name: t for t in admin.created}
    assert set(asked) == {t.name for t in EVERY_TOPIC} - {TOPICS[0].name}
    for topic in EVERY_TOPIC[1:]:
        new = asked[topic.name]
        assert new.num_partitions == topic.partitions
        assert new.replication_factor == 3
        assert new.topic_configs == topic.configs()
    assert f"created {len(EVERY_TOPIC) - 1} of {len(EVERY_TOPIC)} topics" in out.getvalue()
    assert "replication factor 3" in out.getvalue()


def test_create_again_creates_nothing(admin: type[FakeAdmin]) -> None:
    admin.existing = {t.name for t in EVERY_TOPIC}
    out = io.StringIO()
    assert topics.main(["create", "--bootstrap-servers", "k1:9092"], out=out) == 0
    assert admin.created == []
    assert "nothing created" in out.getvalue()


def test_create_reads_the_services_variables(
    admin: type[FakeAdmin], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("KAFKA_REPLICATION_FACTOR", "2")
    assert topics.main(["create"], out=io.StringIO()) == 0
    assert {t.replication_factor for t in admin.created} == {2}


def test_create_needs_brokers(admin: type[FakeAdmin], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        topics.main(["create"])
    assert stopped.value.code == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in capsys.readouterr().err


@pytest.mark.parametrize("factor", ["0", "-1"])
def test_create_refuses_a_replication_factor_below_one(admin: type[FakeAdmin], factor: str) -> None:
    with pytest.raises(SystemExit):
        topics.main(["create", "--bootstrap-servers", "k:9092", "--replication-factor", factor])


def test_a_refusal_fails_with_the_reason(
    admin: type[FakeAdmin], capsys: pytest.CaptureFixture[str]
) -> None:
    admin.errors = {
        TOPICS[1].name: (38, "Replication factor: 3 larger than available brokers: 1."),
        TOPICS[2].name: (36, None),  # created meanwhile by someone else: fine
    }
    code = topics.main(["create", "--bootstrap-servers", "k:9092", "--replication-factor", "3"])
    assert code == 1
    err = capsys.readouterr().err
    assert TOPICS[1].name in err
    assert "INVALID_REPLICATION_FACTOR" in err
    assert "larger than available brokers" in err
    assert TOPICS[2].name not in err


async def test_ensure_topics_tolerates_a_topic_created_meanwhile(admin: type[FakeAdmin]) -> None:
    admin.errors = {TOPICS[0].name: (36, None)}
    created = await ensure_topics("k:9092", TOPICS[:2], timeout_s=1)
    assert created == [TOPICS[1].name]


async def test_ensure_topics_raises_on_any_other_refusal(admin: type[FakeAdmin]) -> None:
    admin.errors = {TOPICS[0].name: (42, "bad config")}
    with pytest.raises(TopicCreationError, match="INVALID_REQUEST"):
        await ensure_topics("k:9092", TOPICS[:1], timeout_s=1)


def test_create_waits_for_a_cluster_coming_up(
    admin: type[FakeAdmin], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_sleep(_: float) -> None:
        return None

    monkeypatch.setattr(topics.asyncio, "sleep", no_sleep)
    admin.unreachable_starts = 2
    err = io.StringIO()
    created = topics.asyncio.run(topics.create("k:9092", wait_s=30, out=err))
    assert len(created) == len(EVERY_TOPIC)
    assert err.getvalue().count("retrying") == 2


def test_create_without_wait_fails_on_an_unreachable_cluster(
    admin: type[FakeAdmin], capsys: pytest.CaptureFixture[str]
) -> None:
    admin.unreachable_starts = 1
    assert topics.main(["create", "--bootstrap-servers", "nowhere:9092"]) == 1
    assert "cannot reach nowhere:9092" in capsys.readouterr().err


def test_capacity_doc_states_the_catalogued_partitions() -> None:
    text = (REPO / "deploy" / "CAPACITY.md").read_text()
    stated = {
        name: int(count)
        for name, count in re.findall(r"^\| `(handoff\.[^`]+)` \| (\d+) \|", text, re.M)
    }
    for topic in (*TOPICS, *INTERNAL_TOPICS):
        assert stated.get(topic.name) == topic.partitions, topic.name
    for topic in DEAD_LETTER_TOPICS:
        assert stated["handoff.dlq.<service>"] == topic.partitions
    assert "## Throughput per replica" in text
    assert "make bench" in text
    assert "bench/RESULTS.md" in text
