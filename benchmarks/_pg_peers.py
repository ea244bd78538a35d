"""pgqueuer and procrastinate on the PostgreSQL server of ``bench_postgres.py`` (its ``--peers``).

Both libraries install objects of their own (tables, enum types, functions, triggers) and
procrastinate's SQL names its objects without a schema, so each peer gets a scratch database of its
own, ``bench_peers_<random>``, created for it on the same server and dropped at the end (``WITH
(FORCE)``, which also ends any connection left behind). For each peer, as close to greenroom's
scenarios as its API allows:

* enqueue of ``count`` jobs one call at a time, through its synchronous API (the way greenroom's
  ``send`` is called) and through its asyncio API, each the median of ten rounds of ``count / 10``
  calls, as for ``send``;
* batch enqueue of ``count`` jobs in one call, best of three;
* drain of ``count`` queued no-op jobs by one worker process running 8 jobs at a time as asyncio
  tasks (their model; greenroom and Dramatiq run 8 threads), timed as greenroom's worker of the
  benchmark times it: from the end of the first job to the end of the last; then the same where
  each job makes one Redis round trip with ``redis.asyncio``, as an asyncio task would; and the
  worker's peak RSS. The queue is filled with the batch API and ``ANALYZE``d before each drain:
  autovacuum would have analyzed a table in use, and without statistics procrastinate's fetch
  query took a plan 15 times slower (8 ms instead of 0.5 ms with 10,000 jobs queued).

Settings, each library's fast path as its own documentation and benchmark use it:

* pgqueuer: the asyncpg driver (its documented default) and uvloop (what ``pgq run`` uses); the
  synchronous enqueue goes through its ``SyncQueries`` over a psycopg connection, the only
  synchronous driver it has. Its worker is ``PgQueuer.run(batch_size=4, max_concurrent_tasks=8)``:
  a cap of 8 jobs in flight, and 4 is the largest batch the library accepts with that cap (it
  requires ``max_concurrent_tasks >= 2 * batch_size``). One more drain uses the settings of
  pgqueuer's own benchmark (``tools/benchmark.py`` in its repository): batches of 10 and no cap,
  so more than 8 jobs may run at once. Tables are ``durable`` (logged), its default; an enqueue
  also writes a row to its log table, and a finished job is deleted and logged there.
* procrastinate: ``PsycopgConnector`` (asyncio, psycopg 3) for the worker and the async calls, its
  ``SyncPsycopgConnector`` for the synchronous ``defer``; both keep procrastinate's default pool,
  which checks every connection it hands out (one more round trip each time), and the worker's
  pool may hold 10 connections (greenroom's ``pool_max_size``) so that 8 concurrent jobs never wait
  for one. ``concurrency=8``, ``delete_jobs="successful"`` (a finished job is deleted, as
  greenroom's ack deletes its row; the default keeps every job), ``listen_notify=True`` (default).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from _common import peak_rss_mb, stop

PEERS = ("pgqueuer", "procrastinate")
CONCURRENCY = 8
#: The longest a worker process may take to drain, after which it gives up (and is killed if not).
WORKER_TIMEOUT_S = 300
CONNECT_TIMEOUT_S = 10
TASK = "noop"
#: pgqueuer's payload is bytes of the caller's choosing: an empty JSON object, like no arguments.
PAYLOAD = b"{}"
ROWS = [
    ("enqueue, one call at a time (msg/s)", "enqueue"),
    ("enqueue, one call, asyncio API (msg/s)", "enqueue_async"),
    ("batch enqueue (msg/s)", "batch"),
    ("drain, 1 proc x 8 (msg/s)", "drain"),
    ("drain, pgqueuer's batch 10, no cap", "drain_wide"),
    ("drain, 1 Redis round trip (msg/s)", "drain_io"),
    ("worker peak RSS (MB)", "rss"),
]

#: An awaitable that runs one job's body (a no-op, or one Redis round trip) and counts it.
JobBody = Callable[[], Awaitable[None]]


# -- timing ---------------------------------------------------------------------------------------


def median_rate(count: int, send: Callable[[], Any], rounds: int = 10) -> float:
    """Calls per second of ``send``: the median over ``rounds`` rounds of ``count / rounds`` calls."""
    rates = []
    per_round = count // rounds
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(per_round):
            send()
        rates.append(per_round / (time.perf_counter() - started))
    return statistics.median(rates)


async def median_rate_async(count: int, send: Callable[[], Awaitable[Any]], rounds: int = 10) -> float:
    """:func:`median_rate` for a coroutine function, awaited one call after the other."""
    rates = []
    per_round = count // rounds
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(per_round):
            await send()
        rates.append(per_round / (time.perf_counter() - started))
    return statistics.median(rates)


async def best_rate_async(
    count: int, send_all: Callable[[], Awaitable[Any]], reset: Callable[[], Any], runs: int = 3
) -> float:
    """Jobs per second of the best of ``runs`` awaits of ``send_all``; ``reset`` empties the queue after each."""
    best_s = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        await send_all()
        best_s = min(best_s, time.perf_counter() - started)
        reset()
    return count / best_s


class Counter:
    """Counts finished jobs in a worker process and notes when the first and the last ended."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.finished = 0
        self.first: float | None = None
        self.last = 0.0
        self.done = asyncio.Event()

    def finish(self) -> None:
        # As in greenroom's worker of the benchmark: first and last are both ends of job bodies.
        self.last = time.perf_counter()
        if self.first is None:
            self.first = self.last
        self.finished += 1
        if self.finished >= self.count:
            self.done.set()

    def report(self) -> dict[str, float]:
        elapsed = self.last - (self.first if self.first is not None else self.last)
        return {"rate": self.count / max(1e-9, elapsed), "rss_mb": peak_rss_mb()}


async def until_done(counter: Counter, running: asyncio.Task[Any]) -> None:
    """Wait until ``counter`` is done, or the worker ``running`` ends (an error), or the timeout."""
    waiter = asyncio.ensure_future(counter.done.wait())
    done, _ = await asyncio.wait({waiter, running}, timeout=WORKER_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if running in done:
        running.result()  # raises the worker's error, if any
        raise RuntimeError("the worker stopped before the queue was drained")
    if not counter.done.is_set():
        raise TimeoutError(f"{counter.finished} of {counter.count} jobs in {WORKER_TIMEOUT_S} s")


# -- the peers ------------------------------------------------------------------------------------


class PgQueuerPeer:
    """pgqueuer: asyncpg and uvloop; one entrypoint, ``noop``; jobs carry :data:`PAYLOAD`."""

    reset_sql = "TRUNCATE pgqueuer, pgqueuer_log"
    analyze_sql = "ANALYZE pgqueuer"
    #: "drain-wide": the settings of pgqueuer's own benchmark, batches of 10 and no cap.
    modes = ("drain", "drain-io", "drain-wide")

    def __init__(self, url: str) -> None:
        self.url = url

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        import uvloop

        return uvloop.run(coroutine)

    async def _queries(self) -> tuple[Any, Any]:
        """pgqueuer's ``Queries`` over a new asyncpg connection, and that connection (to close)."""
        import asyncpg  # type: ignore[import-untyped]
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        connection = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S)
        return Queries(AsyncpgDriver(connection)), connection

    async def _install(self) -> None:
        queries, connection = await self._queries()
        await queries.install()
        await connection.close()

    def install(self) -> None:
        self.run(self._install())

    def enqueue_sync(self, count: int) -> float:
        import psycopg
        from pgqueuer.db import SyncPsycopgDriver
        from pgqueuer.queries import SyncQueries

        with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            queries = SyncQueries(SyncPsycopgDriver(conn))
            queries.enqueue(TASK, PAYLOAD)  # warm up
            return median_rate(count, lambda: queries.enqueue(TASK, PAYLOAD))

    async def _enqueue_async(self, count: int) -> tuple[float, float]:
        queries, connection = await self._queries()
        try:
            await queries.enqueue(TASK, PAYLOAD)  # warm up
            one = await median_rate_async(count, lambda: queries.enqueue(TASK, PAYLOAD))
            reset(self)
            batch = await best_rate_async(
                count, lambda: queries.enqueue([TASK] * count, [PAYLOAD] * count, [0] * count), lambda: reset(self)
            )
        finally:
            await connection.close()
        return one, batch

    def enqueue_async(self, count: int) -> tuple[float, float]:
        """The rate of single ``enqueue`` calls and that of one batch ``enqueue`` of ``count``."""
        rates: tuple[float, float] = self.run(self._enqueue_async(count))
        return rates

    async def _fill(self, count: int) -> None:
        queries, connection = await self._queries()
        await queries.enqueue([TASK] * count, [PAYLOAD] * count, [0] * count)
        await connection.close()

    def fill(self, count: int) -> None:
        self.run(self._fill(count))

    async def work(self, counter: Counter, body: JobBody, mode: str) -> None:
        """Run pgqueuer's worker until ``counter`` is done, then shut it down."""
        from pgqueuer import PgQueuer

        queries, connection = await self._queries()
        pgq = PgQueuer(queries.driver)

        @pgq.entrypoint(TASK)
        async def noop(job: Any) -> None:
            await body()

        batch_size, cap = (10, None) if mode == "drain-wide" else (CONCURRENCY // 2, CONCURRENCY)
        running = asyncio.create_task(pgq.run(batch_size=batch_size, max_concurrent_tasks=cap))
        try:
            await until_done(counter, running)
        finally:
            pgq.shutdown.set()
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(running, 30)
            await connection.close()


class ProcrastinatePeer:
    """procrastinate: psycopg 3 connectors; one task, ``noop``, with no arguments (``{}`` as kwargs)."""

    reset_sql = "TRUNCATE procrastinate_jobs CASCADE"
    analyze_sql = "ANALYZE procrastinate_jobs"
    modes = ("drain", "drain-io")

    def __init__(self, url: str) -> None:
        self.url = url

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run(coroutine)  # what procrastinate's run_worker uses

    def _app(self, *, sync: bool, body: JobBody | None = None, **pool: Any) -> tuple[Any, Any]:
        """An app with the task ``noop`` registered (running ``body``, if given), and that task."""
        import procrastinate

        connector_class = procrastinate.SyncPsycopgConnector if sync else procrastinate.PsycopgConnector
        app = procrastinate.App(connector=connector_class(conninfo=self.url, **pool))

        async def noop() -> None:
            if body is not None:
                await body()

        return app, app.task(name=TASK)(noop)

    def install(self) -> None:
        app, _ = self._app(sync=True)
        with app.open():
            app.schema_manager.apply_schema()

    def enqueue_sync(self, count: int) -> float:
        app, noop = self._app(sync=True)
        with app.open():
            noop.defer()  # warm up
            return median_rate(count, noop.defer)

    async def _enqueue_async(self, count: int) -> tuple[float, float]:
        app, noop = self._app(sync=False)
        async with app.open_async():
            await noop.defer_async()  # warm up
            one = await median_rate_async(count, noop.defer_async)
            reset(self)
            batch = await best_rate_async(
                count, lambda: noop.batch_defer_async(*({} for _ in range(count))), lambda: reset(self)
            )
        return one, batch

    def enqueue_async(self, count: int) -> tuple[float, float]:
        """The rate of single ``defer_async`` calls and that of one ``batch_defer_async`` of ``count``."""
        rates: tuple[float, float] = self.run(self._enqueue_async(count))
        return rates

    def fill(self, count: int) -> None:
        app, noop = self._app(sync=True)
        with app.open():
            noop.batch_defer(*({} for _ in range(count)))

    async def work(self, counter: Counter, body: JobBody, mode: str) -> None:
        """Run procrastinate's worker until ``counter`` is done, then cancel it (its graceful stop)."""
        app, _ = self._app(sync=False, body=body, min_size=CONCURRENCY + 2, max_size=CONCURRENCY + 2)
        async with app.open_async():
            running = asyncio.create_task(
                app.run_worker_async(
                    concurrency=CONCURRENCY, delete_jobs="successful", install_signal_handlers=False, wait=True
                )
            )
            try:
                await until_done(counter, running)
            finally:
                running.cancel()
                with suppress(asyncio.CancelledError, asyncio.TimeoutError):
                    await asyncio.wait_for(running, 30)


PEER_CLASSES: dict[str, Callable[[str], Any]] = {"pgqueuer": PgQueuerPeer, "procrastinate": ProcrastinatePeer}


def execute(peer: Any, statement: str) -> None:
    """Run ``statement`` in the peer's database, through a connection of its own."""
    import psycopg

    with psycopg.connect(peer.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        conn.execute(statement)


def reset(peer: Any) -> None:
    """Empty the peer's queue (and pgqueuer's log)."""
    execute(peer, peer.reset_sql)


# -- the worker process ---------------------------------------------------------------------------


async def drain(peer: Any, mode: str, redis_url: str, count: int) -> dict[str, float]:
    """Run the peer's worker on its full queue until ``count`` jobs finished; the numbers as a dict."""
    counter = Counter(count)
    io_client: Any = None
    io_key = f"bench_peers_{uuid.uuid4().hex[:8]}:io"
    if mode == "drain-io":
        import redis.asyncio

        io_client = redis.asyncio.Redis.from_url(redis_url)

    async def body() -> None:
        if io_client is not None:
            await io_client.incr(io_key)
        counter.finish()

    try:
        await peer.work(counter, body, mode)
    finally:
        if io_client is not None:
            await io_client.delete(io_key)
            await io_client.aclose()
    return counter.report()


WORKER_CODE = "import sys, _pg_peers; _pg_peers.worker_main(sys.argv[1:])"


def worker_main(argv: list[str]) -> None:
    """``python -c WORKER_CODE PEER MODE DATABASE_URL REDIS_URL COUNT``: drain, print the JSON report."""
    name, mode, url, redis_url, count_text = argv
    peer = PEER_CLASSES[name](url)
    report = peer.run(drain(peer, mode, redis_url, int(count_text)))
    print(json.dumps(report), flush=True)
    os._exit(0)  # the numbers are out; skip the interpreter's teardown


def run_worker(name: str, url: str, redis_url: str, mode: str, count: int) -> dict[str, float]:
    """Drain the queue in a worker process of its own (a fresh event loop); stop and reap it in any case."""
    # Imported, not run as a script: procrastinate warns about an App created in ``__main__``.
    argv = [sys.executable, "-c", WORKER_CODE, name, mode, url, redis_url, str(count)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    try:
        out, _ = proc.communicate(timeout=WORKER_TIMEOUT_S + 60)
    finally:
        stop(proc)
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"{name} worker ({mode}) failed with exit code {proc.returncode}")
    return dict(json.loads(out.strip().splitlines()[-1]))


# -- the driver -----------------------------------------------------------------------------------


@contextmanager
def scratch_database(postgres_url: str) -> Iterator[str]:
    """A new database on the server of ``postgres_url``, dropped on exit; yields its URL."""
    import psycopg

    name = f"bench_peers_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(postgres_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure_peer(name: str, postgres_url: str, redis_url: str, count: int) -> dict[str, float]:
    """Every number of one peer, in a scratch database of its own."""
    with scratch_database(postgres_url) as url:
        peer = PEER_CLASSES[name](url)
        peer.install()
        results = {"enqueue": peer.enqueue_sync(count)}
        reset(peer)
        results["enqueue_async"], results["batch"] = peer.enqueue_async(count)
        rss = 0.0
        for mode in peer.modes:
            reset(peer)
            peer.fill(count)
            # As autovacuum would have done on a table in use (see the module's docstring).
            execute(peer, peer.analyze_sql)
            report = run_worker(name, url, redis_url, mode, count)
            results[mode.replace("-", "_")] = report["rate"]
            rss = max(rss, report["rss_mb"])
        results["rss"] = rss
    return results


def print_table(columns: dict[str, dict[str, float]]) -> None:
    """One row per :data:`ROWS`, one column per system; ``nan`` where a system has no such API."""
    print(f"{'':38}" + "".join(f"{name:>14}" for name in columns))
    for label, key in ROWS:
        print(f"{label:38}" + "".join(f"{values.get(key, float('nan')):14.2f}" for values in columns.values()))


def report(postgres_url: str, redis_url: str, count: int, ours: dict[str, dict[str, float]]) -> None:
    """Measure the installed peers and print them beside ``ours`` (greenroom's and Dramatiq's results)."""
    columns = {"greenroom": ours["greenroom"], "Dramatiq": ours["dramatiq"]}
    for name in PEERS:
        if importlib.util.find_spec(name) is None:
            print(f"{name} is not installed: skipped (pip install {name})")
            continue
        try:
            columns[name] = measure_peer(name, postgres_url, redis_url, count)
        except Exception as error:  # one peer failing leaves the other's numbers (and the soak)
            print(f"{name} failed: {error!r}")
    if len(columns) > 2:
        print(f"\n{count:,} no-op jobs; pgqueuer and procrastinate on the same PostgreSQL server, 8 asyncio tasks")
        print_table(columns)
