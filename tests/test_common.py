"""Helpers of greenroom.common that the brokers share."""

from __future__ import annotations

from greenroom.common import dead_letter_reason


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("repr of a detached row")


def test_dead_letter_reason_is_the_repr_capped_or_the_class_name_when_repr_fails() -> None:
    assert dead_letter_reason(ValueError("disk full")) == "ValueError('disk full')"
    long = dead_letter_reason(ValueError("x" * 10000), limit=100)
    assert len(long) == 100
    assert long.startswith("ValueError('xxx")
    assert long.endswith("...")
    assert dead_letter_reason(KeyError(Unprintable())) == "KeyError (its repr() failed)"
