"""Driving the dashboard in headless Chromium (Debian's chromium and chromium-driver, through selenium).

A :class:`Site` is what a browser test works on: the application of ``_browser_app.py`` on one
broker, a ``greenroom`` process tree running its actors (unless told otherwise), the test's own
broker built from the same module, and the dashboard of that broker served over HTTP. Pages are
saved as screenshots in the directory ``GREENROOM_SCREENSHOTS`` names (the test's temporary
directory otherwise).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import greenroom
from greenroom.dashboard import DashboardServer
from tests.cli._trees import Tree, app_env
from tests.conftest import service_unavailable
from tests.dashboard import _browser_app

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 30.0
#: The columns of a queue's row on the overview, in ``greenroomctl queues --json``'s names.
COUNT_COLUMNS = ("ready", "delayed", "in_progress", "dead")
#: Every queue's counts as the overview shows them, by queue name ("" for the totals row).
_OVERVIEW_COUNTS = """
const columns = arguments[0];
const rows = {};
for (const row of document.querySelectorAll("#queues tr[data-queue]")) {
  rows[row.dataset.queue] = columns.map((column) => {
    const cell = row.querySelector(`td[data-col="${column}"]`);
    return cell ? cell.innerText.trim() : null;
  });
}
return rows;
"""


def start_chromium() -> Any:
    """A headless Chromium driven through chromedriver; skips (fails in CI) when they are not installed."""
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        service_unavailable("Chromium", FileNotFoundError("apt-get install chromium chromium-driver"))
    # service_unavailable never returns: these only tell the type checker so.
    assert chromium is not None
    assert driver_path is not None
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # As root in a container, Chromium runs only without its sandbox.
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_page_load_timeout(TIMEOUT_S)
    return driver


def site_environment(workdir: Path, kind: str, redis_url: str) -> dict[str, str]:
    """The environment of the application on a broker of ``kind``, for the tree, the test and greenroomctl."""
    (workdir / "app.py").write_text("from tests.dashboard._browser_app import *  # noqa: F403\n")
    return {
        **app_env(workdir),
        "PYTHONPATH": str(ROOT),
        "GR_DASH_BROKER": kind,
        "GR_DASH_REDIS_URL": redis_url,
        "GR_DASH_NS": f"gr-web-{uuid.uuid4().hex[:10]}",
        "GR_DASH_QUEUE": f"web_{uuid.uuid4().hex[:8]}",
        "GR_DASH_SWITCH": str(workdir / "switch"),
        "GR_DASH_RELEASE": str(workdir / "release"),
    }


def greenroomctl() -> list[str]:
    """The ``greenroomctl`` command installed beside this interpreter (``python -m greenroom.ctl`` without it)."""
    script = Path(sys.executable).with_name("greenroomctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "greenroom.ctl"]


class Site:
    """The application on one broker, its workers, the test's own broker and the dashboard served from it.

    Parameters:
      workdir: Where the application module, the broker's file and the tree's logs go.
      browser: The selenium driver.
      shots: Where screenshots go.
      env: The application's environment (see :func:`site_environment`).
      workers: Start a ``greenroom`` tree consuming the queue ``GR_DASH_QUEUE`` (not the parked one).
      refresh_interval_ms: How often the pages refresh themselves.
    """

    def __init__(
        self,
        workdir: Path,
        browser: Any,
        shots: Path,
        env: dict[str, str],
        *,
        workers: bool = True,
        refresh_interval_ms: int = 1000,
    ) -> None:
        self.workdir = workdir
        self.browser = browser
        self.shots = shots
        self.env = env
        self.queue_name = env["GR_DASH_QUEUE"]
        self.parked = f"{self.queue_name}_parked"
        self.switch = Path(env["GR_DASH_SWITCH"])
        self.release = Path(env["GR_DASH_RELEASE"])
        self.broker, self.actors = _browser_app.build(env)
        self.tree = Tree(workdir, ["-p", "1", "-t", "4", "-Q", self.queue_name], env=env) if workers else None
        try:
            self.server = DashboardServer(self.broker, port=0, refresh_interval_ms=refresh_interval_ms)
            self.server.start()
        except BaseException:
            if self.tree is not None:
                self.tree.cleanup()
            self.broker.close()
            raise

    def close(self) -> None:
        self.release.touch()  # lets a held actor end, so that the tree stops at once
        self.server.stop()
        if self.tree is not None:
            self.tree.cleanup()
        self.broker.close()

    def open(self, path: str) -> None:
        self.browser.get(self.server.url.rstrip("/") + path)

    def shot(self, name: str) -> None:
        self.browser.save_screenshot(str(self.shots / f"{name}.png"))

    def wait(self, condition: Any, timeout_s: float = TIMEOUT_S) -> Any:
        # Pages replace their live parts every second: an element found may be replaced before it is used.
        waiting = WebDriverWait(
            self.browser, timeout_s, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
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

    def overview_counts(self) -> dict[str, list[str | None]]:
        """Every queue's counts as the overview shows them (read in one step), by name; "" is the totals row."""
        counts: dict[str, list[str | None]] = self.browser.execute_script(_OVERVIEW_COUNTS, list(COUNT_COLUMNS))
        return counts

    def ctl_json(self, *args: str) -> Any:
        """What ``greenroomctl --app app ARGS --json`` prints, run on the application in a process of its own."""
        command = [*greenroomctl(), "--app", "app", *args, "--json"]
        result = subprocess.run(
            command, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        assert result.returncode == 0, f"{command} exited with {result.returncode}:\n{result.stderr}"
        return json.loads(result.stdout)
