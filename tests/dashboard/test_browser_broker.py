"""The dashboard in Chromium against a real broker: its counts are ``greenroomctl``'s, and it rides out an outage.

- With a ``greenroom`` tree working on SQLite or Redis, the overview shows, queue by queue, the
  counts ``greenroomctl queues --json`` prints. The state compared holds still: delayed messages
  are due in a day, dead letters stay dead, ready messages wait on a queue nobody consumes, and the
  messages in progress are held by actors waiting for a file.
- With the dashboard's Redis reached through a proxy the test cuts, the page open shows the banner
  by itself (its periodic refresh), every page navigated to shows it too, and each comes back by
  itself once the proxy lets connections through again.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from greenroom.testing import wait_for
from tests.brokers.test_rabbitmq import TcpProxy
from tests.dashboard._browser import COUNT_COLUMNS, TIMEOUT_S, Site

#: Far enough ahead that no delayed message of a test becomes due while it runs.
DAY_MS = 86_400_000
REDIS_ADDRESS = ("127.0.0.1", 6379)
#: The start of the banner every page shows while the broker cannot be reached.
UNREACHABLE = "The broker cannot be reached"


def _as_cells(counts: dict[str, Any]) -> list[str | None]:
    """A queue's counts from ``greenroomctl`` as the overview's cells show them (``None`` is "n/a")."""
    return ["n/a" if counts[column] is None else f"{counts[column]:,}" for column in COUNT_COLUMNS]


def _printed_counts(site: Site) -> dict[str, list[str | None]]:
    """What ``greenroomctl queues --json`` prints, by queue, with the totals under "" as the overview has them."""
    printed = site.ctl_json("queues")["queues"]
    rows = {entry["queue"]: _as_cells(entry) for entry in printed}
    totals = {column: sum(entry[column] for entry in printed) for column in COUNT_COLUMNS}
    rows[""] = _as_cells(totals)
    return rows


def _broker_counts(site: Site) -> dict[str, tuple[int | None, ...]]:
    return {name: tuple(site.broker.get_queue_counts(name)) for name in (site.queue_name, site.parked)}


@pytest.mark.parametrize("site", ["sqlite", "redis"], indirect=True)
def test_the_overview_shows_the_counts_greenroomctl_prints(site: Site) -> None:
    assert site.tree is not None
    site.tree.wait_ready()
    site.switch.write_text("on")
    for key in ("a", "b"):
        site.actors["flaky"].send(key)  # fails once, and is dead
    for key in ("one", "two"):
        site.actors["hold"].send(key)  # in progress until the test ends
    site.actors["flaky"].send_with_options(args=("later",), delay=DAY_MS)
    for n in range(3):
        site.actors["parked"].send(n)  # ready: nobody consumes the parked queue
    for n in range(2):
        site.actors["parked"].send_with_options(args=(n,), delay=DAY_MS)
    # (ready, delayed, in progress, dead): every column has something to show on one of the queues.
    expected = {site.queue_name: (0, 1, 2, 2), site.parked: (3, 2, 0, 0)}
    wait_for(lambda: _broker_counts(site) == expected, TIMEOUT_S, message=f"the counts never became {expected}")

    printed = _printed_counts(site)
    assert printed == {
        site.queue_name: ["0", "1", "2", "2"],
        site.parked: ["3", "2", "0", "0"],
        "": ["3", "3", "2", "2"],
    }
    site.open("/")
    site.wait(lambda _: site.overview_counts().keys() == printed.keys())
    assert site.overview_counts() == printed
    site.shot(f"overview-matches-greenroomctl-{site.env['GR_DASH_BROKER']}")
    # Nothing moved while the page was read: the comparison was between two views of one state.
    assert _printed_counts(site) == printed


class SeveringProxy(TcpProxy):
    """The RabbitMQ tests' TCP proxy, here in front of Redis, able to turn new connections away too.

    While cut, the proxy forwards to a port bound but not listening: the connection it opens for
    each client is refused, and it closes the client's side at once (the client reads an end of
    file, as from a server gone). ``restore`` points it at the real server again.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.server = target
        self.dead_end = socket.socket()
        self.dead_end.bind(("127.0.0.1", 0))
        super().__init__(target)

    def cut(self) -> None:
        """Close every connection, and turn away those opened from now on until :meth:`restore`."""
        self.target = self.dead_end.getsockname()
        # The proxy accepts clients one at a time: once a client accepted after the switch is
        # turned away, any accepted before it is among the sockets that drop_all closes.
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT_S) as probe:
            try:
                assert probe.recv(1) == b""
            except ConnectionResetError:
                pass
        self.drop_all()

    def restore(self) -> None:
        """Forward new connections to the server again."""
        self.target = self.server

    def close(self) -> None:
        super().close()
        self.dead_end.close()


@pytest.fixture
def redis_proxy() -> Iterator[SeveringProxy]:
    proxy = SeveringProxy(REDIS_ADDRESS)
    try:
        yield proxy
    finally:
        proxy.close()


def _banner(site: Site) -> str:
    return site.text_of("#banner")


def _unreachable_page(site: Site) -> bool:
    """Whether the page shown is the one a page becomes while the broker is unreachable."""
    return UNREACHABLE in _banner(site) and site.text_of("h1") == "Broker unreachable"


def test_a_cut_broker_shows_a_banner_on_every_page_until_it_is_back(
    redis_proxy: SeveringProxy, make_site: Callable[..., Site]
) -> None:
    # The proxy is set up first, so it outlives the site: the dashboard's broker closes before it.
    proxied = f"redis://127.0.0.1:{redis_proxy.port}/0"
    # No workers: the dashboard alone. A schedule, so that the schedules page has something to read.
    site = make_site("redis", redis_url=proxied, env={"GR_DASH_SCHEDULE": "1"}, workers=False, refresh_interval_ms=500)
    site.actors["parked"].send(1)
    site.open("/")
    site.wait(lambda _: site.overview_counts().get(site.parked) == ["1", "0", "0", "0"])
    site.browser.execute_script("window.notReloaded = true;")

    # The open overview notices by itself, through its refresh, and keeps the last counts it had.
    redis_proxy.cut()
    site.wait(lambda _: UNREACHABLE in _banner(site))
    assert site.overview_counts().get(site.parked) == ["1", "0", "0", "0"]
    assert site.browser.execute_script("return window.notReloaded === true;")
    site.shot("unreachable-overview")

    # Back by itself, live again, without a reload.
    redis_proxy.restore()
    site.wait(lambda _: _banner(site).strip() == "")
    message = site.actors["parked"].send(2)
    site.wait(lambda _: site.overview_counts().get(site.parked) == ["2", "0", "0", "0"])
    assert site.browser.execute_script("return window.notReloaded === true;")

    # Cut again: every page navigated to says so, a message looked up by its id included.
    redis_proxy.cut()
    box = site.browser.find_element(By.ID, "lookup-id")
    box.send_keys(message.message_id)
    box.submit()
    message_path = f"/messages/{message.message_id}"
    site.wait(lambda _: site.browser.current_url.endswith(message_path) and _unreachable_page(site))
    for path in ("/workers", "/schedules", "/dead"):
        site.click(f'header nav a[href="{path}"]')
        site.wait(lambda _, path=path: site.browser.current_url.endswith(path) and _unreachable_page(site))
    site.shot("unreachable-dead-letters")

    # The dead letters page comes back by itself once the broker answers.
    redis_proxy.restore()
    site.wait(lambda _: site.text_of("h1") == "Dead letters" and _banner(site).strip() == "")
    assert site.browser.current_url.endswith("/dead")
    site.wait(lambda _: site.parked in site.text_of("#dead-queues"))
    site.shot("dead-letters-back")

    # The schedules page, with the broker there: the schedule's expression and its next run.
    site.open("/schedules")
    site.wait(lambda _: "0 0 1 1 *" in site.text_of("#schedules"))
    site.shot("schedules")
