"""Fixtures of the dashboard tests: a tracked broker of each kind with a worker, HTTP clients of the app,
and, for the browser tests, Chromium and the sites it drives."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

import greenroom
from greenroom import Worker
from greenroom.broker import Broker
from greenroom.jobs import JobTracking, SQLiteJobStore
from tests.conftest import redis_client_for

if TYPE_CHECKING:
    from tests.dashboard._browser import Site

REDIS_URL = "redis://127.0.0.1:6379/0"
TIMEOUT_S = 20.0
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def csrf_token(html: str) -> str:
    """The CSRF token of the first form of a page."""
    match = _CSRF.search(html)
    assert match is not None, "the page has no form with a CSRF token"
    return match.group(1)


class AsgiClient:
    """A synchronous HTTP client of an ASGI app, on an event loop of its own (cookies kept between calls)."""

    def __init__(self, app: Any, *, root_path: str = "", base_url: str = "http://dashboard.test") -> None:
        self.loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        self.client = httpx.AsyncClient(transport=transport, base_url=base_url)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    @property
    def cookies(self) -> httpx.Cookies:
        return self.client.cookies

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


class Actors:
    """The actors the dashboard tests run, declared on one queue of a broker, and the switches they obey."""

    def __init__(self, broker: Broker, queue_name: str) -> None:
        self.queue_name = queue_name
        #: While set, ``flaky`` fails.
        self.failing = threading.Event()
        self.failing.set()
        #: Lets ``slow`` finish.
        self.release = threading.Event()
        #: Set by ``slow`` once it runs.
        self.started = threading.Event()
        failing, release, started = self.failing, self.release, self.started

        @greenroom.actor(broker=broker, queue_name=queue_name)
        def ok(n: int, text: str = "") -> None:
            pass

        @greenroom.actor(broker=broker, queue_name=queue_name, max_retries=0)
        def boom(text: str) -> None:
            raise ValueError(f"boom: {text}")

        @greenroom.actor(broker=broker, queue_name=queue_name, max_retries=0)
        def flaky(key: str) -> None:
            if failing.is_set():
                raise RuntimeError(f"flaky {key} failed")

        @greenroom.actor(broker=broker, queue_name=queue_name, max_retries=0)
        def slow(key: str) -> None:
            started.set()
            greenroom.set_progress(0.5, "half way")
            for _ in range(3000):  # 30 s at most; short waits so that a cancellation lands
                if release.wait(0.01):
                    return

        @greenroom.actor(broker=broker, queue_name=queue_name, max_retries=0, sensitive=True)
        def secret(password: str) -> None:
            raise PermissionError("denied")

        self.ok, self.boom, self.flaky, self.slow, self.secret = ok, boom, flaky, slow, secret


def _tracking(store: SQLiteJobStore | None = None) -> JobTracking:
    return JobTracking(store=store, poll_interval=50, heartbeat_interval=200, progress_interval=50)


def make_broker(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Broker, Callable[[], None]]:
    """A broker of ``kind`` with job tracking, and what cleans it up."""
    cleanups: list[Callable[[], None]] = []
    broker: Broker
    if kind == "stub":
        from greenroom.brokers.stub import StubBroker

        broker = StubBroker()
        broker.add_middleware(_tracking())
    elif kind == "sqlite":
        from greenroom.brokers.sqlite import SQLiteBroker

        broker = SQLiteBroker(str(tmp_path / "broker.db"))
        broker.add_middleware(_tracking())
    elif kind == "redis":
        from greenroom.brokers.redis import RedisBroker

        namespace = f"gr-dash-{uuid.uuid4().hex[:10]}"
        _, cleanup = redis_client_for(namespace)
        cleanups.append(cleanup)
        broker = RedisBroker(url=REDIS_URL, namespace=namespace)
        broker.add_middleware(_tracking())
    else:
        from greenroom.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=request.getfixturevalue("rabbitmq_vhost"))
        broker.add_middleware(_tracking(SQLiteJobStore(tmp_path / "jobs.db")))
    broker.emit_after("process_boot")

    def cleanup() -> None:
        broker.close()
        for step in cleanups:
            step()

    return broker, cleanup


class Setup:
    """A broker with the test actors, a worker consuming their queue, and clients of the dashboard."""

    def __init__(self, kind: str, broker: Broker) -> None:
        self.kind = kind
        self.broker = broker
        self.actors = Actors(broker, f"dash_{uuid.uuid4().hex[:8]}")
        self.workers: list[Worker] = []
        self.clients: list[AsgiClient] = []

    def start_worker(self) -> Worker:
        worker = Worker(self.broker, worker_timeout=50, worker_threads=4)
        worker.start()
        self.workers.append(worker)
        return worker

    def client(self, **options: Any) -> AsgiClient:
        from greenroom.dashboard import create_app

        client = AsgiClient(create_app(self.broker, **options))
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for worker in self.workers:
            worker.stop(timeout=10000)


@pytest.fixture(params=["stub", "sqlite", "redis", "rabbitmq"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    broker, cleanup = make_broker(request.param, tmp_path, request)
    setup = Setup(request.param, broker)
    yield setup
    setup.close()
    cleanup()


@pytest.fixture
def stub_setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    broker, cleanup = make_broker("stub", tmp_path, request)
    setup = Setup("stub", broker)
    yield setup
    setup.close()
    cleanup()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for every browser test of the run."""
    from tests.dashboard._browser import start_chromium  # selenium only where a browser is used

    driver = start_chromium()
    yield driver
    driver.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where a browser test saves its screenshots: ``GREENROOM_SCREENSHOTS``, or the test's temporary directory."""
    directory = Path(os.environ.get("GREENROOM_SCREENSHOTS", tmp_path / "screenshots"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def make_site(tmp_path: Path, browser: Any, shots: Path) -> Iterator[Callable[..., Site]]:
    """Makes the test's :class:`~tests.dashboard._browser.Site` (one per test) and closes it afterwards.

    Takes the broker kind (``sqlite`` or ``redis``), the Redis URL the application uses (the
    shared server unless given), more variables of its environment, and the options of ``Site``.
    """
    from tests.dashboard._browser import Site, site_environment

    made: list[Site] = []
    cleanups: list[Callable[[], None]] = []

    def make(
        kind: str = "sqlite", *, redis_url: str = REDIS_URL, env: dict[str, str] | None = None, **options: Any
    ) -> Site:
        assert not made, "one site per test: they share the work directory"
        env = {**site_environment(tmp_path, kind, redis_url), **(env or {})}
        if kind == "redis":
            cleanups.append(redis_client_for(env["GR_DASH_NS"])[1])
        made.append(Site(tmp_path, browser, shots, env, **options))
        return made[0]

    yield make
    for site in made:
        site.close()
    for cleanup in cleanups:
        cleanup()


@pytest.fixture
def site(request: pytest.FixtureRequest, make_site: Callable[..., Site]) -> Site:
    """A site on the broker kind the test is parametrised with (``indirect``), SQLite otherwise, with workers."""
    return make_site(getattr(request, "param", "sqlite"))
