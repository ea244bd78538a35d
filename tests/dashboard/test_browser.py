"""The dashboard in headless Chromium (Debian's chromium and chromium-driver, driven by selenium).

A ``greenroom`` process tree runs the actors of ``_browser_app.py`` on an SQLite broker; the test
sends to it and serves the dashboard of its own broker on that file, then drives the pages as a
person would: the overview's counts, a message found by id and cancelled while it runs, a failed
message's traceback, a dead letter requeued. Each page is saved as a screenshot, in the directory
``GREENROOM_SCREENSHOTS`` names (the test's temporary directory otherwise).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import greenroom
from greenroom.dashboard import DashboardServer
from greenroom.jobs import State
from greenroom.testing import wait_for
from tests.cli._trees import Tree, app_env
from tests.conftest import service_unavailable
from tests.dashboard import _browser_app

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        service_unavailable("Chromium", FileNotFoundError("apt-get install chromium chromium-driver"))
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # As root in a container, Chromium runs only without its sandbox.
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_page_load_timeout(TIMEOUT_S)
    yield driver
    driver.quit()


class Site:
    """A tree running the app, the test's own broker on the same file, and the dashboard served from it."""

    def __init__(self, workdir: Path, browser: Any, shots: Path) -> None:
        self.browser = browser
        self.shots = shots
        queue_name = f"web_{uuid.uuid4().hex[:8]}"
        self.switch = workdir / "switch"
        self.env = {
            **app_env(workdir),
            "PYTHONPATH": str(ROOT),
            "GR_DASH_QUEUE": queue_name,
            "GR_DASH_SWITCH": str(self.switch),
        }
        (workdir / "app.py").write_text("from tests.dashboard._browser_app import *  # noqa: F403\n")
        self.broker, self.actors = _browser_app.build(self.env)
        self.queue_name = queue_name
        self.tree = Tree(workdir, ["-p", "1", "-t", "4", "-Q", queue_name], env=self.env)
        self.server = DashboardServer(self.broker, port=0, refresh_interval_ms=1000)
        self.server.start()

    def close(self) -> None:
        self.server.stop()
        self.tree.cleanup()
        self.broker.close()

    def open(self, path: str) -> None:
        self.browser.get(self.server.url.rstrip("/") + path)

    def shot(self, name: str) -> None:
        self.browser.save_screenshot(str(self.shots / f"{name}.png"))

    def wait(self, condition: Any) -> Any:
        # Pages replace their live parts every second: an element found may be replaced before it is used.
        waiting = WebDriverWait(
            self.browser, TIMEOUT_S, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
        )
        return waiting.until(condition)

    def text_of(self, selector: str) -> str:
        """The text of the element, read in one step (never a stale element), "" when there is none."""
        script = "const node = document.querySelector(arguments[0]); return node ? node.innerText : '';"
        return str(self.browser.execute_script(script, selector))

    def click(self, selector: str) -> None:
        """Click the element, found again if a refresh replaced it in between."""

        def clicked(_: Any) -> bool:
            self.browser.find_element(By.CSS_SELECTOR, selector).click()
            return True

        self.wait(clicked)

    def state(self, message_id: str) -> str | None:
        status = greenroom.get_status(message_id, broker=self.broker)
        return None if status is None else status.state


@pytest.fixture
def site(tmp_path: Path, browser: Any) -> Iterator[Site]:
    shots = Path(os.environ.get("GREENROOM_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    site = Site(tmp_path, browser, shots)
    try:
        yield site
    finally:
        site.close()


def _cell(site: Site, queue_name: str, column: str) -> str:
    return site.text_of(f'tr[data-queue="{queue_name}"] td[data-col="{column}"]')


def test_overview_cancel_traceback_and_requeue_in_a_browser(site: Site) -> None:
    site.tree.wait_ready()
    parked = f"{site.queue_name}_parked"

    # The overview shows the queues' counts, and they follow the broker without a reload.
    site.open("/")
    site.wait(lambda _: site.browser.find_elements(By.CSS_SELECTOR, f'tr[data-queue="{parked}"]'))
    site.browser.execute_script("window.notReloaded = true;")
    for n in range(3):
        site.actors["parked"].send(n)
    site.wait(lambda _: _cell(site, parked, "ready") == "3")
    assert site.browser.execute_script("return window.notReloaded === true;")
    counts = site.broker.get_queue_counts(parked)
    assert [_cell(site, parked, column) for column in ("ready", "delayed", "in_progress", "dead")] == [
        str(counts.ready),
        str(counts.delayed),
        str(counts.in_progress),
        str(counts.dead),
    ]
    site.shot("overview-start")

    # Find a running message by its id, watch its progress, cancel it: its actor is interrupted.
    running = site.actors["slow"].send("report")
    wait_for(lambda: site.state(running.message_id) == State.RUNNING, TIMEOUT_S)
    box = site.browser.find_element(By.ID, "lookup-id")
    box.send_keys(running.message_id)
    box.submit()
    site.wait(lambda _: site.browser.find_elements(By.CSS_SELECTOR, '[data-testid="progress"]'))
    assert "working on report" in site.text_of("#message-status")
    site.shot("message-running")
    site.click('[data-testid="cancel"]')
    site.wait(lambda _: "Cancellation requested" in site.text_of("main"))
    wait_for(lambda: site.state(running.message_id) == State.CANCELLED, TIMEOUT_S)
    site.wait(lambda _: site.text_of('[data-testid="state"]') == State.CANCELLED)

    # A failing actor: its traceback is on its page; its dead letter, requeued from the page, runs again.
    site.switch.write_text("on")
    failing = site.actors["flaky"].send("invoice-7")
    wait_for(lambda: site.state(failing.message_id) == State.FAILED, TIMEOUT_S)
    site.open(f"/messages/{failing.message_id}")
    traceback = site.text_of('[data-testid="traceback"]')
    assert "RuntimeError: flaky invoice-7 failed" in traceback
    assert "_browser_app.py" in traceback
    site.shot("message-failed")
    site.open(f"/queues/{site.queue_name}/dead?actor=flaky")
    row = f'tr[data-message-id="{failing.message_id}"]'
    site.wait(lambda _: site.browser.find_elements(By.CSS_SELECTOR, row))
    site.shot("dead-letters")
    site.switch.unlink()
    site.click(f'{row} [data-testid="requeue"]')
    site.wait(lambda _: "1 dead letter(s) put back" in site.text_of("main"))
    wait_for(lambda: site.state(failing.message_id) == State.SUCCEEDED, TIMEOUT_S)
    site.open(f"/messages/{failing.message_id}")
    assert site.text_of('[data-testid="state"]') == State.SUCCEEDED
    # A requeued message starts its attempts afresh; the error of its earlier run stays on show.
    assert "attempt 1 succeeded" in site.text_of("#message-status")
    assert "flaky invoice-7 failed" in site.text_of('[data-testid="error"]')

    # The workers page lists the tree's worker process.
    site.open("/workers")
    site.wait(lambda _: str(site.tree.worker_pids()[0]) in site.text_of("#workers"))
    site.shot("workers")

    # Back on the overview, the chart shows what the worker processed (its counts come with its heartbeats).
    site.open("/")
    site.wait(lambda _: site.text_of('[data-testid="processed-total"]') not in ("", "0"))
    site.wait(lambda _: site.text_of('[data-testid="failed-total"]') not in ("", "0"))
    site.shot("overview")
