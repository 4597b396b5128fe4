"""The published contracts (JSON Schemas, AsyncAPI, examples) agree with the catalogue and codec."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from handoff_schemas import (
    DEAD_LETTER_TOPICS,
    EVENTS,
    EVENTS_BY_TYPE,
    TOPICS,
    CloudEvent,
    InvalidEvent,
    LeadCreatedV1,
    LeadProfile,
    Topic,
    decode,
    encode,
    new_event,
)
from handoff_schemas.catalogue import TOPICS_BY_NAME
from handoff_schemas.generate import KEY_SCHEMAS, SCHEMAS_DIR, main, render

EXAMPLES_DIR = SCHEMAS_DIR / "examples"
JSON_DIR = SCHEMAS_DIR / "json"
EVENT_TYPES = [e.type for e in EVENTS]


def _example(event_type: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (EXAMPLES_DIR / f"{event_type}.json").read_text(encoding="utf-8")
    )
    return loaded


def _schema(event_type: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (JSON_DIR / f"{event_type}.schema.json").read_text(encoding="utf-8")
    )
    return loaded


def _asyncapi() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(
        (SCHEMAS_DIR / "asyncapi.yaml").read_text(encoding="utf-8")
    )
    return loaded


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def test_generated_files_are_current() -> None:
    stale = [
        path
        for path, text in render().items()
        if not (SCHEMAS_DIR / path).is_file()
        or (SCHEMAS_DIR / path).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"generated files are out of date: {stale}; run `make schemas`"


def test_check_reports_stale_files_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--root", str(tmp_path), "--check"]) == 0

    stale = tmp_path / "json" / f"{EVENT_TYPES[0]}.schema.json"
    stale.write_text("{}\n", encoding="utf-8")
    orphan = tmp_path / "json" / "handoff.lead.retired.v1.schema.json"
    orphan.write_text("{}\n", encoding="utf-8")
    capsys.readouterr()

    assert main(["--root", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert stale.name in err
    assert orphan.name in err
    assert "make schemas" in err
    assert stale.read_text(encoding="utf-8") == "{}\n"
    assert orphan.exists()


def test_every_event_type_has_one_example_and_one_schema_and_nothing_else() -> None:
    examples = sorted(p.name.removesuffix(".json") for p in EXAMPLES_DIR.glob("*.json"))
    schemas = sorted(p.name.removesuffix(".schema.json") for p in JSON_DIR.glob("*.schema.json"))
    assert sorted(p.name for p in JSON_DIR.iterdir()) == [f"{t}.schema.json" for t in schemas]
    assert examples == sorted(EVENT_TYPES)
    assert schemas == sorted(EVENT_TYPES)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_schema_pins_its_type_and_id(event_type: str) -> None:
    schema = _schema(event_type)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://handoff.dev/schemas/{event_type}.schema.json"
    assert schema["properties"]["type"]["const"] == event_type


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_example_validates_against_its_schema(event_type: str) -> None:
    validator = Draft202012Validator(_schema(event_type))
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(_example(event_type))]
    assert not errors


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_schema_rejects_an_example_of_another_type(event_type: str) -> None:
    other = next(t for t in EVENT_TYPES if t != event_type)
    assert not Draft202012Validator(_schema(event_type)).is_valid(_example(other))


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_example_decodes_to_its_model(event_type: str) -> None:
    path = EXAMPLES_DIR / f"{event_type}.json"
    event = decode(path.read_bytes())
    assert event.type == event_type
    assert isinstance(event.data, EVENTS_BY_TYPE[event_type].model)


LEAD_EVENT_TYPES = [
    e.type for e in EVENTS if all(TOPICS_BY_NAME[t].key == "lead id" for t in e.topics)
]


def test_icp_events_are_keyed_by_version() -> None:
    example = _example("handoff.icp.published.v1")
    assert example["subject"] == f"icp/{example['data']['version']}"


def test_capacity_events_are_keyed_by_team_id() -> None:
    example = _example("handoff.capacity.changed.v1")
    assert {TOPICS_BY_NAME[t].key for t in EVENTS_BY_TYPE[example["type"]].topics} == {"team id"}
    assert example["subject"] == example["data"]["team_id"]


@pytest.mark.parametrize("event_type", LEAD_EVENT_TYPES)
def test_example_subject_is_the_lead_id_which_is_the_kafka_key(event_type: str) -> None:
    example = _example(event_type)
    assert example["subject"] == example["data"]["lead_id"]
    assert decode(json.dumps(example).encode()).subject == example["data"]["lead_id"]


def test_asyncapi_is_version_3() -> None:
    doc = _asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "Handoff"
    assert set(doc) <= {
        "asyncapi",
        "id",
        "info",
        "servers",
        "defaultContentType",
        "channels",
        "operations",
        "components",
    }


@pytest.mark.parametrize("topic", [*TOPICS, *DEAD_LETTER_TOPICS], ids=lambda t: t.name)
def test_asyncapi_has_every_topic_with_its_producers_and_consumers(topic: Topic) -> None:
    doc = _asyncapi()
    channels = {cid: c for cid, c in doc["channels"].items() if c["address"] == topic.name}
    assert len(channels) == 1, f"{topic.name} must be exactly one channel"
    ((channel_id, channel),) = channels.items()
    assert channel["bindings"]["kafka"]["partitions"] == topic.partitions
    assert channel["bindings"]["kafka"]["topicConfiguration"]["retention.ms"] == topic.retention_ms

    short = _slug(topic.name.removeprefix("handoff."))
    expected = {
        **{f"{_slug(p)}_sends_{short}": "send" for p in topic.producers},
        **{f"{_slug(c)}_receives_{short}": "receive" for c in topic.consumers},
    }
    on_channel = {
        op_id: op["action"]
        for op_id, op in doc["operations"].items()
        if op["channel"] == {"$ref": f"#/channels/{channel_id}"}
    }
    assert on_channel == expected


@pytest.mark.parametrize("topic", TOPICS, ids=lambda t: t.name)
def test_asyncapi_channel_carries_the_catalogued_events(topic: Topic) -> None:
    doc = _asyncapi()
    (channel,) = (c for c in doc["channels"].values() if c["address"] == topic.name)
    messages = doc["components"]["messages"]
    carried = set()
    for ref in channel["messages"].values():
        message = messages[ref["$ref"].removeprefix("#/components/messages/")]
        assert message["contentType"] == "application/cloudevents+json"
        assert message["bindings"]["kafka"]["key"] == KEY_SCHEMAS[topic.key]
        assert (SCHEMAS_DIR / message["payload"]["$ref"]).is_file()
        carried.add(message["name"])
    assert carried == {e.type for e in EVENTS if topic.name in e.topics}


def test_asyncapi_operation_messages_resolve_to_their_channel() -> None:
    doc = _asyncapi()
    for op_id, op in doc["operations"].items():
        channel = op["channel"]["$ref"].removeprefix("#/channels/")
        assert op["messages"], op_id
        for ref in op["messages"]:
            prefix = f"#/channels/{channel}/messages/"
            assert ref["$ref"].startswith(prefix), op_id
            assert ref["$ref"].removeprefix(prefix) in doc["channels"][channel]["messages"], op_id


def test_decode_round_trips_an_encoded_event() -> None:
    data = LeadCreatedV1.model_validate(_example("handoff.lead.created.v1")["data"])
    event = new_event(data, source="/handoff/scorer", subject=data.lead_id)
    decoded = decode(encode(event))
    assert isinstance(decoded, CloudEvent)
    assert decoded.model_dump() == event.model_dump()
    assert isinstance(decoded.data, LeadCreatedV1)
    assert decoded.data == data


def test_decode_rejects_non_json() -> None:
    with pytest.raises(InvalidEvent, match="not a CloudEvents envelope") as caught:
        decode(b"\x00\x01 definitely not json")
    assert "Invalid JSON" in str(caught.value)


def test_decode_rejects_an_envelope_without_source() -> None:
    example = _example("handoff.lead.created.v1")
    del example["source"]
    with pytest.raises(InvalidEvent, match="not a CloudEvents envelope") as caught:
        decode(json.dumps(example).encode())
    assert "source: Field required" in str(caught.value)


def test_decode_rejects_an_unknown_type() -> None:
    example = _example("handoff.lead.created.v1")
    example["type"] = "handoff.lead.teleported.v1"
    with pytest.raises(InvalidEvent, match=r"unknown event type 'handoff\.lead\.teleported\.v1'"):
        decode(json.dumps(example).encode())


def test_decode_rejects_invalid_data_of_a_known_type() -> None:
    example = _example("handoff.lead.created.v1")
    example["data"]["lead"]["email"] = "katrin.vogel-at-nordwerk"
    with pytest.raises(InvalidEvent, match=r"invalid handoff\.lead\.created\.v1 data") as caught:
        decode(json.dumps(example).encode())
    assert "lead.email" in str(caught.value)


@pytest.mark.parametrize(
    "moment",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+00:01"],
)
def test_a_time_that_does_not_exist_in_utc_is_invalid_not_a_crash(moment: str) -> None:
    activity = {"type": "webinar_attended", "occurred_at": moment}
    with pytest.raises(ValidationError, match="out of range once converted to UTC"):
        LeadProfile.model_validate({"email": "a@example.com", "activities": [activity]})


def test_the_extremes_that_do_exist_in_utc_are_valid() -> None:
    for moment in ("0001-01-01T00:00:00-01:00", "9999-12-31T23:59:59+01:00"):
        activity = {"type": "webinar_attended", "occurred_at": moment}
        LeadProfile.model_validate({"email": "a@example.com", "activities": [activity]})
