"""contrib/grafana's dashboard: a well-formed Grafana dashboard whose queries name exported metrics only.

The second test starts a real ``greenroom`` run with metrics on a free port, makes it produce every
metric (a success, an error with a retry, a dead letter, a delayed message), scrapes it, and checks
that every metric name the dashboard queries is in the scrape, once for each prefix the dashboard
offers.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from greenroom.testing import wait_for
from tests.cli._trees import Tree, app_env

DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "greenroom-dashboard.json"
#: The variables Grafana itself defines, which a query may use besides the dashboard's own.
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range", "__all"}
#: ``$name`` or ``${name}`` in a query.
VARIABLE = re.compile(r"\$\{?(\w+)\}?")
#: A metric name in a query, written with the prefix variable.
METRIC = re.compile(r"\$\{prefix\}(\w+)")


def load_dashboard() -> dict[str, Any]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(dashboard, dict)
    return dashboard


def queries(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL of every panel target and of every query variable."""
    found = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    found += [variable["query"] for variable in dashboard["templating"]["list"] if variable["type"] == "query"]
    return found


def metric_names(dashboard: dict[str, Any], prefix: str) -> set[str]:
    """The sample names the dashboard's queries read when its prefix variable is ``prefix``."""
    return {prefix + suffix for query in queries(dashboard) for suffix in METRIC.findall(query)}


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    dashboard = load_dashboard()
    assert dashboard["title"]
    assert dashboard["uid"]
    assert dashboard["id"] is None  # import creates a new dashboard rather than overwriting one
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    prefix = variables["prefix"]
    assert [option["value"] for option in prefix["options"]] == ["greenroom", "dramatiq"]
    assert prefix["current"]["value"] == "greenroom"
    assert variables["queue"]["type"] == "query"
    assert variables["queue"]["includeAll"]

    panel_ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert min(grid["x"], grid["y"]) >= 0, panel["title"]
        assert min(grid["w"], grid["h"]) > 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]  # Grafana's grid has 24 columns
        targets = panel.get("targets", [])
        assert (panel["type"] == "row") == (not targets), panel["title"]
        assert len({target["refId"] for target in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert 'queue_name=~"$queue"' in target["expr"], panel["title"]
    for query in queries(dashboard):
        assert set(VARIABLE.findall(query)) <= set(variables) | GRAFANA_VARIABLES, query
        assert query.count("(") == query.count(")"), query
        assert query.count("{") == query.count("}"), query

    # Every metric the middleware exports is shown, and the duration as three quantiles.
    assert metric_names(dashboard, "greenroom") >= {
        "greenroom_messages_total",
        "greenroom_message_errors_total",
        "greenroom_message_retries_total",
        "greenroom_message_rejects_total",
        "greenroom_messages_inprogress",
        "greenroom_delayed_messages_inprogress",
        "greenroom_message_duration_milliseconds_bucket",
    }
    quantiles = {float(q) for query in queries(dashboard) for q in re.findall(r"histogram_quantile\(([\d.]+)", query)}
    assert quantiles >= {0.5, 0.95, 0.99}


APP = textwrap.dedent(
    """
    import os

    import greenroom
    from greenroom.brokers.sqlite import SQLiteBroker, SQLiteSettings

    broker = SQLiteBroker(path=os.environ["GR_TEST_DB"], settings=SQLiteSettings(synchronous="NORMAL"))
    if os.environ["GR_TEST_PREFIX"] != "greenroom":
        from greenroom.middleware.prometheus import Prometheus

        broker.add_middleware(Prometheus(prefix=os.environ["GR_TEST_PREFIX"]))
    greenroom.set_broker(broker)


    @greenroom.actor(max_retries=1, min_backoff=200, max_backoff=200)
    def flaky(marker):
        # Fails on its first attempt (an error and a retry), then succeeds.
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise ValueError("first attempt")


    @greenroom.actor(max_retries=0)
    def doomed():
        raise ValueError("dead-lettered at once")


    @greenroom.actor
    def fine():
        pass
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scraped_names(port: int) -> set[str]:
    """The sample names the run serves now (empty while the server is not up yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return set()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.mark.slow
@pytest.mark.parametrize("prefix", ["greenroom", "dramatiq"])
def test_every_metric_the_dashboard_queries_is_exported(tmp_path: Path, trees: list[Tree], prefix: str) -> None:
    pytest.importorskip("prometheus_client")
    wanted = metric_names(load_dashboard(), prefix)
    (tmp_path / "app.py").write_text(APP)
    port = free_port()
    env = {
        "GR_TEST_PREFIX": prefix,
        "greenroom_prom_enabled": "1",
        "greenroom_prom_host": "127.0.0.1",
        "greenroom_prom_port": str(port),
        "greenroom_prom_db": str(tmp_path / "prom"),
    }
    marker = tmp_path / "flaky-failed-once"
    producer = (
        f"import app\napp.flaky.send({str(marker)!r})\napp.doomed.send()\n"
        "app.fine.send()\napp.fine.send_with_options(delay=1500)\n"
    )
    subprocess.run(
        [sys.executable, "-c", producer], cwd=tmp_path, env={**app_env(tmp_path), **env}, check=True, timeout=60
    )
    tree = Tree(tmp_path, ["-p", "1", "-t", "2"], env=env)
    trees.append(tree)  # stopped and reaped by the fixture
    try:
        wait_for(lambda: wanted <= scraped_names(port), timeout_s=90, interval_s=0.2)
    except TimeoutError:
        missing = sorted(wanted - scraped_names(port))
        raise AssertionError(f"not exported by a {prefix} run: {missing}\n{tree.output()}") from None
