"""Every dependency of every route runs on the event loop. FastAPI sends a dependency that is a
plain function to the thread pool, for every request that uses it: a thread hop, and a wait
for a free worker, to read an attribute. The three apps are built, not started."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from handoff_feedback.app import create_app as feedback_app
from handoff_router.app import create_app as router_app
from handoff_scorer.app import create_app as scorer_app


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """The routes of an app, through the routers it includes."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        if (included := getattr(route, "original_router", None)) is not None:
            yield from api_routes(included.routes)


def dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for dependency in dependant.dependencies:
        yield dependency
        yield from dependencies(dependency)


def runs_in_thread_pool(call: Any) -> bool:
    """Whether FastAPI runs `call` in the thread pool: anything but a coroutine function or an
    async generator function (or an instance whose `__call__` is one)."""
    target = call if inspect.isroutine(call) or inspect.isclass(call) else call.__call__
    return not (inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target))


@pytest.mark.parametrize("build", [scorer_app, router_app, feedback_app])
def test_no_route_dependency_runs_in_the_thread_pool(build: Any) -> None:
    app: FastAPI = build()
    routes = list(api_routes(app.routes))
    assert len(routes) > 5
    calls: dict[str, Any] = {
        f"{route.path}: {getattr(dependency.call, '__name__', dependency.call)}": dependency.call
        for route in routes
        for dependency in dependencies(route.dependant)
        if dependency.call is not None
    }
    calls |= {f"app: {d.dependency}": d.dependency for d in app.router.dependencies}
    assert any(name.endswith("database") for name in calls)
    assert {name for name, call in calls.items() if runs_in_thread_pool(call)} == set()


def test_the_check_tells_plain_functions_from_coroutines() -> None:
    def plain() -> None:
        return None

    async def coroutine() -> None:
        return None

    class Callable:
        async def __call__(self) -> None:
            return None

    assert runs_in_thread_pool(plain)
    assert not runs_in_thread_pool(coroutine)
    assert not runs_in_thread_pool(Callable())
    assert runs_in_thread_pool(Callable)  # instantiating it is a plain call
