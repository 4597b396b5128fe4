"""How a service's process collects cyclic garbage.

CPython runs its cycle collector after every 700 net allocations of container objects by
default. A consumed batch builds thousands of short-lived objects (decoded events, pydantic
models, ORM rows, SQL parameters), so a busy service ran a young-generation collection every
few leads and a full one, walking every object the process holds, every few seconds: in
`bench/handlers.py`, about a quarter of feedback's CPU per lead. Two changes, once the
service has started:

- the objects that exist after start-up (modules, the app, settings, compiled statements)
  live as long as the process, so they are moved out of the collector's reach
  (`gc.freeze`): a full collection then walks only what was allocated since;
- the young generation is collected after `threshold` allocations instead of 700, so most
  batch garbage, freed by reference counting anyway, is never walked at all.

Reference counting still frees everything that is not in a cycle as soon as it is dropped;
only cycles wait longer. `python_gc_*` in /metrics shows the collections."""

from __future__ import annotations

import gc

DEFAULT_THRESHOLD = 700
"""CPython's own young-generation threshold, restored by `tune(0)`."""


def tune(threshold: int) -> None:
    """Freeze what exists now and collect the young generation every `threshold`
    allocations; 0 leaves CPython's defaults (and freezes nothing)."""
    if threshold <= 0:
        gc.set_threshold(DEFAULT_THRESHOLD, 10, 10)
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 10, 10)
