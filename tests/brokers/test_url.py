from __future__ import annotations

import sys

import pytest

from greenroom.brokers._url import DEFAULT_SQLITE_PATH, broker_from_url
from greenroom.brokers.sqlite import SQLiteBroker
from greenroom.brokers.stub import StubBroker


def test_no_url_is_the_default_sqlite_broker() -> None:
    broker = broker_from_url("")
    assert isinstance(broker, SQLiteBroker)
    assert str(broker.path).endswith(DEFAULT_SQLITE_PATH)


@pytest.mark.parametrize(
    ("url", "path"),
    [("sqlite:///jobs.db", "jobs.db"), ("sqlite:////var/lib/app/jobs.db", "/var/lib/app/jobs.db")],
)
def test_sqlite_urls(url: str, path: str) -> None:
    broker = broker_from_url(url)
    assert isinstance(broker, SQLiteBroker)
    assert str(broker.path) == path


def test_memory_url() -> None:
    assert isinstance(broker_from_url("memory://"), StubBroker)


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown broker URL scheme 'kafka'"):
        broker_from_url("kafka://localhost")


def test_missing_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "greenroom.brokers.redis", raising=False)
    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis-py were not installed
    with pytest.raises(ImportError, match=r"pip install 'greenroom\[redis\]'"):
        broker_from_url("redis://127.0.0.1:6379/0")
