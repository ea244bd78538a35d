"""The health records of worker processes and the ``/healthz`` decision (greenroom._health), without a tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenroom._health import ProcessRecord, assess, read_records, remove_record, write_record

NOW_S = 1_700_000_000.0
TIMEOUT_S = 30.0


def record(
    *,
    pid: int = 1,
    index: int = 0,
    written_ago_s: float = 0.5,
    consumers: int = 2,
    connected: int = 2,
    contact_age_s: float | None = 0.1,
) -> ProcessRecord:
    return ProcessRecord(
        pid=pid,
        index=index,
        written_s=NOW_S - written_ago_s,
        consumers=consumers,
        connected=connected,
        contact_age_s=contact_age_s,
    )


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    return proc.pid


def test_a_tree_whose_processes_all_work_is_ok() -> None:
    health = assess([record(pid=10, index=0), record(pid=11, index=1, contact_age_s=2.0)], NOW_S, TIMEOUT_S)
    assert health.can_work
    assert health.http_status == "200 OK"
    body = health.body
    assert body["status"] == "ok"
    assert body["worker_processes"] == {"alive": 2, "can_work": 2}
    assert body["consumers"] == {"total": 4, "connected": 4}
    # The most recent contact of the tree: 0.5 s since the record plus 0.1 s before it.
    assert body["last_broker_contact_age_s"] == pytest.approx(0.6)
    assert body["last_broker_contact"].startswith("2023-11-14T22:13:19.4")
    assert [p["pid"] for p in body["processes"]] == [10, 11]
    json.dumps(body)  # the body is plain JSON


def test_no_live_worker_process_is_unavailable() -> None:
    health = assess([], NOW_S, TIMEOUT_S)
    assert not health.can_work
    assert health.http_status == "503 Service Unavailable"
    assert health.body["status"] == "unavailable"
    assert health.body["problem"] == "no live worker process"


def test_disconnected_consumers_make_the_tree_unavailable() -> None:
    health = assess([record(connected=0, contact_age_s=4.0)], NOW_S, TIMEOUT_S)
    assert not health.can_work
    assert health.body["processes"][0]["problem"] == "no consumer is connected to the broker"
    booting = assess([record(connected=0, contact_age_s=None)], NOW_S, TIMEOUT_S)
    assert not booting.can_work
    assert booting.body["processes"][0]["problem"] == "no consumer has reached the broker yet"


def test_a_broker_silent_for_longer_than_the_timeout_makes_the_tree_unavailable() -> None:
    # Consumers still say "connected" (a call that hangs), but no round trip went through for 30.5 s.
    health = assess([record(written_ago_s=0.5, contact_age_s=30.0)], NOW_S, TIMEOUT_S)
    assert not health.can_work
    assert "no successful broker round trip" in health.body["processes"][0]["problem"]
    assert assess([record(written_ago_s=0.5, contact_age_s=29.0)], NOW_S, TIMEOUT_S).can_work


def test_a_process_that_stopped_renewing_its_record_cannot_work() -> None:
    health = assess([record(written_ago_s=31.0, contact_age_s=0.0)], NOW_S, TIMEOUT_S)
    assert not health.can_work
    assert health.body["processes"][0]["problem"] == "no health record for 31 s"


def test_one_process_that_can_work_keeps_the_tree_up_but_degraded() -> None:
    health = assess([record(pid=10, index=0), record(pid=11, index=1, connected=0)], NOW_S, TIMEOUT_S)
    assert health.can_work
    assert health.body["status"] == "degraded"
    assert health.body["worker_processes"] == {"alive": 2, "can_work": 1}
    partly = assess([record(consumers=3, connected=2)], NOW_S, TIMEOUT_S)
    assert partly.can_work
    assert partly.body["status"] == "degraded"


def test_a_process_that_consumes_nothing_works_while_it_reports() -> None:
    # A --scheduler-only process has no consumers: being alive is all it can show.
    health = assess([record(consumers=0, connected=0, contact_age_s=None)], NOW_S, TIMEOUT_S)
    assert health.can_work
    assert health.body["status"] == "ok"
    assert health.body["last_broker_contact"] is None


def test_records_round_trip_and_those_of_dead_processes_are_removed(tmp_path: Path) -> None:
    mine = record(pid=os.getpid(), index=1)
    write_record(str(tmp_path), mine)
    gone = dead_pid()
    write_record(str(tmp_path), record(pid=gone, index=0))
    (tmp_path / f"{gone}.json.tmp").write_text("{")  # a write cut short by a kill
    (tmp_path / "unrelated.txt").write_text("not a record")
    assert read_records(str(tmp_path)) == [mine]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{os.getpid()}.json", "unrelated.txt"])
    remove_record(str(tmp_path), os.getpid())
    assert read_records(str(tmp_path)) == []


def test_a_record_that_cannot_be_read_is_skipped(tmp_path: Path) -> None:
    (tmp_path / f"{os.getpid()}.json").write_text('{"pid": "not all there"')
    assert read_records(str(tmp_path)) == []
    assert read_records(str(tmp_path / "missing")) == []
