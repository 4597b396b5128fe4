"""`decode` reads a valid event in one pass and falls back to reading it step by step (which
names what is wrong); the two must agree on every input: the same events accepted, with the
same content, and the same ones refused."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from handoff_schemas import EVENTS, InvalidEvent, decode
from handoff_schemas.codec import _decode_stepwise
from handoff_schemas.generate import SCHEMAS_DIR

EXAMPLES = {
    entry.type: json.loads((SCHEMAS_DIR / "examples" / f"{entry.type}.json").read_text())
    for entry in EVENTS
}

Path = tuple[str | int, ...]


def _paths(value: Any, at: Path = ()) -> list[Path]:
    """Every place in a JSON document, the document itself excluded."""
    found: list[Path] = []
    items: list[tuple[str | int, Any]] = (
        list(value.items())
        if isinstance(value, dict)
        else list(enumerate(value))
        if isinstance(value, list)
        else []
    )
    for key, inner in items:
        found.append((*at, key))
        found.extend(_paths(inner, (*at, key)))
    return found


def _changed(document: Any, path: Path, new: Any) -> Any:
    """A copy of `document` with the value at `path` replaced by `new`, or removed when
    `new` is the `REMOVE` marker."""
    copy = json.loads(json.dumps(document))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if new is REMOVE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return copy


REMOVE = object()

json_values = st.one_of(
    st.just(REMOVE),
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "2026-11-20T14:05:00Z",
            "2026-11-20T14:05:00",
            "1700000000",
            "not-an-email",
            "person@example.com",
            "A",
            "a",
            "handoff.lead.created.v1",
            "handoff.lead.assigned.v1",
            "lead_other",
        ]
    ),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _outcome(read: Any, value: bytes) -> tuple[str, Any]:
    try:
        event = read(value)
    except InvalidEvent as exc:
        return "refused", str(exc)
    return "accepted", (type(event.data), event.model_dump(mode="json"))


def _stepwise(value: bytes) -> Any:
    """Step by step, with the subject check `decode` makes of either pass."""
    event = _decode_stepwise(value)
    lead_id = getattr(event.data, "lead_id", None)
    if lead_id is not None and lead_id != event.subject:
        raise InvalidEvent(f"subject {event.subject!r} is not the lead id {lead_id!r}")
    return event


def test_every_example_is_read_the_same_either_way() -> None:
    for event_type, example in EXAMPLES.items():
        value = json.dumps(example).encode()
        fast, stepwise = _outcome(decode, value), _outcome(_stepwise, value)
        assert fast[0] == "accepted", (event_type, fast)
        assert fast == stepwise, event_type


@settings(max_examples=400, deadline=None)
@given(data=st.data(), event_type=st.sampled_from(sorted(EXAMPLES)))
def test_a_changed_event_is_read_the_same_either_way(data: st.DataObject, event_type: str) -> None:
    document = EXAMPLES[event_type]
    for _ in range(data.draw(st.integers(min_value=1, max_value=2), label="changes")):
        paths = _paths(document)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        document = _changed(document, path, data.draw(json_values, label="value"))
    value = json.dumps(document).encode()
    assert _outcome(decode, value) == _outcome(_stepwise, value)
