"""Every page and action of the dashboard over HTTP on the stub, SQLite, Redis and RabbitMQ brokers, with a worker."""

from __future__ import annotations

import re

import greenroom
from greenroom.jobs import State
from greenroom.testing import wait_for
from tests.dashboard.conftest import TIMEOUT_S, Setup, csrf_token


def _state(setup: Setup, message_id: str) -> str | None:
    status = greenroom.get_status(message_id, broker=setup.broker)
    return None if status is None else status.state


def _wait_state(setup: Setup, message_id: str, state: str) -> None:
    wait_for(lambda: _state(setup, message_id) == state, TIMEOUT_S)


def _dead_count(setup: Setup) -> int:
    return setup.broker.get_queue_counts(setup.actors.queue_name).dead


def test_overview_workers_and_message_pages_show_what_the_apis_say(setup: Setup) -> None:
    actors = setup.actors
    setup.start_worker()
    done = actors.ok.send(1, text="x" * 1000)
    failed = actors.boom.send("<b>bold</b>")
    _wait_state(setup, done.message_id, State.SUCCEEDED)
    _wait_state(setup, failed.message_id, State.FAILED)
    wait_for(lambda: _dead_count(setup) == 1, TIMEOUT_S)
    client = setup.client()

    # The overview: the queue's counts as the operations API gives them, in the page and as JSON.
    counts = setup.broker.get_queue_counts(actors.queue_name)
    page = client.get("/")
    assert page.status_code == 200
    row = re.search(rf'<tr data-queue="{actors.queue_name}">(.*?)</tr>', page.text, re.S)
    assert row is not None
    assert f'data-col="dead">{counts.dead}<' in row.group(1)
    assert f'data-col="ready">{counts.ready}<' in row.group(1)
    data = client.get("/api/overview").json()
    [queue] = [queue for queue in data["queues"] if queue["name"] == actors.queue_name]
    assert (queue["ready"], queue["delayed"], queue["in_progress"], queue["dead"]) == tuple(counts)
    # Processed and failed per minute: the worker's counts arrive with its next heartbeat.
    wait_for(lambda: sum(m["processed"] for m in client.get("/api/overview").json()["throughput"]) >= 2, TIMEOUT_S)
    throughput = client.get("/api/overview").json()["throughput"]
    assert len(throughput) == 60
    assert sum(minute["failed"] for minute in throughput) >= 1
    assert "<svg" in client.get("/").text

    # Workers: this process, from its heartbeat.
    wait_for(lambda: str(__import__("os").getpid()) in client.get("/workers").text, TIMEOUT_S)

    # A failed message: actor, arguments (escaped), timeline, last error with its traceback; no cancel button.
    page = client.get(f"/messages/{failed.message_id}")
    assert page.status_code == 200
    assert "<b>bold</b>" not in page.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in page.text
    assert "attempt 1 failed" in page.text
    assert 'data-testid="traceback"' in page.text
    assert "ValueError" in page.text
    assert 'data-testid="cancel"' not in page.text
    # A long argument is shortened.
    page = client.get(f"/messages/{done.message_id}")
    assert "more characters" in page.text
    assert "x" * 1000 not in page.text
    # The lookup form sends the browser to the message's page.
    found = client.get("/messages", params={"id": done.message_id})
    assert (found.status_code, found.headers["location"]) == (303, f"/messages/{done.message_id}")

    # Dead letters, filtered by actor and by reason.
    page = client.get(f"/queues/{actors.queue_name}/dead")
    assert failed.message_id in page.text
    assert failed.message_id not in client.get(f"/queues/{actors.queue_name}/dead", params={"actor": "ok"}).text
    assert failed.message_id in client.get(f"/queues/{actors.queue_name}/dead", params={"reason": "BOOM:"}).text
    assert failed.message_id not in client.get(f"/queues/{actors.queue_name}/dead", params={"reason": "nope"}).text
    assert client.get("/dead").status_code == 200
    assert client.get("/schedules").status_code == 200


def test_cancel_requeue_and_purge_from_the_pages(setup: Setup) -> None:
    actors = setup.actors
    setup.start_worker()
    client = setup.client()

    # Cancel a running message from its page: the actor is interrupted.
    running = actors.slow.send("cancel-me")
    assert actors.started.wait(TIMEOUT_S)
    wait_for(lambda: 'data-testid="progress"' in client.get(f"/messages/{running.message_id}").text, TIMEOUT_S)
    page = client.get(f"/messages/{running.message_id}")
    answer = client.post(f"/messages/{running.message_id}/cancel", data={"csrf_token": csrf_token(page.text)})
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/messages/{running.message_id}?notice=cancel-requested"
    _wait_state(setup, running.message_id, State.CANCELLED)
    assert "Cancellation requested" in client.get(answer.headers["location"]).text

    # Requeue one dead letter: it runs again, and succeeds this time.
    flaky = actors.flaky.send("again")
    _wait_state(setup, flaky.message_id, State.FAILED)
    wait_for(lambda: _dead_count(setup) == 2, TIMEOUT_S)  # the cancelled message and this one
    actors.failing.clear()
    page = client.get(f"/queues/{actors.queue_name}/dead")
    answer = client.post(
        f"/queues/{actors.queue_name}/dead/requeue",
        data={"csrf_token": csrf_token(page.text), "message_id": flaky.message_id},
    )
    assert answer.status_code == 303
    assert "notice=requeued&n=1" in answer.headers["location"]
    _wait_state(setup, flaky.message_id, State.SUCCEEDED)
    assert "1 dead letter(s) put back" in client.get(answer.headers["location"]).text

    # Purge: the first POST without the confirmation goes to the confirmation page; then it deletes.
    wait_for(lambda: _dead_count(setup) == 1, TIMEOUT_S)
    confirm = client.get(f"/queues/{actors.queue_name}/dead/purge")
    assert confirm.status_code == 200
    assert 'name="confirm" value="yes"' in confirm.text
    token = csrf_token(confirm.text)
    answer = client.post(f"/queues/{actors.queue_name}/dead/purge", data={"csrf_token": token})
    assert (answer.status_code, answer.headers["location"]) == (303, f"/queues/{actors.queue_name}/dead/purge")
    assert _dead_count(setup) == 1
    answer = client.post(
        f"/queues/{actors.queue_name}/dead/purge", data={"csrf_token": token, "confirm": "yes", "older_than": ""}
    )
    assert answer.status_code == 303
    assert answer.headers["location"].endswith("?notice=purged&n=1")
    assert _dead_count(setup) == 0


def test_requeue_all_dead_letters(setup: Setup) -> None:
    actors = setup.actors
    setup.start_worker()
    client = setup.client()
    messages = [actors.flaky.send(str(n)) for n in range(3)]
    for message in messages:
        _wait_state(setup, message.message_id, State.FAILED)
    wait_for(lambda: _dead_count(setup) == 3, TIMEOUT_S)
    actors.failing.clear()
    page = client.get(f"/queues/{actors.queue_name}/dead")
    answer = client.post(
        f"/queues/{actors.queue_name}/dead/requeue", data={"csrf_token": csrf_token(page.text), "scope": "all"}
    )
    assert answer.status_code == 303
    assert "n=3" in answer.headers["location"]
    for message in messages:
        _wait_state(setup, message.message_id, State.SUCCEEDED)
    assert _dead_count(setup) == 0


def test_unknown_and_malformed_names_are_404_pages(setup: Setup) -> None:
    client = setup.client()
    for url in [
        "/messages/0f3e5c1a-0000-4000-8000-000000000000",  # well formed, unknown
        "/messages/not%20an%20id",
        "/messages?id=%3Cscript%3E",
        "/queues/no_such_queue_here/dead",
        "/queues/no_such_queue_here/dead/purge",
        "/no/such/page",
    ]:
        page = client.get(url)
        assert page.status_code == 404, url
        assert "<h1>Not found</h1>" in page.text
