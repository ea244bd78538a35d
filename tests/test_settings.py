"""Settings come from greenroom._settings, read when needed; the defaults the layers build are registered from above."""

from __future__ import annotations

import pytest

import greenroom
from greenroom import Worker, _globals, _settings
from greenroom.brokers.stub import StubBroker
from greenroom.composition import pipeline


def test_integer_settings_fall_back_to_the_dramatiq_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("greenroom_worker_timeout", raising=False)
    monkeypatch.delenv("dramatiq_worker_timeout", raising=False)
    assert _settings.worker_timeout_ms() is None
    monkeypatch.setenv("dramatiq_worker_timeout", "250")
    assert _settings.worker_timeout_ms() == 250
    monkeypatch.setenv("greenroom_worker_timeout", "")
    assert _settings.worker_timeout_ms() is None  # set, even empty, hides the Dramatiq spelling
    monkeypatch.setenv("greenroom_worker_timeout", "300")
    assert _settings.worker_timeout_ms() == 300


def test_a_malformed_integer_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("greenroom_queue_prefetch", "many")
    with pytest.raises(ValueError, match="greenroom_queue_prefetch"):
        _settings.queue_prefetch()


def test_an_empty_broker_url_falls_back_to_the_dramatiq_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("greenroom_broker_url", "")
    monkeypatch.setenv("dramatiq_broker_url", "memory://")
    assert _settings.broker_url() == "memory://"
    monkeypatch.delenv("dramatiq_broker_url")
    assert _settings.broker_url() is None


def test_the_worker_reads_the_environment_only_for_values_it_was_not_given(
    stub_broker: StubBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("greenroom_worker_timeout", "150")
    monkeypatch.setenv("greenroom_queue_prefetch", "7")
    monkeypatch.setenv("greenroom_restart_delay", "20")
    worker = Worker(stub_broker, queue_prefetch=3)
    assert (worker.worker_timeout, worker.queue_prefetch, worker.restart_delay_ms) == (150, 3, 20)


def test_the_public_broker_accessors_share_the_global_slot(stub_broker: StubBroker) -> None:
    assert greenroom.get_broker() is stub_broker
    assert greenroom.broker.get_broker() is stub_broker
    other = StubBroker(middleware=[])
    greenroom.broker.set_broker(other)
    try:
        assert greenroom.get_broker() is other
    finally:
        greenroom.set_broker(stub_broker)


def test_the_package_registers_the_defaults_the_lower_layers_build(stub_broker: StubBroker) -> None:
    default_classes = greenroom.middleware.default_middleware
    assert [type(m) for m in _globals.build_default_middleware()] == default_classes
    assert [type(m) for m in StubBroker().middleware] == default_classes

    @greenroom.actor
    def step(x: int) -> int:
        return x

    piped = step.message(1) | step.message(2)
    assert isinstance(piped, pipeline)
    assert len(piped) == 2


def test_a_missing_registration_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_globals, "_broker", None)
    monkeypatch.setattr(_globals, "_default_broker_factory", None)
    with pytest.raises(RuntimeError, match="no default broker is registered"):
        greenroom.get_broker()
