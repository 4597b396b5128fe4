"""Group commit: concurrent items are written together, conflicting ones never in one
group and never out of order, and one bad item fails only its own request."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY

from handoff_runtime.grouping import GroupCommit, GroupCommitClosed


class Store:
    """A write function that records its groups; an item named "bad" fails a group, an item
    named "refused" gets an exception of its own."""

    def __init__(self, delay_s: float = 0.01) -> None:
        self.groups: list[list[str]] = []
        self.delay_s = delay_s

    async def write(self, items: Sequence[str]) -> list[str | BaseException]:
        await asyncio.sleep(self.delay_s)  # a transaction's round trips
        if "bad" in items:
            raise RuntimeError("constraint violated")
        self.groups.append(list(items))
        return [ValueError(item) if item == "refused" else item.upper() for item in items]


def written(name: str) -> tuple[float, float]:
    """Groups and items the group commit `name` has written, from its metric."""
    labels = {"service": name, "group": name}
    return (
        REGISTRY.get_sample_value("handoff_group_commit_items_count", labels) or 0,
        REGISTRY.get_sample_value("handoff_group_commit_items_sum", labels) or 0,
    )


def by_name(item: str) -> tuple[str]:
    return (item.split("#")[0],)


async def test_the_first_item_is_written_at_once_and_the_rest_together() -> None:
    store = Store()
    group = GroupCommit("first-at-once", store.write, service="first-at-once")
    first = asyncio.create_task(group.submit("a"))
    await asyncio.sleep(0)  # the writer has taken "a" and is writing it
    others = [asyncio.create_task(group.submit(f"b{n}")) for n in range(30)]
    assert await first == "A"
    assert await asyncio.gather(*others) == [f"B{n}" for n in range(30)]
    assert store.groups[0] == ["a"]
    assert store.groups[1] == [f"b{n}" for n in range(30)]
    assert written("first-at-once") == (2, 31)
    await group.close()


async def test_a_group_holds_at_most_max_items() -> None:
    store = Store()
    group = GroupCommit("test", store.write, max_items=10)
    results = await asyncio.gather(*(group.submit(f"x{n}") for n in range(25)))
    assert results == [f"X{n}" for n in range(25)]
    assert [len(g) for g in store.groups] == [10, 10, 5]
    await group.close()


async def test_conflicting_items_are_written_in_later_groups_and_in_order() -> None:
    store = Store()
    group = GroupCommit("test", store.write, conflicts=by_name)
    items = ["ada#1", "bob#1", "ada#2", "cy#1", "ada#3", "bob#2"]
    assert await asyncio.gather(*(group.submit(i) for i in items)) == [i.upper() for i in items]
    for written in store.groups:
        names = [by_name(item) for item in written]
        assert len(names) == len(set(names)), written
    order = [item for written in store.groups for item in written]
    for name in ("ada", "bob"):
        mine = [item for item in items if item.startswith(name)]
        assert [item for item in order if item.startswith(name)] == mine


async def test_a_failing_group_is_written_again_one_item_at_a_time() -> None:
    store = Store()
    group = GroupCommit("test", store.write)
    results = await asyncio.gather(
        *(group.submit(item) for item in ["a", "b", "bad", "c"]), return_exceptions=True
    )
    assert [results[0], results[1], results[3]] == ["A", "B", "C"]
    assert isinstance(results[2], RuntimeError)
    assert store.groups == [["a"], ["b"], ["c"]]  # each alone after the failed group
    await group.close()


async def test_an_items_own_exception_goes_to_its_request_only() -> None:
    store = Store()
    group = GroupCommit("test", store.write)
    results = await asyncio.gather(
        *(group.submit(item) for item in ["a", "refused", "b"]), return_exceptions=True
    )
    assert [results[0], results[2]] == ["A", "B"]
    assert isinstance(results[1], ValueError)
    assert store.groups == [["a", "refused", "b"]]  # written together all the same
    await group.close()


async def test_a_request_that_goes_away_does_not_stop_the_others() -> None:
    store = Store(delay_s=0.05)
    group = GroupCommit("test", store.write)
    first = asyncio.create_task(group.submit("a"))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(group.submit("gone"))
    stays = asyncio.create_task(group.submit("stays"))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first == "A"
    assert await stays == "STAYS"
    with pytest.raises(asyncio.CancelledError):
        await gone
    await group.close()


async def test_closing_writes_what_is_queued_then_refuses_more() -> None:
    store = Store()
    group = GroupCommit("test", store.write)
    pending = [asyncio.create_task(group.submit(f"q{n}")) for n in range(5)]
    await asyncio.sleep(0)
    await group.close()
    assert [task.result() for task in pending] == [f"Q{n}" for n in range(5)]
    with pytest.raises(GroupCommitClosed):
        await group.submit("late")


async def test_closing_gives_up_on_a_write_that_does_not_end() -> None:
    store = Store(delay_s=60)
    group = GroupCommit("test", store.write)
    stuck = asyncio.create_task(group.submit("slow"))
    await asyncio.sleep(0.01)
    await group.close(timeout_s=0.1)
    with pytest.raises(GroupCommitClosed):
        await stuck


REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")


async def test_the_writer_does_not_carry_the_context_of_the_request_that_started_it() -> None:
    seen: list[str] = []

    async def write(items: Sequence[str]) -> list[str]:
        seen.append(REQUEST.get())
        return list(items)

    group: GroupCommit[str, str] = GroupCommit("test", write)

    async def request(name: str) -> str:
        REQUEST.set(name)
        return await group.submit(name)

    assert await request("first") == "first"
    assert seen == ["none"]
    await group.close()


async def test_a_writer_that_breaks_fails_its_waiting_requests_and_the_next_starts_anew() -> None:
    calls: list[list[str]] = []

    async def write(items: Sequence[str]) -> list[str]:
        calls.append(list(items))
        if len(calls) == 1:
            return None  # type: ignore[return-value]  # a defect: no results at all
        return list(items)

    group: GroupCommit[str, str] = GroupCommit("test", write)
    with pytest.raises(GroupCommitClosed, match="writer failed"):
        await group.submit("a")
    assert await group.submit("b") == "b"
    await group.close()
