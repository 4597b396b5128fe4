"""Generate the JSON Schema files and the AsyncAPI document from the catalogue.

`python -m handoff_schemas.generate` rewrites `schemas/json/*.schema.json` and
`schemas/asyncapi.yaml`; `python -m handoff_schemas.generate --check` only lists the files
that are out of date and exits 1 if there are any. The examples in `schemas/examples/` are
written by hand and never touched here.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, create_model

from .catalogue import DEAD_LETTER_TOPICS, EVENTS, TOPICS, EventType, Topic
from .envelope import CONTENT_TYPE, CloudEvent

SCHEMAS_DIR = Path(__file__).resolve().parent.parent
"""The `schemas/` directory of the repository, where the generated files live."""

JSON_DIR = "json"
ASYNCAPI_FILE = "asyncapi.yaml"
SCHEMA_ID_BASE = "https://handoff.dev/schemas/"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
DEAD_LETTER_MESSAGE = "dead_letter"

KEY_SCHEMAS: dict[str, dict[str, Any]] = {
    "lead id": {
        "type": "string",
        "minLength": 1,
        "description": "The lead id, equal to the envelope's subject and to data.lead_id, so "
        "that every event of one lead lands on one partition, in order.",
    },
    "ICP version": {
        "type": "string",
        "pattern": "^icp/[0-9]+$",
        "description": "icp/<version>, equal to the envelope's subject.",
    },
    "team id": {
        "type": "string",
        "minLength": 1,
        "description": "The team id, equal to the envelope's subject and to data.team_id, so "
        "that every capacity event of one team lands on one partition, in order.",
    },
    "original key": {
        "description": "The key of the original record, unchanged (normally the lead id).",
    },
}
"""The Kafka key schema for each kind of key a catalogue Topic declares."""


def schema_file(event: EventType) -> str:
    """The path of an event type's JSON Schema, relative to `schemas/`."""
    return f"{JSON_DIR}/{event.type}.schema.json"


def envelope_model(event: EventType) -> type[CloudEvent[Any]]:
    """The envelope of one event type: its payload model as `data`, its exact type string."""
    # The payload model is a runtime value, which mypy cannot accept as a type argument.
    base: type[CloudEvent[Any]] = CloudEvent[event.model]  # type: ignore[name-defined]
    fields: dict[str, Any] = {
        "type": (
            _const(event.type),
            Field(description="The event type with its major version."),
        ),
        # CloudEvents 1.0 REQUIRES `id` and `specversion`. The envelope model defaults them
        # for producers' convenience; the published contract must not make them optional.
        "id": (
            str,
            Field(min_length=1, description="Unique per source; consumers deduplicate on it."),
        ),
        "specversion": (_const("1.0"), Field(description="The CloudEvents version.")),
    }
    return create_model(
        f"{event.model.__name__}Event",
        __base__=base,
        __doc__=event.description or event.model.__doc__,
        **fields,
    )


def _const(value: str) -> Any:
    return Literal[value]


def json_schema(event: EventType) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the whole envelope of one event type."""
    schema = envelope_model(event).model_json_schema()
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{SCHEMA_ID_BASE}{event.type}.schema.json",
        **schema,
    }


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def channel_id(topic: Topic) -> str:
    """The AsyncAPI channel id of a topic: `handoff.lead.created` becomes `lead_created`."""
    return _slug(topic.name.removeprefix("handoff."))


def message_id(event: EventType) -> str:
    """The AsyncAPI message id of an event type: `handoff.lead.created.v1` is `lead_created_v1`."""
    return _slug(event.type.removeprefix("handoff."))


def operation_id(actor: str, action: Literal["send", "receive"], topic: Topic) -> str:
    """The AsyncAPI operation id, e.g. `scorer_sends_lead_created`."""
    return f"{_slug(actor)}_{action}s_{channel_id(topic)}"


def _key_schema(key: str) -> dict[str, Any]:
    if key not in KEY_SCHEMAS:
        raise KeyError(f"no Kafka key schema for key kind {key!r}; add it to KEY_SCHEMAS")
    return dict(KEY_SCHEMAS[key])


def _kafka_message_binding(key: str) -> dict[str, Any]:
    return {"kafka": {"key": _key_schema(key), "bindingVersion": KAFKA_BINDING_VERSION}}


def _event_message(event: EventType, topics: dict[str, Topic]) -> dict[str, Any]:
    keys = {topics[name].key for name in event.topics}
    if len(keys) != 1:
        raise ValueError(f"{event.type} travels on topics with different keys: {sorted(keys)}")
    return {
        "name": event.type,
        "title": event.type,
        "summary": event.description,
        "contentType": CONTENT_TYPE,
        "payload": {"$ref": f"./{schema_file(event)}"},
        "bindings": _kafka_message_binding(keys.pop()),
    }


def _dead_letter_message() -> dict[str, Any]:
    return {
        "name": "dead letter",
        "title": "Dead letter",
        "summary": "A record a service could not process, copied unchanged from its topic.",
        "contentType": CONTENT_TYPE,
        "payload": {
            "description": "The original record value, byte for byte: normally an event of "
            "the original topic, but possibly not a valid one (which may be why it is here).",
        },
        "bindings": _kafka_message_binding("original key"),
    }


def _channel_messages(topic: Topic) -> list[str]:
    if topic in DEAD_LETTER_TOPICS:
        return [DEAD_LETTER_MESSAGE]
    return [message_id(e) for e in EVENTS if topic.name in e.topics]


def _sent_messages(topic: Topic, producer: str) -> list[str]:
    if topic in DEAD_LETTER_TOPICS:
        return [DEAD_LETTER_MESSAGE]
    sent = [message_id(e) for e in EVENTS if topic.name in e.topics and producer in e.producers]
    if not sent:
        raise ValueError(f"{producer} produces to {topic.name} but no event type says so")
    return sent


def _channel(topic: Topic) -> dict[str, Any]:
    return {
        "address": topic.name,
        "title": topic.name,
        "description": topic.description,
        "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in _channel_messages(topic)},
        "bindings": {
            "kafka": {
                "partitions": topic.partitions,
                "topicConfiguration": {
                    "cleanup.policy": topic.cleanup_policy.split(","),
                    "retention.ms": topic.retention_ms,
                },
                "bindingVersion": KAFKA_BINDING_VERSION,
            },
        },
    }


def _operation(
    actor: str, action: Literal["send", "receive"], topic: Topic, messages: list[str]
) -> dict[str, Any]:
    channel = channel_id(topic)
    direction = "to" if action == "send" else "from"
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "title": f"{actor}: {action} {direction} {topic.name}",
        "messages": [{"$ref": f"#/channels/{channel}/messages/{m}"} for m in messages],
    }


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every topic, event type, producer and consumer."""
    topics = (*TOPICS, *DEAD_LETTER_TOPICS)
    by_name = {t.name: t for t in topics}
    messages = {message_id(e): _event_message(e, by_name) for e in EVENTS}
    messages[DEAD_LETTER_MESSAGE] = _dead_letter_message()

    operations: dict[str, Any] = {}
    for topic in topics:
        for producer in topic.producers:
            sent = _sent_messages(topic, producer)
            operations[operation_id(producer, "send", topic)] = _operation(
                producer, "send", topic, sent
            )
        for consumer in topic.consumers:
            operations[operation_id(consumer, "receive", topic)] = _operation(
                consumer, "receive", topic, _channel_messages(topic)
            )

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Handoff",
            "version": metadata.version("handoff-schemas"),
            "description": "The events Handoff's services exchange over Kafka to score, route "
            "and follow up leads. Every record value is a CloudEvents 1.0 envelope in "
            "structured JSON mode and every record key is the lead id (the envelope's "
            "subject). Generated from handoff_schemas.catalogue by "
            "`python -m handoff_schemas.generate`; do not edit by hand.",
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": {channel_id(t): _channel(t) for t in topics},
        "operations": operations,
        "components": {"messages": messages},
    }


def _json_text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render() -> dict[str, str]:
    """Every generated file's content, keyed by its path relative to `schemas/`."""
    files = {schema_file(e): _json_text(json_schema(e)) for e in EVENTS}
    files[ASYNCAPI_FILE] = yaml.safe_dump(
        asyncapi_document(), sort_keys=False, allow_unicode=True, width=100
    )
    return files


def _orphans(root: Path, expected: dict[str, str]) -> list[str]:
    on_disk = (p.relative_to(root).as_posix() for p in (root / JSON_DIR).glob("*.schema.json"))
    return sorted(p for p in on_disk if p not in expected)


def stale_files(root: Path = SCHEMAS_DIR) -> list[str]:
    """Generated files under `root` that are missing, out of date, or no longer generated."""
    expected = render()
    stale = [
        path
        for path, text in expected.items()
        if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != text
    ]
    return sorted(stale + _orphans(root, expected))


def write(root: Path = SCHEMAS_DIR) -> tuple[list[str], list[str]]:
    """Bring the generated files under `root` up to date; returns (written, removed) paths."""
    expected = render()
    written = []
    for path, text in expected.items():
        target = root / path
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(path)
    removed = _orphans(root, expected)
    for orphan in removed:
        (root / orphan).unlink()
    return sorted(written), removed


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m handoff_schemas.generate",
        description="Generate the JSON Schemas and the AsyncAPI document from the catalogue.",
    )
    parser.add_argument(
        "--check", action="store_true", help="list stale files and exit 1; write nothing"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=SCHEMAS_DIR,
        help="the schemas directory (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    root: Path = args.root
    if args.check:
        stale = stale_files(root)
        for path in stale:
            print(f"stale: {root / path}", file=sys.stderr)
        if stale:
            print("run `make schemas` to regenerate them", file=sys.stderr)
            return 1
        return 0
    written, removed = write(root)
    for path in written:
        print(f"wrote {root / path}")
    for path in removed:
        print(f"removed {root / path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
