"""Answering a signed delivery exactly once, and documenting raw-body routes in OpenAPI.

Webhook routes read their body themselves (the signature covers the raw bytes, and a body
must be size-checked and authenticated before it is parsed), so FastAPI cannot infer their
request schema: `json_body(model)` declares it, and `add_request_models(document)` adds the
models to the OpenAPI components.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert

from .db import Database, UnitOfWork
from .idempotency import body_hash, claim, remember
from .tables import RuntimeTables
from .webhooks import Delivery

REPLAYED_HEADER = "idempotent-replayed"
_REQUEST_MODELS: dict[str, type[BaseModel]] = {}


@dataclass(frozen=True)
class FirstDelivery:
    """What a route's own path for first deliveries needs to claim a delivery's key together
    with its effect: the key, the request hash, and the status the answer will have. The
    route writes such deliveries with `first_deliveries_statement`, several at a time: each
    one's effect is made only if its key is not claimed already (a committed claim is the
    general path's to answer: a replay, or a conflict), and the key is claimed only if the
    effect was made."""

    key: str
    request_hash: str
    status_code: int


def _delivery_columns(tables: RuntimeTables) -> list[tuple[str, sa.types.TypeEngine[Any]]]:
    keys, outbox = tables.idempotency_keys, tables.outbox
    return [
        ("key", keys.c.key.type),
        ("request_hash", keys.c.request_hash.type),
        ("status_code", keys.c.status_code.type),
        ("response", sa.Text()),  # JSON text, cast to jsonb as written
        ("event_id", outbox.c.event_id.type),
        ("topic", outbox.c.topic.type),
        ("subject", outbox.c.key.type),
        ("value", outbox.c.value.type),
        ("headers", sa.Text()),
    ]


def first_deliveries(
    tables: RuntimeTables, columns: Sequence[tuple[str, sa.types.TypeEngine[Any]]]
) -> sa.CTE:
    """The deliveries one statement writes, a row each (`delivery`): the runtime's columns
    (`first_delivery_values`) and the route's own `columns`, each column bound as one array
    parameter of its name (`as_arrays`)."""
    named = [*_delivery_columns(tables), *columns]
    arrays = [sa.cast(sa.bindparam(name, type_=ARRAY(kind)), ARRAY(kind)) for name, kind in named]
    rows = (
        sa.func.unnest(*arrays)
        .table_valued(*(sa.column(name, kind) for name, kind in named))
        .render_derived()
    )
    return sa.select(rows).cte("delivery")


def key_unclaimed(tables: RuntimeTables, delivery: sa.CTE) -> sa.ColumnElement[bool]:
    """The condition a delivery's effect is written under: no claim of its key exists yet."""
    keys = tables.idempotency_keys
    return ~sa.exists().where(keys.c.key == delivery.c.key)


def first_deliveries_statement(
    tables: RuntimeTables, delivery: sa.CTE, effect: sa.CTE, made: sa.ColumnElement[bool]
) -> sa.Select[Any]:
    """One statement for first deliveries (`delivery`, from `first_deliveries`): the route's
    `effect` (an `INSERT … RETURNING` as a CTE, written under `key_unclaimed`; `made` joins a
    row it wrote to its delivery), then each delivery's key claimed with its answer, only if
    its effect wrote a row, then the event announcing it, only if the key was claimed. It
    selects, per delivery, `key`, `created` (its effect wrote a row) and `announced` (its
    key was claimed and its event written).

    The deliveries must have distinct keys, and effects that cannot collide with each other
    (a `GroupCommit` with those as conflict names makes its groups so)."""
    keys, outbox = tables.idempotency_keys, tables.outbox
    claimed = (
        insert(keys)
        .from_select(
            ["key", "request_hash", "status_code", "response"],
            sa.select(
                delivery.c.key,
                delivery.c.request_hash,
                delivery.c.status_code,
                sa.cast(delivery.c.response, JSONB),
            ).select_from(delivery.join(effect, made)),
        )
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(keys.c.key)
        .cte("claimed")
    )
    announced = (
        sa.insert(outbox)
        .from_select(
            ["event_id", "topic", "key", "value", "headers"],
            sa.select(
                delivery.c.event_id,
                delivery.c.topic,
                delivery.c.subject,
                delivery.c.value,
                sa.cast(delivery.c.headers, JSONB),
            ).select_from(delivery.join(claimed, claimed.c.key == delivery.c.key)),
        )
        .returning(outbox.c.event_id)
        .cte("announced")
    )
    written = next(iter(effect.c))
    return sa.select(
        delivery.c.key,
        written.is_not(None).label("created"),
        announced.c.event_id.is_not(None).label("announced"),
    ).select_from(
        delivery.outerjoin(effect, made).outerjoin(
            announced, announced.c.event_id == delivery.c.event_id
        )
    )


def first_delivery_values(
    delivery: FirstDelivery, answer: BaseModel, announcement: dict[str, Any]
) -> dict[str, Any]:
    """The runtime's columns of one delivery's row in `first_deliveries`: the key claimed
    with `answer`, and the outbox row `Database.announcement` gave."""
    return {
        "key": delivery.key,
        "request_hash": delivery.request_hash,
        "status_code": delivery.status_code,
        "response": orjson.dumps(answer.model_dump(mode="json")).decode(),
        "event_id": announcement["event_id"],
        "topic": announcement["topic"],
        "subject": announcement["key"],
        "value": announcement["value"],
        "headers": orjson.dumps(announcement["headers"]).decode(),
    }


def as_arrays(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows of values as one list per column: the array parameters of `first_deliveries`."""
    return {name: [row[name] for row in rows] for name in rows[0]} if rows else {}


FirstPath = Callable[[FirstDelivery], Awaitable[BaseModel | None]]
"""A route's path for the common first delivery: it makes the effect, claims the key and
stores the answer together (in its own transaction, usually through a `GroupCommit`) and
returns that answer, or returns None having written nothing (then the general path runs)."""


async def respond_once(
    db: Database,
    delivery: Delivery,
    status_code: int | Callable[[BaseModel], int],
    work: Callable[[UnitOfWork], Awaitable[BaseModel]],
    *,
    outcome: Callable[[BaseModel], str] = lambda _: "accepted",
    first: FirstPath | None = None,
) -> JSONResponse:
    """Run `work` in one unit of work and answer with its result (and `status_code`, or the
    status it gives for the result); a repeated delivery (same webhook-id or Idempotency-Key
    and same body) gets the first answer again and changes nothing, and the same key with
    another body is refused (409). `outcome` names what the answer means for the intake
    metrics (accepted, updated, applied...). `first`, with a fixed status code, is tried
    before all that for a keyed delivery, in a transaction of its own (see `FirstPath`)."""
    if delivery.key is not None and first is not None and isinstance(status_code, int):
        answered = await first(FirstDelivery(delivery.key, body_hash(delivery.body), status_code))
        if answered is not None:
            delivery.note_outcome(outcome(answered))
            return JSONResponse(answered.model_dump(mode="json"), status_code=status_code)
    async with db.unit_of_work() as uow:
        if delivery.key is not None:
            stored = await claim(uow, delivery.key, body_hash(delivery.body))
            if stored is not None:
                delivery.note_outcome("replayed")
                return JSONResponse(
                    stored.body, status_code=stored.status_code, headers={REPLAYED_HEADER: "true"}
                )
        result = await work(uow)
        delivery.note_outcome(outcome(result))
        if callable(status_code):
            status_code = status_code(result)
        body = result.model_dump(mode="json")
        if delivery.key is not None:
            await remember(uow, delivery.key, status_code, body)
    return JSONResponse(body, status_code=status_code)


def json_body(model: type[BaseModel], *, description: str = "") -> dict[str, Any]:
    """`openapi_extra` for a route that parses `model` from a raw JSON body."""
    _REQUEST_MODELS[model.__name__] = model
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


def add_request_models(document: dict[str, Any]) -> None:
    """Put the models declared with `json_body` into an OpenAPI document's components."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, model in _REQUEST_MODELS.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for def_name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(def_name, definition)
        schemas.setdefault(name, schema)
