"""The dashboard's safety: CSRF tokens, read-only mode, auth, headers, escaping, mounting, and an unreachable broker."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

import greenroom
from greenroom.brokers.stub import StubBroker
from greenroom.dashboard import BasicAuth, create_app, create_wsgi_app
from greenroom.errors import ConnectionClosed
from greenroom.jobs import State
from greenroom.testing import wait_for
from tests.dashboard.conftest import TIMEOUT_S, AsgiClient, Setup, csrf_token


def _dead_letter(setup: Setup) -> str:
    """Run ``boom`` once; its message id, dead-lettered."""
    setup.start_worker()
    message = setup.actors.boom.send("x")
    wait_for(lambda: setup.broker.get_queue_counts(setup.actors.queue_name).dead == 1, TIMEOUT_S)
    return message.message_id


def test_a_post_without_a_valid_csrf_token_is_refused(setup: Setup) -> None:
    message_id = _dead_letter(setup)
    queue = setup.actors.queue_name
    client = setup.client()
    page = client.get(f"/queues/{queue}/dead")
    token = csrf_token(page.text)
    url = f"/queues/{queue}/dead/requeue"
    assert client.post(url, data={"message_id": message_id}).status_code == 403  # no token
    assert client.post(url, data={"message_id": message_id, "csrf_token": "0" * 64}).status_code == 403
    # A token from another browser (another cookie) is worth nothing with this browser's cookie.
    other = setup.client()
    other_token = csrf_token(other.get(f"/queues/{queue}/dead").text)
    assert other_token != token
    assert client.post(url, data={"message_id": message_id, "csrf_token": other_token}).status_code == 403
    # Without the cookie (a page of another site posting a copied token): refused too.
    client.cookies.clear()
    assert client.post(url, data={"message_id": message_id, "csrf_token": token}).status_code == 403
    assert setup.broker.get_queue_counts(queue).dead == 1
    refused = client.post(f"/messages/{message_id}/cancel", data={})
    assert refused.status_code == 403
    assert "Reload the page" in refused.text
    # A GET never acts.
    assert client.get(url).status_code == 405


def test_the_csrf_cookie_is_http_only_and_same_site(stub_setup: Setup) -> None:
    page = stub_setup.client().get("/")
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/" in cookie


def test_read_only_mode_hides_and_refuses_every_action(setup: Setup) -> None:
    message_id = _dead_letter(setup)
    queue = setup.actors.queue_name
    running = setup.actors.slow.send("running")
    assert setup.actors.started.wait(TIMEOUT_S)
    client = setup.client(read_only=True)
    for url in [f"/queues/{queue}/dead", f"/messages/{running.message_id}", f"/queues/{queue}/dead/purge", "/"]:
        page = client.get(url)
        assert page.status_code == 200
        assert '<form method="post"' not in page.text, url
        assert "read-only" in page.text
    token = setup.client().get(f"/queues/{queue}/dead").text  # a writable dashboard's token does not help
    for url, data in [
        (f"/queues/{queue}/dead/requeue", {"message_id": message_id, "scope": "all"}),
        (f"/queues/{queue}/dead/purge", {"confirm": "yes"}),
        (f"/messages/{running.message_id}/cancel", {}),
    ]:
        refused = client.post(url, data={**data, "csrf_token": csrf_token(token)})
        assert refused.status_code == 403, url
        assert "read-only" in refused.text
    assert setup.broker.get_queue_counts(queue).dead == 1
    status = greenroom.get_status(running.message_id, broker=setup.broker)
    assert status is not None
    assert not status.cancel_requested
    setup.actors.release.set()


def test_an_auth_hook_sees_every_request(stub_setup: Setup) -> None:
    seen: list[str] = []

    def only_admins(request: Request) -> bool:
        seen.append(request.url.path)
        return request.headers.get("x-user") == "admin"

    client = stub_setup.client(auth=only_admins)
    assert client.get("/").status_code == 403
    assert client.get("/static/dashboard.css").status_code == 403
    assert client.get("/", headers={"x-user": "admin"}).status_code == 200
    assert seen == ["/", "/static/dashboard.css", "/"]


def test_basic_auth_asks_for_the_user_and_password(stub_setup: Setup) -> None:
    client = stub_setup.client(auth=BasicAuth("ops", "s3cret"))
    refused = client.get("/")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic ")

    def header(credentials: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}

    assert client.get("/", headers=header("ops:wrong")).status_code == 401
    assert client.get("/", headers={"Authorization": "Basic !!!"}).status_code == 401
    assert client.get("/", headers=header("ops:s3cret")).status_code == 200
    with pytest.raises(ValueError, match="non-empty"):
        BasicAuth("ops", "")


def test_every_response_forbids_framing_sniffing_and_outside_resources(stub_setup: Setup) -> None:
    client = stub_setup.client()
    for url in ["/", "/no/such/page", "/static/dashboard.js"]:
        headers = client.get(url).headers
        assert "default-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
    assert client.get("/").headers["cache-control"] == "no-store"


def test_arguments_of_sensitive_actors_are_never_shown(stub_setup: Setup) -> None:
    stub_setup.start_worker()
    message = stub_setup.actors.secret.send("hunter2")
    wait_for(lambda: stub_setup.broker.get_queue_counts(stub_setup.actors.queue_name).dead == 1, TIMEOUT_S)
    client = stub_setup.client()
    for url in [f"/messages/{message.message_id}", f"/queues/{stub_setup.actors.queue_name}/dead"]:
        page = client.get(url)
        assert page.status_code == 200
        assert "hunter2" not in page.text
    record = stub_setup.broker.get_dead_letters(stub_setup.actors.queue_name)[0]
    assert b"hunter2" in record.payload  # it is there: the dashboard chose not to show it
    assert "marked sensitive" in client.get(f"/messages/{message.message_id}").text


def test_requeue_all_with_a_filter_requeues_only_the_matching_letters(stub_setup: Setup) -> None:
    worker = stub_setup.start_worker()
    actors = stub_setup.actors
    flaky = actors.flaky.send("a")
    boom = actors.boom.send("b")
    queue = actors.queue_name
    wait_for(lambda: stub_setup.broker.get_queue_counts(queue).dead == 2, TIMEOUT_S)
    worker.stop(timeout=10000)
    stub_setup.workers.clear()
    client = stub_setup.client()
    page = client.get(f"/queues/{queue}/dead", params={"actor": "flaky"})
    assert flaky.message_id in page.text
    assert boom.message_id not in page.text
    assert "Requeue the 1 shown" in page.text
    answer = client.post(
        f"/queues/{queue}/dead/requeue",
        data={"csrf_token": csrf_token(page.text), "scope": "all", "actor": "flaky", "reason": ""},
    )
    assert answer.status_code == 303
    assert "actor=flaky" in answer.headers["location"]
    assert "n=1" in answer.headers["location"]
    [left] = stub_setup.broker.get_dead_letters(queue)
    assert left.message_id == boom.message_id
    assert stub_setup.broker.get_queue_counts(queue).ready == 1


def test_mounted_under_a_prefix_in_an_asgi_app(stub_setup: Setup) -> None:
    message_id = _dead_letter(stub_setup)
    queue = stub_setup.actors.queue_name
    site = Starlette(routes=[Mount("/ops/greenroom", app=create_app(stub_setup.broker))])
    client = AsgiClient(site)
    try:
        page = client.get(f"/ops/greenroom/queues/{queue}/dead")
        assert page.status_code == 200
        assert 'href="/ops/greenroom/static/dashboard.css"' in page.text
        assert f'action="/ops/greenroom/queues/{queue}/dead/requeue"' in page.text
        assert "path=/ops/greenroom" in page.headers["set-cookie"].lower()
        assert client.get("/ops/greenroom/static/dashboard.css").status_code == 200
        answer = client.post(
            f"/ops/greenroom/queues/{queue}/dead/requeue",
            data={"csrf_token": csrf_token(page.text), "message_id": message_id},
        )
        assert answer.status_code == 303
        assert answer.headers["location"].startswith(f"/ops/greenroom/queues/{queue}/dead?")
    finally:
        client.close()


def _prefixed(prefix: str, app: Any) -> Any:
    """A WSGI dispatcher that hands ``prefix/...`` to ``app`` as Flask's and Django's mounts do (SCRIPT_NAME)."""

    def dispatch(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(prefix):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not here"]
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
        environ["PATH_INFO"] = path[len(prefix) :]
        return app(environ, start_response)

    return dispatch


def test_the_same_dashboard_runs_as_a_wsgi_app_under_a_prefix(stub_setup: Setup) -> None:
    message_id = _dead_letter(stub_setup)
    queue = stub_setup.actors.queue_name
    app = _prefixed("/admin/jobs", create_wsgi_app(stub_setup.broker))
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://dashboard.test") as client:
        page = client.get(f"/admin/jobs/queues/{queue}/dead")
        assert page.status_code == 200
        assert f'href="/admin/jobs/messages/{message_id}"' in page.text
        answer = client.post(
            f"/admin/jobs/queues/{queue}/dead/requeue",
            data={"csrf_token": csrf_token(page.text), "message_id": message_id},
        )
        assert answer.status_code == 303
        assert answer.headers["location"].startswith(f"/admin/jobs/queues/{queue}/dead?")
        status = greenroom.get_status(message_id, broker=stub_setup.broker)
        assert status is not None
        wait_for(lambda: stub_setup.broker.get_queue_counts(queue).dead == 1, TIMEOUT_S)  # it failed again


class _FlakyConnectionBroker(StubBroker):
    """A stub broker whose counts fail as an unreachable broker's do while ``down`` is true."""

    down = False

    def get_queue_counts(self, queue_name: str) -> Any:
        if self.down:
            raise ConnectionClosed("connection refused")
        return super().get_queue_counts(queue_name)


def test_an_unreachable_broker_shows_a_banner_and_the_pages_come_back() -> None:
    broker = _FlakyConnectionBroker()

    @greenroom.actor(broker=broker, queue_name="jobs")
    def job() -> None:
        pass

    client = AsgiClient(create_app(broker))
    try:
        assert client.get("/").status_code == 200
        broker.down = True
        page = client.get("/")
        assert page.status_code == 503
        assert "The broker cannot be reached" in page.text
        assert "data-reload-when-ok" in page.text
        assert client.get("/queues/jobs/dead").status_code == 503
        broker.down = False
        page = client.get("/")
        assert page.status_code == 200
        assert "The broker cannot be reached" not in page.text
    finally:
        client.close()
        broker.close()


def test_a_broker_without_job_status_still_shows_its_queues(tmp_path: Any) -> None:
    broker = StubBroker()  # no JobTracking: status lives in memory, nobody writes it

    @greenroom.actor(broker=broker, queue_name="plain")
    def plain() -> None:
        pass

    message = plain.send()
    client = AsgiClient(create_app(broker))
    try:
        assert 'data-col="ready">1<' in client.get("/").text
        assert client.get(f"/messages/{message.message_id}").status_code == 404
        assert greenroom.get_status(message.message_id, broker=broker) is None
        assert State.ENQUEUED == "enqueued"
    finally:
        client.close()
        broker.close()


def test_refresh_interval_has_a_floor() -> None:
    with pytest.raises(ValueError, match="at least 500"):
        create_app(StubBroker(), refresh_interval_ms=10)


def test_the_schedules_page_lists_expression_next_run_and_leader(stub_setup: Setup) -> None:
    greenroom.schedule(stub_setup.actors.ok, cron="*/5 * * * *", name="five-minutes", args=(1,))
    page = stub_setup.client().get("/schedules")
    assert page.status_code == 200
    assert "five-minutes" in page.text
    assert "*/5 * * * *" in page.text
    assert "never" in page.text  # no tick was enqueued yet
