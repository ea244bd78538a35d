"""Metrics scraped over HTTP from a real ``greenroom`` run with two worker processes (issue: Prometheus)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenroom.testing import wait_for
from tests.cli._trees import Tree, app_env

parser = pytest.importorskip("prometheus_client.parser")

pytestmark = pytest.mark.slow

APP = textwrap.dedent(
    """
    import os
    import time

    import greenroom
    from greenroom.brokers.sqlite import SQLiteBroker, SQLiteSettings

    broker = SQLiteBroker(path=os.environ["GR_TEST_DB"], settings=SQLiteSettings(synchronous="NORMAL"))
    greenroom.set_broker(broker)
    MARKERS = os.environ["GR_TEST_MARKERS"]


    @greenroom.actor(max_retries=1, min_backoff=50, max_backoff=100)
    def job(n):
        # 0-4 fail every time; 5-14 fail once, then succeed; the rest succeed at once.
        if n < 5:
            raise ValueError(f"job {n} always fails")
        marker = os.path.join(MARKERS, str(n))
        if n < 15 and not os.path.exists(marker):
            open(marker, "w").close()
            raise ValueError(f"job {n} fails once")


    @greenroom.actor(queue_name="slow", max_retries=0)
    def hold(n):
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(MARKERS, "release")) and time.monotonic() < deadline:
            time.sleep(0.02)
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Run:
    """A ``greenroom`` run of two worker processes whose metrics are served on a free port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.markers = workdir / "markers"
        self.markers.mkdir()
        self.env = {
            "GR_TEST_MARKERS": str(self.markers),
            "greenroom_prom_enabled": "1",
            "greenroom_prom_host": "127.0.0.1",
            "greenroom_prom_port": str(self.port),
            "greenroom_prom_db": str(workdir / "prom"),
        }
        self.tree: Tree | None = None

    def enqueue(self, code: str) -> None:
        command = [sys.executable, "-c", f"import app\n{code}"]
        env = {**app_env(self.workdir), **self.env}
        subprocess.run(command, cwd=self.workdir, env=env, check=True, timeout=60)

    def start(self) -> None:
        self.tree = Tree(self.workdir, ["-p", "2", "-t", "8"], env=self.env)

    def scrape(self) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            content_type = response.headers["Content-Type"]
            text = response.read().decode()
        samples = {}
        for family in parser.text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
        return content_type, samples

    def value(self, name: str, actor: str, queue: str) -> float:
        try:
            _, samples = self.scrape()
        except OSError:
            return -1.0
        return samples.get((name, (("actor_name", actor), ("queue_name", queue))), 0.0)

    def stop(self) -> None:
        if self.tree is not None:
            self.tree.cleanup()


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    (tmp_path / "app.py").write_text(APP)
    current = Run(tmp_path)
    yield current
    current.stop()


def test_scraped_counters_are_exact(run: Run) -> None:
    run.enqueue("for n in range(100): app.job.send(n)")
    run.start()
    # 85 succeed at once, 10 fail once then succeed (20 attempts), 5 fail twice (10 attempts).
    wait_for(lambda: run.value("greenroom_message_rejects_total", "job", "default") == 5, timeout_s=90)
    wait_for(lambda: run.value("greenroom_messages_total", "job", "default") == 115, timeout_s=30)

    content_type, samples = run.scrape()
    assert content_type.startswith("text/plain; version=0.0.4")
    labels = (("actor_name", "job"), ("queue_name", "default"))
    assert samples["greenroom_messages_total", labels] == 115
    assert samples["greenroom_message_errors_total", labels] == 20
    assert samples["greenroom_message_retries_total", labels] == 15
    assert samples["greenroom_message_rejects_total", labels] == 5
    assert samples["greenroom_messages_inprogress", labels] == 0
    assert samples.get(("greenroom_delayed_messages_inprogress", labels), 0) == 0
    assert samples["greenroom_message_duration_milliseconds_count", labels] == 115
    assert all(not name.startswith("dramatiq_") for name, _ in samples)
    for (name, sample_labels), _ in samples.items():
        if name.startswith("greenroom_"):
            assert {key for key, _ in sample_labels} - {"le"} == {"actor_name", "queue_name"}, name


def test_inprogress_gauge_reads_eight_while_eight_run(run: Run) -> None:
    run.enqueue("for n in range(8): app.hold.send(n)")
    run.start()
    wait_for(lambda: run.value("greenroom_messages_inprogress", "hold", "slow") == 8, timeout_s=90)
    (run.markers / "release").touch()
    wait_for(lambda: run.value("greenroom_messages_total", "hold", "slow") == 8, timeout_s=30)
    assert run.value("greenroom_messages_inprogress", "hold", "slow") == 0


def test_a_configured_metrics_directory_is_never_emptied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from greenroom.cli._metrics import prepare_metrics_directory

    (tmp_path / "precious.txt").write_text("keep me")
    stale = tmp_path / "greenroom-prometheus-999999999"  # a run whose main process is gone
    stale.mkdir()
    monkeypatch.setenv("greenroom_prom_db", str(tmp_path))
    for name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
        monkeypatch.setenv(name, "")
    directory = prepare_metrics_directory()
    assert directory == str(tmp_path / f"greenroom-prometheus-{os.getpid()}")
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == directory
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert not stale.exists()
