"""Fixtures shared by the CLI tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cli._trees import Tree


@pytest.fixture
def trees() -> Iterator[list[Tree]]:
    """Process trees a test started: each is stopped and reaped afterwards."""
    started: list[Tree] = []
    yield started
    for tree in started:
        tree.cleanup()
