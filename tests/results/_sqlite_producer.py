"""A producer run in its own process by test_sqlite_cross_process.py (not a test module).

It uses nothing but the default broker (the SQLite file ``greenroom.db`` in its working
directory) and the SQLite results backend's default path, sends two messages, waits for their
results, and prints them as one JSON line.
"""

from __future__ import annotations

import json

import greenroom
from greenroom.brokers.sqlite import SQLiteBroker
from greenroom.results import ResultFailure, Results
from greenroom.results.backends import SQLiteBackend


def main() -> None:
    broker = greenroom.get_broker()
    assert isinstance(broker, SQLiteBroker), broker
    broker.add_middleware(Results(backend=SQLiteBackend()))

    @greenroom.actor(store_results=True)
    def add(x: int, y: int) -> int:
        raise AssertionError("runs in the worker")

    @greenroom.actor(store_results=True, max_retries=0)
    def explode() -> None:
        raise AssertionError("runs in the worker")

    report: dict[str, object] = {"sum": add.send(20, 22).get_result(block=True, timeout=60000)}
    try:
        explode.send().get_result(block=True, timeout=60000)
    except ResultFailure as exc:
        report["failure"] = [exc.orig_exc_type, exc.orig_exc_msg]
    print(json.dumps(report), flush=True)
    broker.close()


if __name__ == "__main__":
    main()
