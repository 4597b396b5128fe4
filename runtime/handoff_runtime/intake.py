"""Answering a signed delivery exactly once, and documenting raw-body routes in OpenAPI.

Webhook routes read their body themselves (the signature covers the raw bytes, and a body
must be size-checked and authenticated before it is parsed), so FastAPI cannot infer their
request schema: `json_body(model)` declares it, and `add_request_models(document)` adds the
models to the OpenAPI components.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.dialects.postgresql import JSONB, insert

from .db import Database, UnitOfWork
from .idempotency import body_hash, claim, remember
from .tables import RuntimeTables
from .webhooks import Delivery

REPLAYED_HEADER = "idempotent-replayed"
_REQUEST_MODELS: dict[str, type[BaseModel]] = {}


@dataclass(frozen=True)
class FirstDelivery:
    """What a route's own one-statement path needs to claim a delivery's key together with
    its effect: the key, the request hash, and the status the answer will have. The route
    builds the statement with `first_delivery_statement`: its effect is made only if the key
    is not claimed already (a committed claim is the general path's to answer: a replay, or
    a conflict), and the key is claimed only if the effect was made."""

    key: str
    request_hash: str
    status_code: int


def key_unclaimed(tables: RuntimeTables) -> sa.ColumnElement[bool]:
    """The condition a first path's effect is written under: no claim of the delivery's key
    (the `key` bind parameter of `first_delivery_statement`) exists yet."""
    keys = tables.idempotency_keys
    return ~sa.exists().where(keys.c.key == sa.bindparam("key", type_=keys.c.key.type))


def first_delivery_statement(tables: RuntimeTables, effect: sa.CTE) -> sa.Select[Any]:
    """One statement for a first delivery: the route's `effect` (an `INSERT … RETURNING` as a
    CTE, written under `key_unclaimed`), then the delivery's key claimed with its answer,
    only if the effect wrote a row, then the event announcing it, only if the key was
    claimed. It selects `created` (rows the effect wrote) and `announced` (0 or 1).

    Its runtime bind parameters are `first_delivery_values`; the effect's own are the
    caller's."""
    keys, outbox = tables.idempotency_keys, tables.outbox

    def bound(column: sa.Column[Any], name: str | None = None) -> sa.BindParameter[Any]:
        return sa.bindparam(name or column.name, type_=column.type)

    claimed = (
        insert(keys)
        .from_select(
            ["key", "request_hash", "status_code", "response"],
            sa.select(
                bound(keys.c.key),
                bound(keys.c.request_hash),
                bound(keys.c.status_code),
                sa.cast(sa.bindparam("response", type_=sa.Text), JSONB),
            ).select_from(effect),
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
                bound(outbox.c.event_id),
                bound(outbox.c.topic),
                bound(outbox.c.key, "subject"),
                bound(outbox.c.value),
                sa.cast(sa.bindparam("headers", type_=sa.Text), JSONB),
            ).select_from(claimed),
        )
        .returning(outbox.c.id)
        .cte("announced")
    )
    return sa.select(
        sa.select(sa.func.count()).select_from(effect).scalar_subquery().label("created"),
        sa.select(sa.func.count()).select_from(announced).scalar_subquery().label("announced"),
    )


def first_delivery_values(
    delivery: FirstDelivery, answer: BaseModel, announcement: dict[str, Any]
) -> dict[str, Any]:
    """The runtime's bind parameters of `first_delivery_statement`: the key claimed with
    `answer`, and the outbox row `UnitOfWork.announcement` gave."""
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


FirstPath = Callable[[UnitOfWork, FirstDelivery], Awaitable[BaseModel | None]]
"""A route's fast path for the common first delivery: it makes the effect, claims the key
and stores the answer in one statement and returns that answer, or returns None having
written nothing (then the general path runs in the same transaction)."""


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
    before all that for a keyed delivery (see `FirstPath`)."""
    async with db.unit_of_work() as uow:
        if delivery.key is not None and first is not None and isinstance(status_code, int):
            answered = await first(
                uow, FirstDelivery(delivery.key, body_hash(delivery.body), status_code)
            )
            if answered is not None:
                delivery.note_outcome(outcome(answered))
                return JSONResponse(answered.model_dump(mode="json"), status_code=status_code)
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
