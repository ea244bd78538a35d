"""The dashboard in headless Chromium (Debian's chromium and chromium-driver, driven by selenium).

A ``greenroom`` process tree runs the actors of ``_browser_app.py`` on an SQLite broker; the test
sends to it and serves the dashboard of its own broker on that file, then drives the pages as a
person would: the overview's counts, a message found by id and cancelled while it runs, a failed
message's traceback, a dead letter requeued. Each page is saved as a screenshot, in the directory
``GREENROOM_SCREENSHOTS`` names (the test's temporary directory otherwise).
"""

from __future__ import annotations

from selenium.webdriver.common.by import By

from greenroom.jobs import State
from greenroom.testing import wait_for
from tests.dashboard._browser import TIMEOUT_S, Site


def _cell(site: Site, queue_name: str, column: str) -> str:
    return site.text_of(f'tr[data-queue="{queue_name}"] td[data-col="{column}"]')


def test_overview_cancel_traceback_and_requeue_in_a_browser(site: Site) -> None:
    assert site.tree is not None
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
