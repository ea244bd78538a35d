from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import greenroom

EXPECTED = {
    "Actor",
    "ActorNotFound",
    "Broker",
    "BrokerConnectionError",
    "BrokerError",
    "ConnectionClosed",
    "ConnectionFailed",
    "Consumer",
    "ConsumerThread",
    "DecodeError",
    "DramatiqError",
    "Encoder",
    "GenericActor",
    "GreenroomError",
    "JSONEncoder",
    "Message",
    "MessageProxy",
    "Middleware",
    "PickleEncoder",
    "QueueJoinTimeout",
    "QueueNotFound",
    "RateLimitExceeded",
    "Retry",
    "Worker",
    "WorkerThread",
    "actor",
    "get_broker",
    "get_encoder",
    "get_logger",
    "group",
    "pipeline",
    "schedule",  # greenroom's own: periodic jobs (Dramatiq has none)
    # greenroom's own: job control (greenroom.jobs)
    "CancelResult",
    "JobStatus",
    "JobTracking",
    "cancel",
    "get_status",
    "set_progress",
    "set_broker",
    "set_encoder",
}


def test_root_exports_the_dramatiq_compatible_names() -> None:
    assert set(greenroom.__all__) == EXPECTED
    for name in EXPECTED:
        assert hasattr(greenroom, name)
    assert greenroom.DramatiqError is greenroom.GreenroomError


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("greenroom.brokers.stub", ["StubBroker"]),
        ("greenroom.middleware", ["AgeLimit", "TimeLimit", "ShutdownNotifications", "Callbacks", "Pipelines"]),
        ("greenroom.middleware", ["Retries", "CurrentMessage", "SkipMessage", "MiddlewareError", "Interrupt"]),
        ("greenroom.middleware", ["TimeLimitExceeded", "Shutdown", "default_middleware", "raise_thread_exception"]),
        ("greenroom.middleware.threading", ["Interrupt", "is_gevent_active", "current_platform"]),
        ("greenroom.common", ["compute_backoff", "current_millis", "q_name", "dq_name", "xq_name", "join_all"]),
        ("greenroom.logging", ["get_logger"]),
        ("greenroom.encoder", ["Encoder", "JSONEncoder", "PickleEncoder"]),
        ("greenroom.errors", ["GreenroomError", "DecodeError", "ConnectionClosed"]),
        ("greenroom.worker", ["Worker", "ConsumerThread", "WorkerThread"]),
        ("greenroom.message", ["Message"]),
        ("greenroom.testing", ["wait_for"]),
    ],
)
def test_module_paths(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    for name in names:
        assert hasattr(imported, name), f"{module}.{name}"


def test_deprecated_connection_error_alias() -> None:
    with pytest.deprecated_call():
        assert greenroom.ConnectionError is greenroom.BrokerConnectionError  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        _ = greenroom.no_such_name  # type: ignore[attr-defined]


def test_import_and_declaration_open_no_file_thread_or_gevent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys, threading
        import greenroom
        assert threading.active_count() == 1, threading.enumerate()

        @greenroom.actor
        def task():
            pass

        assert threading.active_count() == 1, threading.enumerate()
        assert os.listdir(".") == [], os.listdir(".")
        greenroom.Worker(greenroom.get_broker())  # builds the default middleware
        assert "gevent" not in sys.modules  # asking whether gevent patched must not import it
        print("ok", type(greenroom.get_broker()).__name__)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("greenroom_", "dramatiq_"))}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok SQLiteBroker"
