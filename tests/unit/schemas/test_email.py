"""The events' email type answers exactly as pydantic's `EmailStr`, and checks an address
once per process however many events carry it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, EmailStr, ValidationError

from handoff_schemas import LeadProfile
from handoff_schemas.events import Email, normalised_email


class Reference(BaseModel):
    email: EmailStr


class Ours(BaseModel):
    email: Email


def verdict(model: type[BaseModel], value: str) -> tuple[str, str]:
    try:
        return "valid", model.model_validate({"email": value}).email  # type: ignore[attr-defined]
    except ValidationError as exc:
        return "invalid", exc.errors()[0]["msg"]


EXAMPLES = [
    "ada@example.com",
    "Ada.Lovelace@Example.COM",
    "  ada@example.com ",
    "Ada Lovelace <ada@example.com>",
    "jürgen@bücher.de",
    "ada@localhost",
    "ada@@example.com",
    "ada@example",
    "",
    "a" * 300 + "@example.com",
    "ada@exa\nmple.com",
]


@pytest.mark.parametrize("value", EXAMPLES)
def test_each_example_gets_the_answer_emailstr_gives(value: str) -> None:
    assert verdict(Ours, value) == verdict(Reference, value)
    assert verdict(Ours, value) == verdict(Ours, value)  # remembered or not, the same


@given(st.emails() | st.text(max_size=40) | st.from_regex(r"[\w.+-]{1,10}@[\w-]{1,10}\.[a-z]{2,4}"))
def test_any_text_gets_the_answer_emailstr_gives(value: str) -> None:
    assert verdict(Ours, value) == verdict(Reference, value)


def test_an_address_is_checked_once_however_often_it_is_decoded() -> None:
    address = "grace.hopper@navy.example.org"
    normalised_email.cache_clear()
    for _ in range(5):
        LeadProfile.model_validate({"email": address})
    info = normalised_email.cache_info()
    assert (info.misses, info.hits) == (1, 4)


def test_an_invalid_address_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ValidationError, match="value is not a valid email address"):
            LeadProfile.model_validate({"email": "not-an-address"})
