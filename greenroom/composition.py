"""Composing messages: pipelines run one after another, groups run side by side."""

from __future__ import annotations

import abc
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Union

from .broker import Broker, get_broker
from .errors import ResultMissing
from .message import Message

__all__ = ["GroupBarriers", "group", "pipeline"]

_Child = Union[Message[Any], "pipeline", "group"]


def _remaining_ms(deadline_s: float | None) -> int | None:
    if deadline_s is None:
        return None
    return max(0, int((deadline_s - time.monotonic()) * 1000))


def _deadline(timeout_ms: int | None) -> float | None:
    return None if timeout_ms is None else time.monotonic() + timeout_ms / 1000


class GroupBarriers(abc.ABC):
    """What ``group.run`` needs to give a group completion callbacks: a barrier the members arrive at.

    The :class:`~greenroom.middleware.group_callbacks.GroupCallbacks` middleware implements it (the
    middleware package sits above this module); a group finds it among its broker's middleware.
    """

    @abc.abstractmethod
    def create_barrier(self, key: str, parties: int) -> None:
        """Create the barrier ``key`` for ``parties`` members, where producers and workers both see it."""


class pipeline:
    """Messages that run one after another, each receiving the previous result as its last argument.

    Parameters:
      children: Messages or pipelines (which are flattened).
      broker: The broker to enqueue on; the global broker by default.
    """

    def __init__(self, children: Iterable[Message[Any] | pipeline], *, broker: Broker | None = None) -> None:
        self.broker = broker or get_broker()
        self.messages: list[Message[Any]] = []
        for child in children:
            if isinstance(child, pipeline):
                self.messages.extend(message.copy() for message in child.messages)
            else:
                self.messages.append(child.copy())
        for previous, following in zip(self.messages, self.messages[1:], strict=False):
            previous.options["pipe_target"] = following.asdict()

    def __len__(self) -> int:
        return len(self.messages)

    def __or__(self, other: Message[Any] | pipeline) -> pipeline:
        return pipeline([self, other])

    def __str__(self) -> str:
        return f"pipeline([{', '.join(str(m) for m in self.messages)}])"

    def run(self, *, delay: int | None = None) -> pipeline:
        """Enqueue the first message; the others follow as each one succeeds."""
        first = self.messages[0]
        self.broker.enqueue(first, delay=max(delay or 0, first.options.get("delay") or 0) or None)
        return self

    def get_result(self, *, block: bool = False, timeout: int | None = None) -> Any:
        """The result of the last message."""
        return self.messages[-1].get_result(backend=self.broker.get_results_backend(), block=block, timeout=timeout)

    def get_results(self, *, block: bool = False, timeout: int | None = None) -> Iterator[Any]:
        """The result of every message, in order, sharing one ``timeout`` (ms)."""
        deadline_s = _deadline(timeout)
        backend = self.broker.get_results_backend()
        for message in self.messages:
            yield message.get_result(backend=backend, block=block, timeout=_remaining_ms(deadline_s))

    @property
    def completed_count(self) -> int:
        """How many leading messages have a result."""
        count = 0
        backend = self.broker.get_results_backend()
        for message in self.messages:
            try:
                message.get_result(backend=backend)
            except ResultMissing:
                break
            count += 1
        return count

    @property
    def completed(self) -> bool:
        """Whether the last message has a result."""
        return self.completed_count == len(self.messages)


class group:
    """Messages, pipelines or groups that run in parallel.

    Parameters:
      children: The members of the group.
      broker: The broker to enqueue on; the global broker by default.
    """

    def __init__(self, children: Iterable[_Child], *, broker: Broker | None = None) -> None:
        self.children: list[_Child] = list(children)
        self.broker = broker or get_broker()
        self.completion_callbacks: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.children)

    def __str__(self) -> str:
        return f"group([{', '.join(str(c) for c in self.children)}])"

    def add_completion_callback(self, message: Message[Any]) -> None:
        """Enqueue ``message`` once every member of the group has succeeded (needs GroupCallbacks)."""
        self.completion_callbacks.append(message.asdict())

    def run(self, *, delay: int | None = None) -> group:
        """Enqueue every member."""
        if self.completion_callbacks:
            self._run_with_callbacks(delay)
            return self
        # Plain messages go in one batch (a few round trips on brokers that pipeline them).
        self.broker.enqueue_many([child for child in self.children if isinstance(child, Message)], delay=delay)
        for child in self.children:
            if not isinstance(child, Message):
                child.run(delay=delay)
        return self

    def _run_with_callbacks(self, delay: int | None) -> None:
        barriers = next((m for m in self.broker.middleware if isinstance(m, GroupBarriers)), None)
        if barriers is None:
            raise RuntimeError("group callbacks require the GroupCallbacks middleware")
        if any(isinstance(child, group) for child in self.children):
            raise NotImplementedError("groups of groups cannot have completion callbacks")
        completion_uuid = str(uuid.uuid4())
        barriers.create_barrier(completion_uuid, len(self.children))
        options = {"group_completion_uuid": completion_uuid, "group_completion_callbacks": self.completion_callbacks}
        for child in self.children:
            if isinstance(child, Message):
                self.broker.enqueue(child.copy(options=options), delay=delay)
            elif isinstance(child, pipeline):
                # A new pipeline whose last step carries the group options; the child stays as it was.
                last = child.messages[-1].copy(options=options)
                pipeline([*child.messages[:-1], last], broker=child.broker).run(delay=delay)

    def get_results(self, *, block: bool = False, timeout: int | None = None) -> Iterator[Any]:
        """Each member's result in order (a list for a nested group), sharing one ``timeout`` (ms)."""
        deadline_s = _deadline(timeout)
        backend = self.broker.get_results_backend()
        for child in self.children:
            remaining = _remaining_ms(deadline_s)
            if isinstance(child, group):
                yield list(child.get_results(block=block, timeout=remaining))
            elif isinstance(child, pipeline):
                yield child.get_result(block=block, timeout=remaining)
            else:
                yield child.get_result(backend=backend, block=block, timeout=remaining)

    def wait(self, *, timeout: int | None = None) -> None:
        """Block until every member has a result."""
        for _ in self.get_results(block=True, timeout=timeout):
            pass

    @property
    def completed_count(self) -> int:
        """How many members have a result."""
        count = 0
        for child in self.children:
            try:
                if isinstance(child, (group, pipeline)):
                    if not child.completed:
                        continue
                else:
                    child.get_result(backend=self.broker.get_results_backend())
            except ResultMissing:
                continue
            count += 1
        return count

    @property
    def completed(self) -> bool:
        """Whether every member has a result."""
        return self.completed_count == len(self.children)
