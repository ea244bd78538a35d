"""ProcessLocal: one value per process; a forked child builds its own and leaves the parent's alone."""

from __future__ import annotations

import itertools
import threading

from greenroom._process_local import ProcessLocal
from tests.conftest import in_forked_child


def test_built_once_per_process_even_with_racing_threads() -> None:
    counter = itertools.count()
    local = ProcessLocal(lambda: next(counter))
    assert local.peek() is None
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(local.get())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert results == [0] * 8
    assert local.peek() == 0


def test_reset_takes_the_value_out_and_the_next_get_builds_anew() -> None:
    counter = itertools.count()
    local = ProcessLocal(lambda: next(counter))
    assert local.get() == 0
    assert local.reset() == 0
    assert local.peek() is None
    assert local.get() == 1


def test_a_forked_child_builds_its_own_value_and_keeps_the_parents_untouched() -> None:
    built: list[str] = []
    local = ProcessLocal(lambda: built.append("value") or f"built-{len(built)}")
    parent_value = local.get()
    # A lock held by another thread of the parent at fork time must not block the child.
    local._lock.acquire()
    try:
        child = in_forked_child(lambda: f"{local.peek()}|{local.get()}|{local._inherited == [parent_value]}")
    finally:
        local._lock.release()
    assert child == "None|built-2|True"
    assert local.get() == parent_value  # the parent's own value is unchanged
